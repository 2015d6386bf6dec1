#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::config::{ApiKeySettings, JwtSettings, Secret};
use crate::domain::ChannelId;

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn user(id: u64) -> UserId {
    UserId::new(id).unwrap()
}

fn key_entry(name: &str, key: &str, scopes: &[&str]) -> ApiKeySettings {
    ApiKeySettings {
        name: name.to_owned(),
        key_sha256: keys::sha256_hex(key),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn settings(keys: Vec<ApiKeySettings>, jwt: JwtSettings) -> AuthSettings {
    AuthSettings {
        allow_unauthenticated: false,
        api_keys: keys,
        jwt,
    }
}

fn hs256() -> JwtSettings {
    JwtSettings {
        hs256_secret: Some(Secret::new(SECRET)),
        ..JwtSettings::default()
    }
}

fn unlimited() -> LimitsSettings {
    LimitsSettings {
        per_caller_rps: 0,
        ..LimitsSettings::default()
    }
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
}

fn hs_token(claims: serde_json::Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn b64(json: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string())
}

#[test]
fn every_operation_needs_the_scope_the_issue_gives_it() {
    let by_scope = |scope| {
        Operation::ALL
            .into_iter()
            .filter(|op| op.scope() == scope)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        by_scope(Scope::Read),
        [
            Operation::Readers,
            Operation::GetReadState,
            Operation::GetReadStates,
            Operation::GetSummary,
            Operation::GetSummaries,
            Operation::Subscribe,
            Operation::Monitor,
            Operation::GetChannel,
            Operation::GetGroups,
            Operation::GetThreads,
        ]
    );
    // Issue 14: deleting and exporting a user's data is an administrator's act.
    assert_eq!(
        by_scope(Scope::Admin),
        [
            Operation::DeleteChannel,
            Operation::DeleteUser,
            Operation::ExportUser
        ]
    );
    let end_user: Vec<_> = Operation::ALL
        .into_iter()
        .filter(|op| op.for_end_users())
        .collect();
    assert_eq!(
        end_user,
        [
            Operation::GetReadState,
            Operation::GetReadStates,
            Operation::Ack,
            Operation::MarkUnread,
            Operation::AckAll,
            Operation::GetSummary,
            Operation::Subscribe,
            Operation::Settings,
            Operation::GetGroups,
            Operation::GetThreads,
        ]
    );
}

#[test]
fn without_credentials_configured_everyone_is_anonymous() {
    let access = Access::new(&AuthSettings::default(), &LimitsSettings::default()).unwrap();
    assert!(!access.is_on());
    assert_eq!(
        access.check(None, Operation::DeleteChannel, None),
        Ok(Caller::Anonymous)
    );
    assert_eq!(
        access.check(Some("anything"), Operation::Ack, Some(user(1))),
        Ok(Caller::Anonymous)
    );
}

#[test]
fn api_keys_are_found_by_hash_and_limited_to_their_scopes() {
    let access = Access::new(
        &settings(
            vec![
                key_entry("reader", "rsk_reader", &["read"]),
                key_entry("writer", "rsk_writer", &["write", "read"]),
            ],
            JwtSettings::default(),
        ),
        &unlimited(),
    )
    .unwrap();

    let reader = access
        .check(Some("rsk_reader"), Operation::GetSummary, Some(user(5)))
        .unwrap();
    assert!(matches!(&reader, Caller::Service { index: 0, name, .. } if &**name == "reader"));
    assert_eq!(
        access.check(Some("rsk_reader"), Operation::Ack, Some(user(5))),
        Err(Denied::Scope(Scope::Write))
    );
    assert!(
        access
            .check(Some("rsk_writer"), Operation::Ack, Some(user(5)))
            .is_ok()
    );
    assert_eq!(
        access.check(Some("rsk_writer"), Operation::DeleteChannel, None),
        Err(Denied::Scope(Scope::Admin))
    );
    assert_eq!(
        access.check(Some("rsk_other"), Operation::GetSummary, None),
        Err(Denied::Invalid(Invalid::UnknownKey))
    );
    assert_eq!(
        access.check(None, Operation::GetSummary, None),
        Err(Denied::Missing)
    );
    // A dotted token is not a JWT when no JWT key is configured: an unknown key.
    assert_eq!(
        access.check(Some("a.b.c"), Operation::GetSummary, None),
        Err(Denied::Invalid(Invalid::UnknownKey))
    );
}

#[test]
fn generated_keys_are_random_and_match_their_hash() {
    let (a, b) = (keys::generate(), keys::generate());
    assert_ne!(a, b);
    assert!(a.starts_with(keys::KEY_PREFIX) && a.len() == keys::KEY_PREFIX.len() + 64);
    let found = keys::ApiKeys::new(&[key_entry("k", &a, &["admin"])])
        .unwrap()
        .find(&a)
        .unwrap();
    assert!(matches!(found, Caller::Service { scopes, .. } if scopes.contains(Scope::Admin)));
}

#[test]
fn bad_key_entries_are_refused_naming_the_field() {
    let cases = [
        (vec![key_entry("", "k", &["read"])], "auth.api_keys[0].name"),
        (
            vec![
                key_entry("a", "k", &["read"]),
                key_entry("a", "j", &["read"]),
            ],
            "auth.api_keys[1].name",
        ),
        (
            vec![
                key_entry("a", "k", &["read"]),
                key_entry("b", "k", &["read"]),
            ],
            "auth.api_keys[1].key_sha256",
        ),
        (vec![key_entry("a", "k", &[])], "auth.api_keys[0].scopes"),
        (
            vec![key_entry("a", "k", &["read", "root"])],
            "auth.api_keys[0].scopes",
        ),
        (
            vec![ApiKeySettings {
                name: "a".into(),
                key_sha256: "abc".into(),
                scopes: vec!["read".into()],
            }],
            "auth.api_keys[0].key_sha256",
        ),
    ];
    for (entries, key) in cases {
        let error = keys::ApiKeys::new(&entries).err().unwrap();
        assert_eq!(error.key, key, "{}", error.message);
    }
}

#[test]
fn a_user_token_acts_on_its_own_user_only_and_only_as_an_end_user() {
    let access = Access::new(&settings(vec![], hs256()), &unlimited()).unwrap();
    let token = hs_token(json!({"sub": "42", "exp": now() + 600}));

    for op in [
        Operation::GetReadState,
        Operation::GetReadStates,
        Operation::GetSummary,
        Operation::Ack,
        Operation::MarkUnread,
        Operation::AckAll,
        Operation::Subscribe,
    ] {
        assert_eq!(
            access.check(Some(&token), op, Some(user(42))),
            Ok(Caller::User(user(42))),
            "{op:?}"
        );
        assert_eq!(
            access.check(Some(&token), op, Some(user(43))),
            Err(Denied::OtherUser),
            "{op:?}"
        );
        assert_eq!(
            access.check(Some(&token), op, None),
            Err(Denied::OtherUser),
            "{op:?}"
        );
    }
    for op in [
        Operation::Join,
        Operation::Leave,
        Operation::MessageCreated,
        Operation::DeleteChannel,
        Operation::Batch,
        Operation::GetSummaries,
        Operation::Readers,
        Operation::Monitor,
    ] {
        assert_eq!(
            access.check(Some(&token), op, Some(user(42))),
            Err(Denied::NotForUsers),
            "{op:?}"
        );
    }
    // `sub` may be a JSON integer too.
    let numeric = hs_token(json!({"sub": 42, "exp": now() + 600}));
    assert_eq!(
        access.check(Some(&numeric), Operation::Ack, Some(user(42))),
        Ok(Caller::User(user(42)))
    );
}

#[test]
fn bad_tokens_are_refused_with_their_reason() {
    let mut jwt = hs256();
    jwt.issuer = Some("https://auth.example".into());
    jwt.audience = Some("readstate".into());
    jwt.leeway_s = 5;
    let access = Access::new(&settings(vec![], jwt), &unlimited()).unwrap();
    let good =
        json!({"sub": "7", "exp": now() + 600, "iss": "https://auth.example", "aud": "readstate"});
    let with = |patch: serde_json::Value| {
        let mut claims = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            match v {
                serde_json::Value::Null => claims.as_object_mut().unwrap().remove(k),
                v => claims.as_object_mut().unwrap().insert(k.clone(), v.clone()),
            };
        }
        claims
    };
    let check = |token: &str| access.check(Some(token), Operation::Ack, Some(user(7)));

    assert_eq!(check(&hs_token(good.clone())), Ok(Caller::User(user(7))));
    let cases = [
        (hs_token(with(json!({"exp": now() - 60}))), Invalid::Expired),
        (
            hs_token(with(json!({"nbf": now() + 60}))),
            Invalid::NotYetValid,
        ),
        (
            hs_token(with(json!({"iss": "https://evil.example"}))),
            Invalid::WrongIssuer,
        ),
        (hs_token(with(json!({"iss": null}))), Invalid::BadClaims),
        (
            hs_token(with(json!({"aud": "other"}))),
            Invalid::WrongAudience,
        ),
        (hs_token(with(json!({"exp": null}))), Invalid::BadClaims),
        (hs_token(with(json!({"sub": "007"}))), Invalid::BadClaims),
        (hs_token(with(json!({"sub": "0"}))), Invalid::BadClaims),
        (hs_token(with(json!({"sub": null}))), Invalid::BadClaims),
        (
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"another-secret-that-is-long-enough-too"),
                good.clone(),
            ),
            Invalid::BadSignature,
        ),
        (
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&good)
            ),
            Invalid::WrongAlgorithm,
        ),
        (
            sign(
                Algorithm::HS384,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                good.clone(),
            ),
            Invalid::WrongAlgorithm,
        ),
        ("not.a.jwt".to_owned(), Invalid::Malformed),
        (
            format!("{}.{}.sig", b64(&json!({"typ": "JWT"})), b64(&good)),
            Invalid::Malformed,
        ),
    ];
    for (token, reason) in cases {
        assert_eq!(check(&token), Err(Denied::Invalid(reason)), "{token}");
    }
    // Within the leeway, an expired token still passes.
    assert!(check(&hs_token(with(json!({"exp": now() - 2})))).is_ok());
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success(), "openssl {args:?}");
}

