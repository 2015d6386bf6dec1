//! Ranges and cross-key rules of [`Settings`].

use std::str::FromStr;

use super::{ConfigError, MAX_CAP, Settings, is_postgres_url};

/// The database URL parses as the store that opens it will parse it, so that
/// `check-config` refuses what `serve` would (exit 64 from both). The error never
/// repeats the URL: it may hold a password.
fn check_storage_url(url: &str) -> Result<(), ConfigError> {
    let parsed = if url.starts_with("sqlite:") {
        sqlx::sqlite::SqliteConnectOptions::from_str(url).map(drop)
    } else if is_postgres_url(url) {
        sqlx::postgres::PgConnectOptions::from_str(url).map(drop)
    } else {
        return Err(ConfigError::invalid(
            "storage.url",
            "unsupported database URL: use sqlite://PATH, postgres://... or postgresql://...",
        ));
    };
    parsed.map_err(|e| {
        let why = match e {
            sqlx::Error::Configuration(cause) => cause.to_string(),
            other => other.to_string(),
        };
        ConfigError::invalid("storage.url", format!("not a valid database URL: {why}"))
    })
}

impl Settings {
    /// Checks ranges and cross-key rules; the error names the offending key path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
            if value == 0 {
                Err(ConfigError::invalid(key, "must be > 0"))
            } else {
                Ok(())
            }
        }
        fn cap(key: &str, value: u32) -> Result<(), ConfigError> {
            if (1..=MAX_CAP).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("must be between 1 and {MAX_CAP}, got {value}"),
                ))
            }
        }
        let count = |n: usize| n as u64;

        let http = &self.http;
        positive("http.request_timeout_ms", http.request_timeout_ms)?;
        positive("http.header_read_timeout_ms", http.header_read_timeout_ms)?;
        positive("http.max_body_bytes", http.max_body_bytes.get())?;
        positive("http.body_read_timeout_ms", http.body_read_timeout_ms)?;
        if http.body_read_timeout_ms > http.request_timeout_ms {
            return Err(ConfigError::invalid(
                "http.body_read_timeout_ms",
                format!(
                    "must be <= http.request_timeout_ms ({} > {})",
                    http.body_read_timeout_ms, http.request_timeout_ms
                ),
            ));
        }
        for (i, origin) in http.cors_origins.iter().enumerate() {
            let authority = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            if !authority.is_some_and(|a| !a.is_empty() && !a.contains(['/', '?', '#', '*'])) {
                return Err(ConfigError::invalid(
                    format!("http.cors_origins[{i}]"),
                    "must be an origin: http(s)://host[:port], no path, no wildcard",
                ));
            }
        }

        let storage = &self.storage;
        check_storage_url(storage.url.expose())?;
        positive("storage.flush_interval_ms", storage.flush_interval_ms)?;
        positive("storage.max_batch", count(storage.max_batch))?;
        positive("storage.max_unflushed", count(storage.max_unflushed))?;
        positive("storage.commit_timeout_ms", storage.commit_timeout_ms)?;
        positive("storage.timeout_ms", storage.timeout_ms)?;
        positive("storage.sqlite_readers", u64::from(storage.sqlite_readers))?;
        positive("storage.pool_size", u64::from(storage.pool_size))?;
        positive("storage.statement_timeout_ms", storage.statement_timeout_ms)?;
        positive(
            "storage.checkpoint_interval_ms",
            storage.checkpoint_interval_ms,
        )?;
        positive(
            "storage.checkpoint_writes",
            count(storage.checkpoint_writes),
        )?;
        positive("storage.log_segment_bytes", storage.log_segment_bytes.get())?;

        positive("cache.max_bytes", self.cache.max_bytes.get())?;

        let limits = &self.limits;
        positive("limits.soft_in_flight", count(limits.soft_in_flight))?;
        positive("limits.max_connections", count(limits.max_connections))?;
        positive("limits.hard_in_flight", count(limits.hard_in_flight))?;
        if limits.soft_in_flight > limits.hard_in_flight {
            return Err(ConfigError::invalid(
                "limits.soft_in_flight",
                format!(
                    "must be <= limits.hard_in_flight ({} > {})",
                    limits.soft_in_flight, limits.hard_in_flight
                ),
            ));
        }
        positive("limits.max_batch_ops", count(limits.max_batch_ops))?;
        positive("limits.max_mentions", count(limits.max_mentions))?;
        positive("limits.max_page", count(limits.max_page))?;
        positive("limits.max_summary_users", count(limits.max_summary_users))?;
        positive(
            "limits.max_channels_filter",
            count(limits.max_channels_filter),
        )?;

        cap("state.unread_cap", self.state.unread_cap)?;
        cap("state.mention_cap", self.state.mention_cap)?;

        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.filter) {
            return Err(ConfigError::invalid(
                "log.filter",
                format!("invalid filter: {e}"),
            ));
        }

        if let Some(url) = &self.nats.url {
            // One server, or several separated by commas (a cluster's seeds).
            let servers: Vec<&str> = url.expose().split(',').map(str::trim).collect();
            if servers.iter().any(|s| s.is_empty()) {
                return Err(ConfigError::invalid(
                    "nats.url",
                    "must not be empty (several servers: separate them with commas)",
                ));
            }
            for server in servers {
                if let Some((scheme, _)) = server.split_once("://")
                    && !["nats", "tls", "ws", "wss"].contains(&scheme)
                {
                    return Err(ConfigError::invalid(
                        "nats.url",
                        format!(
                            "unsupported scheme {scheme:?} (use nats://, tls://, ws:// or wss://)"
                        ),
                    ));
                }
                if server.parse::<async_nats::ServerAddr>().is_err() {
                    return Err(ConfigError::invalid(
                        "nats.url",
                        "not a server address (nats://host:port; several: comma-separated)",
                    ));
                }
            }
        }
        let nats = &self.nats;
        if nats.stream.is_empty()
            || nats
                .stream
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        {
            return Err(ConfigError::invalid(
                "nats.stream",
                "must be a non-empty name without spaces, '.', '*', '>', '/' or '\\'",
            ));
        }
        if nats.subjects.is_empty() || nats.subjects.iter().any(|s| !valid_subject(s, true)) {
            return Err(ConfigError::invalid(
                "nats.subjects",
                "must list at least one subject (tokens separated by '.', wildcards '*' and a final '>')",
            ));
        }
        if nats.consumer.is_empty()
            || nats
                .consumer
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
        {
            return Err(ConfigError::invalid(
                "nats.consumer",
                "must be a non-empty name without spaces, '.', '*' or '>'",
            ));
        }
        positive("nats.batch", count(nats.batch))?;
        positive("nats.concurrency", count(nats.concurrency))?;
        positive("nats.ack_wait_ms", nats.ack_wait_ms)?;
        if !(1..=5).contains(&nats.replicas) {
            return Err(ConfigError::invalid(
                "nats.replicas",
                format!(
                    "must be between 1 and 5 (JetStream's limit), got {}",
                    nats.replicas
                ),
            ));
        }
        if !valid_subject(&nats.changes_prefix, false) {
            return Err(ConfigError::invalid(
                "nats.changes_prefix",
                "must be a subject without wildcards (tokens separated by '.')",
            ));
        }

        crate::auth::Access::new(&self.auth, &self.limits)
            .map_err(|e| ConfigError::invalid(e.key, e.message))?;
        if !self.auth.is_on() && !self.auth.allow_unauthenticated && self.listens_beyond_loopback()
        {
            return Err(ConfigError::invalid(
                "auth",
                format!(
                    "no credentials are configured, and the server would listen beyond loopback ({}): configure auth.api_keys or auth.jwt, or set auth.allow_unauthenticated = true to serve open",
                    self.public_addrs().join(", ")
                ),
            ));
        }

        let events = &self.events;
        positive("events.replay_window", count(events.replay_window))?;
        positive("events.subscriber_buffer", count(events.subscriber_buffer))?;
        positive("events.heartbeat_ms", events.heartbeat_ms)?;
        positive("events.max_subscribers", count(events.max_subscribers))?;
        Ok(())
    }
}

impl Settings {
    /// The listen addresses (`http.addr`, `grpc.addr`) that are not loopback.
    fn public_addrs(&self) -> Vec<String> {
        let http = std::iter::once(("http.addr", self.http.addr));
        let grpc = self.grpc.addr.map(|addr| ("grpc.addr", addr));
        http.chain(grpc)
            .filter(|(_, addr)| !addr.ip().is_loopback())
            .map(|(key, addr)| format!("{key} = {addr}"))
            .collect()
    }

    /// Whether the HTTP or gRPC server listens on a non-loopback address (where auth
    /// is required unless `auth.allow_unauthenticated`).
    pub fn listens_beyond_loopback(&self) -> bool {
        !self.public_addrs().is_empty()
    }
}

/// A NATS subject: non-empty `.`-separated tokens without spaces; with `wildcards`,
/// a token may be `*` and the last one `>`.
fn valid_subject(subject: &str, wildcards: bool) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    tokens.iter().enumerate().all(|(i, t)| {
        !t.is_empty()
            && !t.chars().any(char::is_whitespace)
            && match *t {
                "*" => wildcards,
                ">" => wildcards && i == last,
                t => !t.contains(['*', '>']),
            }
    })
}
