use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn err(file: Option<&str>, pairs: &[(&str, &str)]) -> ConfigError {
    match load(file, &env(pairs)) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn defaults_with_no_file_and_no_env() {
    let s = load(None, &[]).unwrap();
    assert_eq!(s, Settings::default());
    assert_eq!(s.http.addr, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        s.storage.url.expose(),
        "sqlite://readstate-data/readstate.db"
    );
    assert_eq!(s.storage.durability, Durability::Sync);
    assert_eq!(s.cache.max_bytes.get(), 512 * 1024 * 1024);
    assert_eq!(s.http.max_body_bytes.get(), 1024 * 1024);
    assert_eq!(s.http.request_timeout(), Duration::from_secs(10));
    assert_eq!(s.http.body_read_timeout(), Duration::from_secs(5));
    assert_eq!(s.shutdown.grace_period(), Duration::from_secs(30));
    assert_eq!(s.grpc.addr, None);
    assert_eq!(s.nats.url, None);
}

#[test]
fn unrelated_env_is_ignored() {
    let s = load(
        None,
        &env(&[("PATH", "/bin"), ("READSTATE_CONFIG", "x.toml")]),
    )
    .unwrap();
    assert_eq!(s, Settings::default());
}

#[test]
fn file_overrides_default() {
    let file = "[http]\naddr = \"0.0.0.0:9000\"\n[storage]\ndurability = \"async\"\n[auth]\nallow_unauthenticated = true\n";
    let s = load(Some(file), &[]).unwrap();
    assert_eq!(s.http.addr, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(s.storage.durability, Durability::Async);
    assert_eq!(s.http.request_timeout_ms, 10_000);
}

#[test]
fn env_overrides_file() {
    let file = "[http]\naddr = \"0.0.0.0:9000\"\n[limits]\nhard_in_flight = 2000\n";
    let s = load(
        Some(file),
        &env(&[
            ("READSTATE_HTTP__ADDR", "127.0.0.1:0"),
            ("READSTATE_LIMITS__HARD_IN_FLIGHT", "64"),
            ("READSTATE_LIMITS__SOFT_IN_FLIGHT", "32"),
            ("READSTATE_STORAGE__DURABILITY", "async"),
            ("READSTATE_GRPC__ADDR", "127.0.0.1:50051"),
            ("READSTATE_NATS__URL", "nats://localhost:4222"),
            ("READSTATE_LOG__FILTER", "info,readstate=debug"),
        ]),
    )
    .unwrap();
    assert_eq!(s.http.addr, "127.0.0.1:0".parse().unwrap());
    assert_eq!(s.limits.hard_in_flight, 64);
    assert_eq!(s.limits.soft_in_flight, 32);
    assert_eq!(s.storage.durability, Durability::Async);
    assert_eq!(s.grpc.addr, Some("127.0.0.1:50051".parse().unwrap()));
    assert_eq!(
        s.nats.url.as_ref().map(Secret::expose),
        Some("nats://localhost:4222")
    );
    assert_eq!(s.log.filter, "info,readstate=debug");
}

#[test]
fn env_byte_size_with_unit() {
    let s = load(None, &env(&[("READSTATE_CACHE__MAX_BYTES", "64MiB")])).unwrap();
    assert_eq!(s.cache.max_bytes.get(), 67_108_864);
    let s = load(None, &env(&[("READSTATE_CACHE__MAX_BYTES", "1048576")])).unwrap();
    assert_eq!(s.cache.max_bytes.get(), 1_048_576);
}

#[test]
fn byte_size_parsing() {
    assert_eq!(ByteSize::parse("512MiB").unwrap().get(), 512 << 20);
    assert_eq!(ByteSize::parse("512 mib").unwrap().get(), 512 << 20);
    assert_eq!(ByteSize::parse("1GB").unwrap().get(), 1_000_000_000);
    assert_eq!(ByteSize::parse("2kb").unwrap().get(), 2000);
    assert_eq!(ByteSize::parse("3KiB").unwrap().get(), 3072);
    assert_eq!(ByteSize::parse("7B").unwrap().get(), 7);
    assert_eq!(ByteSize::parse("1048576").unwrap().get(), 1_048_576);
    assert!(ByteSize::parse("").is_err());
    assert!(ByteSize::parse("MiB").is_err());
    assert!(ByteSize::parse("1.5GiB").is_err());
    assert!(ByteSize::parse("12 parsecs").is_err());
    assert!(ByteSize::parse("99999999999TiB").is_err());
    assert_eq!(ByteSize::mib(512).to_string(), "512MiB");
    assert_eq!(ByteSize(1000).to_string(), "1000");

    let s = load(
        Some("[cache]\nmax_bytes = 4096\n[http]\nmax_body_bytes = \"2 MB\"\n"),
        &[],
    )
    .unwrap();
    assert_eq!(s.cache.max_bytes.get(), 4096);
    assert_eq!(s.http.max_body_bytes.get(), 2_000_000);
}

#[test]
fn bad_byte_size_names_key() {
    let e = err(None, &[("READSTATE_CACHE__MAX_BYTES", "lots")]);
    assert_eq!(e.key(), Some("cache.max_bytes"), "{e}");
    assert!(e.to_string().contains("READSTATE_CACHE__MAX_BYTES"), "{e}");
}

#[test]
fn unknown_key_rejected_naming_it() {
    let e = err(Some("[http]\nport = 8080\n"), &[]);
    assert_eq!(e.key(), Some("http.port"), "{e}");
    assert!(e.to_string().starts_with("http.port: unknown key"), "{e}");

    let e = err(Some("[telemetry]\nx = 1\n"), &[]);
    assert_eq!(e.key(), Some("telemetry"), "{e}");

    let e = err(None, &[("READSTATE_HTTP_ADDR", "127.0.0.1:1")]);
    assert_eq!(e.key(), Some("http_addr"), "{e}");
    assert!(e.to_string().contains("READSTATE_HTTP_ADDR"), "{e}");
}

#[test]
fn bad_durability_rejected_naming_key() {
    let e = err(Some("[storage]\ndurability = \"fast\"\n"), &[]);
    assert_eq!(e.key(), Some("storage.durability"), "{e}");
    assert!(e.to_string().starts_with("storage.durability: "), "{e}");

    let e = err(None, &[("READSTATE_STORAGE__DURABILITY", "fast")]);
    assert_eq!(e.key(), Some("storage.durability"), "{e}");
    assert!(
        e.to_string().contains("READSTATE_STORAGE__DURABILITY"),
        "{e}"
    );
}

#[test]
fn wrong_type_names_key() {
    let e = err(None, &[("READSTATE_LIMITS__HARD_IN_FLIGHT", "many")]);
    assert_eq!(e.key(), Some("limits.hard_in_flight"), "{e}");
    let e = err(Some("[http]\naddr = \"nowhere\"\n"), &[]);
    assert_eq!(e.key(), Some("http.addr"), "{e}");
}

#[test]
fn malformed_toml_rejected() {
    let e = err(Some("[http\naddr = 1"), &[]);
    assert!(e.to_string().contains("config file"), "{e}");
}

#[test]
fn soft_above_hard_rejected() {
    let e = err(
        None,
        &[
            ("READSTATE_LIMITS__SOFT_IN_FLIGHT", "2000"),
            ("READSTATE_LIMITS__HARD_IN_FLIGHT", "1000"),
        ],
    );
    assert_eq!(e.key(), Some("limits.soft_in_flight"), "{e}");
    assert!(
        e.to_string()
            .starts_with("limits.soft_in_flight: must be <= limits.hard_in_flight"),
        "{e}"
    );
}

#[test]
fn body_read_timeout_is_positive_and_within_the_request_timeout() {
    let e = err(None, &[("READSTATE_HTTP__BODY_READ_TIMEOUT_MS", "0")]);
    assert!(
        e.to_string()
            .starts_with("http.body_read_timeout_ms: must be > 0"),
        "{e}"
    );
    let e = err(
        Some("[http]\nrequest_timeout_ms = 1000\nbody_read_timeout_ms = 1001\n"),
        &[],
    );
    assert_eq!(e.key(), Some("http.body_read_timeout_ms"), "{e}");
    assert!(
        e.to_string().starts_with(
            "http.body_read_timeout_ms: must be <= http.request_timeout_ms (1001 > 1000)"
        ),
        "{e}"
    );
    let s = load(
        None,
        &env(&[
            ("READSTATE_HTTP__REQUEST_TIMEOUT_MS", "1000"),
            ("READSTATE_HTTP__BODY_READ_TIMEOUT_MS", "1000"),
        ]),
    )
    .unwrap();
    assert_eq!(s.http.body_read_timeout_ms, 1000);
}

#[test]
fn validation_errors_name_keys() {
    let e = err(Some("[cache]\nmax_bytes = 0\n"), &[]);
    assert!(
        e.to_string().starts_with("cache.max_bytes: must be > 0"),
        "{e}"
    );
    let e = err(None, &[("READSTATE_LIMITS__HARD_IN_FLIGHT", "0")]);
    assert_eq!(e.key(), Some("limits.hard_in_flight"), "{e}");
    let e = err(None, &[("READSTATE_STATE__UNREAD_CAP", "10001")]);
    assert_eq!(e.key(), Some("state.unread_cap"), "{e}");
    let e = err(None, &[("READSTATE_STATE__MENTION_CAP", "0")]);
    assert_eq!(e.key(), Some("state.mention_cap"), "{e}");
    let e = err(None, &[("READSTATE_STORAGE__MAX_BATCH", "0")]);
    assert_eq!(e.key(), Some("storage.max_batch"), "{e}");
    let e = err(None, &[("READSTATE_STORAGE__URL", "mysql://db/readstate")]);
    assert_eq!(e.key(), Some("storage.url"), "{e}");
    assert!(
        e.to_string()
            .starts_with("storage.url: unsupported database URL"),
        "{e}"
    );
    let e = err(None, &[("READSTATE_STORAGE__POOL_SIZE", "0")]);
    assert_eq!(e.key(), Some("storage.pool_size"), "{e}");
    let e = err(None, &[("READSTATE_STORAGE__STATEMENT_TIMEOUT_MS", "0")]);
    assert_eq!(e.key(), Some("storage.statement_timeout_ms"), "{e}");
    let e = err(None, &[("READSTATE_LOG__FILTER", "readstate=loud")]);
    assert_eq!(e.key(), Some("log.filter"), "{e}");
    let e = err(None, &[("READSTATE_NATS__URL", "http://x")]);
    assert_eq!(e.key(), Some("nats.url"), "{e}");
    let e = err(None, &[("READSTATE_GRPC__ADDR", "not-an-addr")]);
    assert_eq!(e.key(), Some("grpc.addr"), "{e}");
}

#[test]
fn postgres_urls_and_pool_settings_are_accepted() {
    for url in [
        "postgres://db/readstate",
        "postgresql://u:p@db:5433/readstate",
    ] {
        let s = load(None, &env(&[("READSTATE_STORAGE__URL", url)])).unwrap();
        assert_eq!(s.storage.url.expose(), url);
        assert!(s.storage.is_postgres());
    }
    assert!(!Settings::default().storage.is_postgres());
    assert_eq!(Settings::default().storage.pool_size, 16);
    assert_eq!(
        Settings::default().storage.statement_timeout(),
        Duration::from_secs(5)
    );
    let s = load(
        Some("[storage]\npool_size = 4\n"),
        &env(&[("READSTATE_STORAGE__STATEMENT_TIMEOUT_MS", "250")]),
    )
    .unwrap();
    assert_eq!(s.storage.pool_size, 4);
    assert_eq!(s.storage.statement_timeout_ms, 250);
}

#[test]
fn database_url_is_used_only_when_nothing_else_sets_the_url() {
    let pg = "postgres://postgres@127.0.0.1:5432/readstate";
    let s = load(None, &env(&[("DATABASE_URL", pg)])).unwrap();
    assert_eq!(s.storage.url.expose(), pg);

    let s = load(
        None,
        &env(&[
            ("DATABASE_URL", pg),
            ("READSTATE_STORAGE__URL", "sqlite://x.db"),
        ]),
    )
    .unwrap();
    assert_eq!(s.storage.url.expose(), "sqlite://x.db");

    let s = load(
        Some("[storage]\nurl = \"sqlite://file.db\"\n"),
        &env(&[("DATABASE_URL", pg)]),
    )
    .unwrap();
    assert_eq!(s.storage.url.expose(), "sqlite://file.db");

    let s = load(None, &env(&[("DATABASE_URL", "")])).unwrap();
    assert_eq!(s.storage.url, Settings::default().storage.url);

    let e = err(None, &[("DATABASE_URL", "mysql://db")]);
    assert_eq!(e.key(), Some("storage.url"), "{e}");
    assert!(e.to_string().contains("DATABASE_URL"), "{e}");
}

#[test]
fn load_from_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readstate.toml");
    std::fs::write(&path, "[http]\nport = 1\n").unwrap();
    let e = load_from(Some(&path)).unwrap_err();
    assert_eq!(e.key(), Some("http.port"), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");

    let missing = dir.path().join("missing.toml");
    let e = load_from(Some(&missing)).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    assert!(e.to_string().starts_with("cannot read config file"), "{e}");
}

#[test]
fn nats_and_events_settings() {
    let s = load(
        Some("[nats]\nurl = \"nats://127.0.0.1:4222\"\nsubjects = [\"chat.events.>\", \"chat.*.acks\"]\n"),
        &env(&[
            ("READSTATE_NATS__BATCH", "64"),
            ("READSTATE_NATS__PUBLISH_CHANGES", "true"),
            ("READSTATE_EVENTS__SUBSCRIBER_BUFFER", "8"),
        ]),
    )
    .unwrap();
    assert_eq!(s.nats.subjects, ["chat.events.>", "chat.*.acks"]);
    assert_eq!(s.nats.batch, 64);
    assert!(s.nats.publish_changes && s.nats.ingest);
    assert_eq!(s.events.subscriber_buffer, 8);
    let s = load(None, &env(&[("READSTATE_NATS__SUBJECTS", "[\"a.b\"]")])).unwrap();
    assert_eq!(s.nats.subjects, ["a.b"]);
    for (key, value, name) in [
        ("READSTATE_NATS__STREAM", "A.B", "nats.stream"),
        ("READSTATE_NATS__SUBJECTS", "[\"a.>.b\"]", "nats.subjects"),
        ("READSTATE_NATS__SUBJECTS", "[]", "nats.subjects"),
        ("READSTATE_NATS__SUBJECTS", "[\"a..b\"]", "nats.subjects"),
        ("READSTATE_NATS__CONSUMER", "a b", "nats.consumer"),
        ("READSTATE_NATS__BATCH", "0", "nats.batch"),
        ("READSTATE_NATS__CONCURRENCY", "0", "nats.concurrency"),
        ("READSTATE_NATS__ACK_WAIT_MS", "0", "nats.ack_wait_ms"),
        (
            "READSTATE_NATS__CHANGES_PREFIX",
            "a.*",
            "nats.changes_prefix",
        ),
        (
            "READSTATE_EVENTS__REPLAY_WINDOW",
            "0",
            "events.replay_window",
        ),
        (
            "READSTATE_EVENTS__SUBSCRIBER_BUFFER",
            "0",
            "events.subscriber_buffer",
        ),
        ("READSTATE_EVENTS__HEARTBEAT_MS", "0", "events.heartbeat_ms"),
        (
            "READSTATE_EVENTS__MAX_SUBSCRIBERS",
            "0",
            "events.max_subscribers",
        ),
    ] {
        let e = err(None, &[(key, value)]);
        assert_eq!(e.key(), Some(name), "{key}={value}: {e}");
    }
}

#[test]
fn example_file_matches_defaults() {
    let example = include_str!("../../../../config/readstate.example.toml");
    assert_eq!(load(Some(example), &[]).unwrap(), Settings::default());
}

#[test]
fn settings_serialize_round_trip() {
    let s = Settings::default();
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["cache"]["max_bytes"], "512MiB");
    assert_eq!(json["storage"]["durability"], "sync");
    let back: Settings = serde_json::from_value(json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn serving_open_beyond_loopback_is_refused_naming_auth() {
    for (name, value) in [
        ("READSTATE_HTTP__ADDR", "0.0.0.0:0"),
        ("READSTATE_HTTP__ADDR", "[::]:0"),
        ("READSTATE_HTTP__ADDR", "192.0.2.1:8080"),
        ("READSTATE_GRPC__ADDR", "0.0.0.0:50051"),
        ("READSTATE_GRPC__ADDR", "[::]:50051"),
    ] {
        let e = err(None, &[(name, value)]);
        assert_eq!(e.key(), Some("auth"), "{name}={value}: {e}");
        assert!(e.to_string().contains("auth.allow_unauthenticated"), "{e}");
    }
    // Loopback stays open, as does any address once the operator says so.
    for addr in ["127.0.0.1:0", "[::1]:0"] {
        assert!(
            !load(None, &env(&[("READSTATE_HTTP__ADDR", addr)]))
                .unwrap()
                .auth
                .is_on()
        );
    }
    let open = load(
        None,
        &env(&[
            ("READSTATE_HTTP__ADDR", "0.0.0.0:0"),
            ("READSTATE_AUTH__ALLOW_UNAUTHENTICATED", "true"),
        ]),
    )
    .unwrap();
    assert!(open.auth.allow_unauthenticated && !open.auth.is_on());
}

#[test]
fn api_keys_come_from_the_file_or_from_json_in_the_environment() {
    let hash = "a".repeat(64);
    let json =
        format!(r#"[{{"name": "chat", "key_sha256": "{hash}", "scopes": ["read", "write"]}}]"#);
    let from_env = load(
        None,
        &env(&[
            ("READSTATE_HTTP__ADDR", "0.0.0.0:0"),
            ("READSTATE_AUTH__API_KEYS", &json),
        ]),
    )
    .unwrap();
    let expected = vec![ApiKeySettings {
        name: "chat".into(),
        key_sha256: hash.clone(),
        scopes: vec!["read".into(), "write".into()],
    }];
    assert_eq!(from_env.auth.api_keys, expected);
    assert!(from_env.auth.is_on());

    let file = format!(
        "[http]\naddr = \"0.0.0.0:0\"\n[[auth.api_keys]]\nname = \"chat\"\nkey_sha256 = \"{hash}\"\nscopes = [\"read\", \"write\"]\n"
    );
    assert_eq!(load(Some(&file), &[]).unwrap().auth.api_keys, expected);

    let bad = format!(r#"[{{"name": "chat", "key_sha256": "{hash}", "scopes": ["root"]}}]"#);
    let e = err(None, &[("READSTATE_AUTH__API_KEYS", &bad)]);
    assert_eq!(e.key(), Some("auth.api_keys[0].scopes"), "{e}");
}

#[test]
fn jwt_settings_are_checked_as_serve_loads_them() {
    let e = err(None, &[("READSTATE_AUTH__JWT__HS256_SECRET", "short")]);
    assert_eq!(e.key(), Some("auth.jwt.hs256_secret"), "{e}");
    assert!(
        !e.to_string().contains("short"),
        "the secret is never shown: {e}"
    );
    let e = err(
        None,
        &[(
            "READSTATE_AUTH__JWT__PUBLIC_KEY_FILES",
            r#"["/nonexistent/key.pem"]"#,
        )],
    );
    assert_eq!(e.key(), Some("auth.jwt.public_key_files[0]"), "{e}");
    let s = load(
        None,
        &env(&[
            ("READSTATE_AUTH__JWT__HS256_SECRET", &"s".repeat(32)),
            ("READSTATE_AUTH__JWT__ISSUER", "https://auth.example"),
            ("READSTATE_AUTH__JWT__LEEWAY_S", "5"),
            ("READSTATE_LIMITS__PER_CALLER_RPS", "50"),
            ("READSTATE_LIMITS__PER_CALLER_BURST", "100"),
        ]),
    )
    .unwrap();
    assert!(s.auth.is_on());
    assert_eq!(s.auth.jwt.leeway_s, 5);
    assert_eq!(s.limits.per_caller_rps, 50);
}

#[test]
fn kubernetes_service_links_are_not_settings_but_typos_still_fail() {
    let s = load(
        None,
        &env(&[
            ("READSTATE_SERVICE_HOST", "10.0.0.1"),
            ("READSTATE_SERVICE_PORT", "8080"),
            ("READSTATE_SERVICE_PORT_HTTP", "8080"),
            ("READSTATE_PORT", "tcp://10.0.0.1:8080"),
            ("READSTATE_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
            ("READSTATE_PORT_8080_TCP_PROTO", "tcp"),
        ]),
    )
    .unwrap();
    assert_eq!(s, Settings::default());
    let e = err(None, &[("READSTATE_HTTP_ADDR", "127.0.0.1:1")]);
    assert_eq!(e.key(), Some("http_addr"), "{e}");
}

#[test]
fn nats_takes_a_server_list_and_stream_replicas() {
    let s = load(
        None,
        &env(&[
            (
                "READSTATE_NATS__URL",
                "nats://127.0.0.1:4222, nats://127.0.0.1:4223",
            ),
            ("READSTATE_NATS__REPLICAS", "3"),
        ]),
    )
    .unwrap();
    assert_eq!(s.nats.replicas, 3);
    for (key, value, field) in [
        (
            "READSTATE_NATS__URL",
            "nats://a:4222,,nats://b:4222",
            "nats.url",
        ),
        (
            "READSTATE_NATS__URL",
            "nats://a:4222,http://b:80",
            "nats.url",
        ),
        ("READSTATE_NATS__REPLICAS", "0", "nats.replicas"),
        ("READSTATE_NATS__REPLICAS", "7", "nats.replicas"),
    ] {
        assert_eq!(
            err(None, &[(key, value)]).key(),
            Some(field),
            "{key}={value}"
        );
    }
}