/// An RSA and a P-256 key pair made by openssl: (private PEM, public PEM path).
fn key_pairs(dir: &Path) -> [(Vec<u8>, PathBuf); 2] {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.pem",
        ],
    );
    openssl(
        dir,
        &["pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub.pem"],
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ],
    );
    openssl(
        dir,
        &["pkey", "-in", "ec.pem", "-pubout", "-out", "ec.pub.pem"],
    );
    ["rsa", "ec"].map(|name| {
        (
            std::fs::read(dir.join(format!("{name}.pem"))).unwrap(),
            dir.join(format!("{name}.pub.pem")),
        )
    })
}

#[test]
fn rs256_and_es256_tokens_verify_with_their_public_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let [(rsa, rsa_pub), (ec, ec_pub)] = key_pairs(dir.path());
    let jwt = JwtSettings {
        public_key_files: vec![rsa_pub.clone(), ec_pub],
        ..JwtSettings::default()
    };
    let access = Access::new(&settings(vec![], jwt), &unlimited()).unwrap();
    let claims = json!({"sub": "9", "exp": now() + 600});
    let rs = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&rsa).unwrap(),
        claims.clone(),
    );
    let es = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&ec).unwrap(),
        claims.clone(),
    );
    for token in [&rs, &es] {
        assert_eq!(
            access.check(Some(token), Operation::GetSummary, Some(user(9))),
            Ok(Caller::User(user(9)))
        );
    }
    // A token signed with another key of the same kind.
    let other = tempfile::tempdir().unwrap();
    let [(other_rsa, _), _] = key_pairs(other.path());
    let forged = sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&other_rsa).unwrap(),
        claims.clone(),
    );
    assert_eq!(
        access.check(Some(&forged), Operation::GetSummary, Some(user(9))),
        Err(Denied::Invalid(Invalid::BadSignature))
    );
    // Algorithm confusion: HS256 "signed" with the public key's bytes. No HS256
    // secret is configured, so the algorithm itself is refused.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&std::fs::read(&rsa_pub).unwrap()),
        claims,
    );
    assert_eq!(
        access.check(Some(&confused), Operation::GetSummary, Some(user(9))),
        Err(Denied::Invalid(Invalid::WrongAlgorithm))
    );
}

#[test]
fn unusable_jwt_settings_are_refused_naming_the_key() {
    let short = JwtSettings {
        hs256_secret: Some(Secret::new("short")),
        ..JwtSettings::default()
    };
    let error = Access::new(&settings(vec![], short), &unlimited())
        .err()
        .unwrap();
    assert_eq!(error.key, "auth.jwt.hs256_secret");

    let dir = tempfile::tempdir().unwrap();
    let not_a_key = dir.path().join("not-a-key.pem");
    std::fs::write(&not_a_key, "hello").unwrap();
    for (path, why) in [
        (not_a_key, "is not an RSA or EC public key"),
        (dir.path().join("missing.pem"), "cannot read"),
    ] {
        let jwt = JwtSettings {
            public_key_files: vec![path],
            ..JwtSettings::default()
        };
        let error = Access::new(&settings(vec![], jwt), &unlimited())
            .err()
            .unwrap();
        assert_eq!(error.key, "auth.jwt.public_key_files[0]");
        assert!(error.message.contains(why), "{}", error.message);
    }
}

#[test]
fn each_caller_has_its_own_rate() {
    let limits = LimitsSettings {
        per_caller_rps: 1,
        per_caller_burst: 2,
        ..LimitsSettings::default()
    };
    let access = Access::new(
        &settings(vec![key_entry("svc", "rsk_svc", &["read"])], hs256()),
        &limits,
    )
    .unwrap();
    let token = |sub: &str| hs_token(json!({"sub": sub, "exp": now() + 600}));
    let (alice, bob) = (token("1"), token("2"));

    for _ in 0..2 {
        assert!(
            access
                .check(Some(&alice), Operation::Ack, Some(user(1)))
                .is_ok()
        );
    }
    let refused = access.check(Some(&alice), Operation::Ack, Some(user(1)));
    let Err(Denied::RateLimited(wait)) = refused else {
        panic!("{refused:?}");
    };
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
    assert_eq!(Denied::RateLimited(wait).retry_after(), Some(1));
    // Another user and the service key have buckets of their own.
    assert!(
        access
            .check(Some(&bob), Operation::Ack, Some(user(2)))
            .is_ok()
    );
    assert!(
        access
            .check(Some("rsk_svc"), Operation::Readers, None)
            .is_ok()
    );
    // A refused credential does not use the bucket up.
    assert!(access.check(Some("rsk_svc"), Operation::Ack, None).is_err());
    assert!(
        access
            .check(Some("rsk_svc"), Operation::Readers, None)
            .is_ok()
    );
    access.sweep();

    let error = Access::new(
        &AuthSettings::default(),
        &LimitsSettings {
            per_caller_rps: 5,
            per_caller_burst: 0,
            ..LimitsSettings::default()
        },
    )
    .err()
    .unwrap();
    assert_eq!(error.key, "limits.per_caller_burst");
}

#[test]
fn a_batch_op_needs_the_scope_of_its_own_operation() {
    let access = Access::new(
        &settings(
            vec![
                key_entry("writer", "rsk_writer", &["write"]),
                key_entry("admin", "rsk_admin", &["write", "admin"]),
            ],
            JwtSettings::default(),
        ),
        &unlimited(),
    )
    .unwrap();
    let channel = ChannelId::new(10).unwrap();
    let ops = [Op::AckAll { user: user(1) }, Op::DeleteChannel { channel }];
    let writer = access
        .check(Some("rsk_writer"), Operation::Batch, None)
        .unwrap();
    let admin = access
        .check(Some("rsk_admin"), Operation::Batch, None)
        .unwrap();

    assert_eq!(
        access.authorize_ops(&writer, ops.iter().enumerate()),
        Err((1, Denied::Scope(Scope::Admin)))
    );
    assert_eq!(access.authorize_ops(&admin, ops.iter().enumerate()), Ok(()));
    let problem = Denied::Scope(Scope::Admin).problem_at(1);
    assert_eq!(problem.field.as_deref(), Some("ops[1]"));
    assert_eq!(problem.kind, ProblemKind::Forbidden);
}

#[test]
fn refusals_carry_the_status_and_challenge_of_rfc_6750() {
    assert_eq!(Denied::Missing.problem().kind, ProblemKind::Unauthorized);
    assert_eq!(
        Denied::Missing.challenge().as_deref(),
        Some("Bearer realm=\"readstate\"")
    );
    assert_eq!(
        Denied::Invalid(Invalid::Expired).challenge().as_deref(),
        Some("Bearer realm=\"readstate\", error=\"invalid_token\"")
    );
    assert_eq!(
        Denied::Scope(Scope::Write).challenge().as_deref(),
        Some("Bearer realm=\"readstate\", error=\"insufficient_scope\", scope=\"write\"")
    );
    assert_eq!(Denied::OtherUser.problem().kind, ProblemKind::Forbidden);
    assert_eq!(
        Denied::RateLimited(Duration::from_millis(1500)).retry_after(),
        Some(2)
    );
    assert_eq!(
        Denied::RateLimited(Duration::ZERO).problem().kind,
        ProblemKind::TooManyRequests
    );
    for denied in [
        Denied::Missing,
        Denied::Invalid(Invalid::Malformed),
        Denied::OtherUser,
    ] {
        assert!(Denied::REASONS.contains(&denied.reason()));
    }
}
