//! Access control, black-box: the authorization matrix (every route of the OpenAPI
//! document and every gRPC method of the compiled descriptor × every kind of
//! credential), the per-caller rate limit, and the monitoring pages behind the
//! `read` scope. The expected answers come from this file's own table of the
//! issue's rules, keyed by route and method: a route or method without an entry
//! fails the test, so a new one cannot ship without a rule.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use readstate::config::{ApiKeySettings, Settings};
use readstate::grpc::pb;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::helpers::{TestApp, metric, spawn_app_with};

const HS256_SECRET: &str = "matrix-test-secret-long-enough-for-hs256!";
/// The user the JWTs are for; every path names this user.
const USER: u64 = 7;
const OTHER_USER: u64 = 8;

/// What a route needs, from the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// Open to anyone (health, readiness).
    Public,
    /// An API key with this scope; end users (JWTs) may call it for themselves when
    /// `end_user`.
    Scope { scope: &'static str, end_user: bool },
}

const fn needs(scope: &'static str, end_user: bool) -> Rule {
    Rule::Scope { scope, end_user }
}

/// The rule of each HTTP route of the document.
fn http_rules() -> BTreeMap<(&'static str, &'static str), Rule> {
    BTreeMap::from([
        (
            ("POST", "/v1/channels/{channel_id}/messages"),
            needs("write", false),
        ),
        (
            ("DELETE", "/v1/channels/{channel_id}/messages/{message_id}"),
            needs("write", false),
        ),
        (
            ("DELETE", "/v1/channels/{channel_id}"),
            needs("admin", false),
        ),
        (
            (
                "GET",
                "/v1/channels/{channel_id}/messages/{message_id}/readers",
            ),
            needs("read", false),
        ),
        (
            ("PUT", "/v1/users/{user_id}/channels/{channel_id}"),
            needs("write", false),
        ),
        (
            ("DELETE", "/v1/users/{user_id}/channels/{channel_id}"),
            needs("write", false),
        ),
        (
            ("GET", "/v1/users/{user_id}/channels/{channel_id}"),
            needs("read", true),
        ),
        (
            ("POST", "/v1/users/{user_id}/channels/{channel_id}/ack"),
            needs("write", true),
        ),
        (
            ("POST", "/v1/users/{user_id}/channels/{channel_id}/unread"),
            needs("write", true),
        ),
        (
            ("GET", "/v1/users/{user_id}/read-states"),
            needs("read", true),
        ),
        (("GET", "/v1/users/{user_id}/summary"), needs("read", true)),
        (("GET", "/v1/users/{user_id}/events"), needs("read", true)),
        (
            ("GET", "/v1/users/{user_id}/events/ws"),
            needs("read", true),
        ),
        (
            ("POST", "/v1/users/{user_id}/ack-all"),
            needs("write", true),
        ),
        (("PUT", "/v1/channels/{channel_id}"), needs("write", false)),
        (("GET", "/v1/channels/{channel_id}"), needs("read", false)),
        (
            ("PUT", "/v1/users/{user_id}/channels/{channel_id}/settings"),
            needs("write", true),
        ),
        (
            ("GET", "/v1/users/{user_id}/channels/{channel_id}/threads"),
            needs("read", true),
        ),
        (("GET", "/v1/users/{user_id}/groups"), needs("read", true)),
        // Deleting and exporting a user's data is for the operator, never the user.
        (("DELETE", "/v1/users/{user_id}"), needs("admin", false)),
        (("GET", "/v1/users/{user_id}/export"), needs("admin", false)),
        (("POST", "/v1/summaries"), needs("read", false)),
        (("POST", "/v1/batch"), needs("write", false)),
        (("GET", "/metrics"), needs("read", false)),
        (("GET", "/healthz"), Rule::Public),
        (("GET", "/readyz"), Rule::Public),
    ])
}

/// The rule of each gRPC method of `readstate.v1.ReadStates`.
fn grpc_rules() -> BTreeMap<&'static str, Rule> {
    BTreeMap::from([
        ("MessageCreated", needs("write", false)),
        ("MessageDeleted", needs("write", false)),
        ("DeleteChannel", needs("admin", false)),
        ("Readers", needs("read", false)),
        ("Join", needs("write", false)),
        ("Leave", needs("write", false)),
        ("GetReadState", needs("read", true)),
        ("GetReadStates", needs("read", true)),
        ("Ack", needs("write", true)),
        ("MarkUnread", needs("write", true)),
        ("AckAll", needs("write", true)),
        ("GetSummary", needs("read", true)),
        ("GetSummaries", needs("read", false)),
        ("Batch", needs("write", false)),
        ("Subscribe", needs("read", true)),
        ("Write", needs("write", false)),
        ("SetChannel", needs("write", false)),
        ("GetChannel", needs("read", false)),
        ("UpdateSettings", needs("write", true)),
        ("GetGroups", needs("read", true)),
        ("GetThreads", needs("read", true)),
        ("DeleteUser", needs("admin", false)),
        ("ExportUser", needs("admin", false)),
    ])
}

/// The kinds of credential the matrix tries.
#[derive(Debug, Clone)]
enum Credential {
    None,
    /// An `Authorization` header that is not a bearer token.
    MalformedHeader,
    /// A bearer token with three dots-separated parts that are not a JWT.
    MalformedToken,
    AlgNone,
    WrongSignature,
    Expired,
    Key(&'static str),
    /// A JWT of the path's own user, signed with this algorithm.
    OwnJwt(Algorithm),
    OtherUsersJwt,
}

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Unauthorized,
    Forbidden,
    Allowed,
}

fn expect(rule: Rule, credential: &Credential) -> Expect {
    let Rule::Scope { scope, end_user } = rule else {
        return Expect::Allowed;
    };
    match credential {
        Credential::None
        | Credential::MalformedHeader
        | Credential::MalformedToken
        | Credential::AlgNone
        | Credential::WrongSignature
        | Credential::Expired => Expect::Unauthorized,
        Credential::Key(has) if *has == scope => Expect::Allowed,
        Credential::Key(_) => Expect::Forbidden,
        Credential::OwnJwt(_) if end_user => Expect::Allowed,
        Credential::OwnJwt(_) | Credential::OtherUsersJwt => Expect::Forbidden,
    }
}

/// Keys, tokens and the app that accepts them.
struct Fixture {
    app: TestApp,
    keys: BTreeMap<&'static str, String>,
    private: BTreeMap<&'static str, Vec<u8>>,
    _dir: tempfile::TempDir,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs (apt-get install openssl)");
    assert!(status.success(), "openssl {args:?}");
}

/// An RSA and a P-256 key pair in `dir`: the public key files.
fn key_pairs(dir: &Path) -> Vec<PathBuf> {
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
    vec![dir.join("rsa.pub.pem"), dir.join("ec.pub.pem")]
}

impl Fixture {
    async fn new(configure: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let public = key_pairs(dir.path());
        let keys: BTreeMap<&'static str, String> = ["read", "write", "admin"]
            .into_iter()
            .map(|scope| (scope, readstate::auth::keys::generate()))
            .collect();
        let entries: Vec<ApiKeySettings> = keys
            .iter()
            .map(|(scope, key)| ApiKeySettings {
                name: format!("{scope}-key"),
                key_sha256: readstate::auth::keys::sha256_hex(key),
                scopes: vec![(*scope).to_owned()],
            })
            .collect();
        let app = spawn_app_with(|s| {
            s.auth.api_keys = entries;
            s.auth.jwt.hs256_secret = Some(HS256_SECRET.into());
            s.auth.jwt.public_key_files = public;
            s.limits.per_caller_rps = 0;
            configure(s);
        })
        .await;
        let private = BTreeMap::from([
            (
                "rsa",
                std::fs::read(dir.path().join("rsa.pem")).expect("the RSA key"),
            ),
            (
                "ec",
                std::fs::read(dir.path().join("ec.pem")).expect("the EC key"),
            ),
        ]);
        Self {
            app,
            keys,
            private,
            _dir: dir,
        }
    }

    fn jwt(&self, alg: Algorithm, sub: u64, exp: u64) -> String {
        let key = match alg {
            Algorithm::HS256 => EncodingKey::from_secret(HS256_SECRET.as_bytes()),
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&self.private["rsa"]).expect("RSA PEM"),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&self.private["ec"]).expect("EC PEM"),
            other => panic!("no key for {other:?}"),
        };
        let claims = json!({"sub": sub.to_string(), "exp": exp});
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("signed")
    }

    /// The `Authorization` value of a credential (`None`: no header).
    fn authorization(&self, credential: &Credential) -> Option<String> {
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = match credential {
            Credential::None => return None,
            Credential::MalformedHeader => return Some("Basic cmVhZHN0YXRlOnB3".to_owned()),
            Credential::MalformedToken => "not.a.jwt".to_owned(),
            Credential::AlgNone => format!(
                "{}.{}.",
                b64(json!({"alg": "none", "typ": "JWT"})),
                b64(json!({"sub": USER.to_string(), "exp": now() + 600}))
            ),
            Credential::WrongSignature => {
                let token = self.jwt(Algorithm::HS256, USER, now() + 600);
                let (rest, _) = token.rsplit_once('.').expect("three parts");
                format!("{rest}.{}", b64(json!("forged")))
            }
            Credential::Expired => self.jwt(Algorithm::HS256, USER, now() - 3600),
            Credential::Key(scope) => self.keys[scope].clone(),
            Credential::OwnJwt(alg) => self.jwt(*alg, USER, now() + 600),
            Credential::OtherUsersJwt => self.jwt(Algorithm::HS256, OTHER_USER, now() + 600),
        };
        Some(format!("Bearer {token}"))
    }
}

fn credentials() -> Vec<Credential> {
    vec![
        Credential::None,
        Credential::MalformedHeader,
        Credential::MalformedToken,
        Credential::AlgNone,
        Credential::WrongSignature,
        Credential::Expired,
        Credential::Key("read"),
        Credential::Key("write"),
        Credential::Key("admin"),
        Credential::OwnJwt(Algorithm::HS256),
        Credential::OwnJwt(Algorithm::RS256),
        Credential::OwnJwt(Algorithm::ES256),
        Credential::OtherUsersJwt,
    ]
}

/// A request body the route accepts (the matrix checks access, but allowed calls
/// should get past the guard to a real answer).
fn sample_body(method: &str, path: &str) -> Option<Value> {
    match (method, path) {
        ("POST", "/v1/channels/{channel_id}/messages") => {
            Some(json!({"message_id": "600", "author_id": "1"}))
        }
        ("PUT", "/v1/users/{user_id}/channels/{channel_id}") => Some(json!({})),
        ("PUT", "/v1/channels/{channel_id}") => Some(json!({"group_id": "3", "at": 1})),
        ("PUT", "/v1/users/{user_id}/channels/{channel_id}/settings") => {
            Some(json!({"level": "mentions", "at": 1}))
        }
        (
            "POST",
            "/v1/users/{user_id}/channels/{channel_id}/ack"
            | "/v1/users/{user_id}/channels/{channel_id}/unread",
        ) => Some(json!({"message_id": "500"})),
        ("POST", "/v1/summaries") => Some(json!({"user_ids": [USER.to_string()]})),
        ("POST", "/v1/batch") => Some(json!({"ops": [
            {"op": "ack", "user_id": USER.to_string(), "channel_id": "10", "message_id": "500"}
        ]})),
        _ => None,
    }
}

fn concrete(path: &str) -> String {
    path.replace("{user_id}", &USER.to_string())
        .replace("{channel_id}", "10")
        .replace("{message_id}", "500")
}

#[tokio::test]
async fn every_http_route_answers_every_credential_as_the_rules_say() {
    let fixture = Fixture::new(|_| {}).await;
    let app = &fixture.app;
    let doc = app.get("/openapi.json", None).await.2;
    let rules = http_rules();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            let method = method.to_ascii_uppercase();
            let rule = rules
                .iter()
                .find(|((m, p), _)| *m == method && *p == path)
                .map(|(_, rule)| *rule)
                .unwrap_or_else(|| panic!("{method} {path} has no rule in this test: add one"));
            for credential in credentials() {
                let mut request = app.client.request(
                    Method::from_bytes(method.as_bytes()).expect("a method"),
                    app.url(&concrete(path)),
                );
                if let Some(value) = fixture.authorization(&credential) {
                    request = request.header("authorization", value);
                }
                if let Some(body) = sample_body(&method, path) {
                    request = request.json(&body);
                }
                let response = request.send().await.expect("an answer");
                let status = response.status();
                let challenge = response.headers().get("www-authenticate").cloned();
                let content_type = response.headers().get("content-type").cloned();
                drop(response);
                let expected = expect(rule, &credential);
                let ok = match expected {
                    Expect::Unauthorized => {
                        status == StatusCode::UNAUTHORIZED
                            && challenge
                                .is_some_and(|c| c.to_str().is_ok_and(|c| c.starts_with("Bearer")))
                            && content_type.is_some_and(|c| c == "application/problem+json")
                    }
                    Expect::Forbidden => status == StatusCode::FORBIDDEN,
                    Expect::Allowed => {
                        !matches!(status.as_u16(), 401 | 403 | 429) && !status.is_server_error()
                    }
                };
                if !ok {
                    wrong.push(format!(
                        "{method} {path} with {credential:?}: {status}, expected {expected:?}"
                    ));
                }
                checked += 1;
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {checked} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(
        checked,
        rules.len() * credentials().len(),
        "every rule was tried"
    );
    // The refusals were counted by reason.
    let metrics = app
        .raw(
            Method::GET,
            "/metrics",
            &[("authorization", &format!("Bearer {}", fixture.keys["read"]))],
            "",
        )
        .await;
    let text = metrics.2.as_str().expect("the metrics text").to_owned();
    for reason in [
        "missing",
        "malformed",
        "wrong_algorithm",
        "bad_signature",
        "expired",
        "scope",
        "other_user",
        "not_for_users",
    ] {
        let count = metric(
            &text,
            &format!("readstate_auth_denied_total{{reason=\"{reason}\"}}"),
        );
        assert!(count.is_some_and(|c| c > 0.0), "{reason}: {count:?}");
    }
}

/// Calls gRPC method `name` with a sample message and `authorization`.
async fn call_grpc(
    client: &mut pb::read_states_client::ReadStatesClient<tonic::transport::Channel>,
    name: &str,
    authorization: Option<&str>,
) -> Result<(), tonic::Status> {
    fn request<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = authorization {
            request.metadata_mut().insert(
                "authorization",
                MetadataValue::try_from(value).expect("ASCII metadata"),
            );
        }
        request
    }
    let a = authorization;
    let ack = pb::AckRequest {
        user_id: USER,
        channel_id: 10,
        message_id: 500,
        at: None,
    };
    match name {
        "MessageCreated" => client
            .message_created(request(
                pb::MessageCreatedRequest {
                    channel_id: 10,
                    message_id: 600,
                    author_id: None,
                    mentions: vec![],
                },
                a,
            ))
            .await
            .map(drop),
        "MessageDeleted" => client
            .message_deleted(request(
                pb::MessageDeletedRequest {
                    channel_id: 10,
                    message_id: 600,
                },
                a,
            ))
            .await
            .map(drop),
        "DeleteChannel" => client
            .delete_channel(request(pb::DeleteChannelRequest { channel_id: 99 }, a))
            .await
            .map(drop),
        "Readers" => client
            .readers(request(
                pb::ReadersRequest {
                    channel_id: 10,
                    message_id: 500,
                    after: None,
                    limit: None,
                },
                a,
            ))
            .await
            .map(drop),
        "Join" => client
            .join(request(
                pb::JoinRequest {
                    user_id: USER,
                    channel_id: 10,
                    last_read_message_id: None,
                },
                a,
            ))
            .await
            .map(drop),
        "Leave" => client
            .leave(request(
                pb::LeaveRequest {
                    user_id: USER,
                    channel_id: 11,
                },
                a,
            ))
            .await
            .map(drop),
        "GetReadState" => client
            .get_read_state(request(
                pb::GetReadStateRequest {
                    user_id: USER,
                    channel_id: 10,
                },
                a,
            ))
            .await
            .map(drop),
        "GetReadStates" => client
            .get_read_states(request(
                pb::GetReadStatesRequest {
                    user_id: USER,
                    channels: vec![],
                    group_id: None,
                },
                a,
            ))
            .await
            .map(drop),
        "Ack" => client.ack(request(ack, a)).await.map(drop),
        "MarkUnread" => client
            .mark_unread(request(
                pb::MarkUnreadRequest {
                    user_id: USER,
                    channel_id: 10,
                    message_id: 500,
                },
                a,
            ))
            .await
            .map(drop),
        "AckAll" => client
            .ack_all(request(pb::AckAllRequest { user_id: USER }, a))
            .await
            .map(drop),
        "GetSummary" => client
            .get_summary(request(
                pb::GetSummaryRequest {
                    user_id: USER,
                    group_id: None,
                },
                a,
            ))
            .await
            .map(drop),
        "GetSummaries" => client
            .get_summaries(request(
                pb::GetSummariesRequest {
                    user_ids: vec![USER],
                },
                a,
            ))
            .await
            .map(drop),
        "SetChannel" => client
            .set_channel(request(
                pb::SetChannelRequest {
                    channel_id: 10,
                    parent_id: None,
                    group_id: Some(3),
                    at: Some(1),
                },
                a,
            ))
            .await
            .map(drop),
        "GetChannel" => client
            .get_channel(request(pb::GetChannelRequest { channel_id: 10 }, a))
            .await
            .map(drop),
        "UpdateSettings" => client
            .update_settings(request(
                pb::UpdateSettingsRequest {
                    user_id: USER,
                    channel_id: 10,
                    muted_until: None,
                    level: Some("mentions".to_owned()),
                    at: Some(1),
                },
                a,
            ))
            .await
            .map(drop),
        "GetGroups" => client
            .get_groups(request(pb::GetGroupsRequest { user_id: USER }, a))
            .await
            .map(drop),
        "GetThreads" => client
            .get_threads(request(
                pb::GetThreadsRequest {
                    user_id: USER,
                    channel_id: 10,
                    after: None,
                    limit: None,
                },
                a,
            ))
            .await
            .map(drop),
        "DeleteUser" => client
            .delete_user(request(
                pb::DeleteUserRequest {
                    user_id: OTHER_USER,
                },
                a,
            ))
            .await
            .map(drop),
        "ExportUser" => client
            .export_user(request(pb::ExportUserRequest { user_id: USER }, a))
            .await
            .map(drop),
        "Batch" => client
            .batch(request(
                pb::BatchRequest {
                    ops: vec![pb::Op {
                        op: Some(pb::op::Op::Ack(ack)),
                    }],
                },
                a,
            ))
            .await
            .map(drop),
        "Subscribe" => client
            .subscribe(request(
                pb::SubscribeRequest {
                    user_id: USER,
                    last_event_id: None,
                },
                a,
            ))
            .await
            .map(drop),
        "Write" => {
            let ops = futures_util::stream::iter(vec![pb::Op {
                op: Some(pb::op::Op::Ack(ack)),
            }]);
            client.write(request(ops, a)).await.map(drop)
        }
        other => panic!("gRPC method {other} has no sample call in this test: add one"),
    }
}

#[tokio::test]
async fn every_grpc_method_answers_every_credential_as_the_rules_say() {
    let fixture = Fixture::new(|_| {}).await;
    let pool =
        prost_reflect::DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("the descriptor set");
    let service = pool
        .get_service_by_name("readstate.v1.ReadStates")
        .expect("the service");
    let rules = grpc_rules();
    let mut client = crate::grpc_transport::Grpc::new(fixture.app.grpc_addr).client();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for method in service.methods() {
        let name = method.name().to_owned();
        let rule = *rules
            .get(name.as_str())
            .unwrap_or_else(|| panic!("gRPC method {name} has no rule in this test: add one"));
        for credential in credentials() {
            let authorization = fixture.authorization(&credential);
            let code = match call_grpc(&mut client, &name, authorization.as_deref()).await {
                Ok(()) => Code::Ok,
                Err(status) => status.code(),
            };
            let expected = expect(rule, &credential);
            let ok = match expected {
                Expect::Unauthorized => code == Code::Unauthenticated,
                Expect::Forbidden => code == Code::PermissionDenied,
                Expect::Allowed => !matches!(
                    code,
                    Code::Unauthenticated
                        | Code::PermissionDenied
                        | Code::ResourceExhausted
                        | Code::Internal
                        | Code::Unknown
                ),
            };
            if !ok {
                wrong.push(format!(
                    "{name} with {credential:?}: {code:?}, expected {expected:?}"
                ));
            }
            checked += 1;
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {checked} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(
        checked,
        rules.len() * credentials().len(),
        "every rule was tried"
    );
}

#[tokio::test]
async fn a_batch_op_that_needs_admin_refuses_a_write_key_batch_whole() {
    let fixture = Fixture::new(|_| {}).await;
    let app = &fixture.app;
    let batch = json!({"ops": [
        {"op": "ack", "user_id": "7", "channel_id": "10", "message_id": "500"},
        {"op": "delete_channel", "channel_id": "10"}
    ]});
    let send = |scope: &'static str| {
        let key = fixture.keys[scope].clone();
        let batch = batch.clone();
        async move {
            app.client
                .post(app.url("/v1/batch"))
                .bearer_auth(key)
                .json(&batch)
                .send()
                .await
                .expect("an answer")
        }
    };
    let refused = send("write").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.expect("a problem");
    assert_eq!(body["field"], "ops[1]", "{body}");
    // Nothing of the refused batch was applied.
    let state = app
        .client
        .get(app.url("/v1/users/7/channels/10"))
        .bearer_auth(&fixture.keys["read"])
        .send()
        .await
        .expect("an answer");
    assert_eq!(state.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_caller_over_its_rate_gets_429_with_retry_after() {
    let fixture = Fixture::new(|s| {
        s.limits.per_caller_rps = 1;
        s.limits.per_caller_burst = 3;
    })
    .await;
    let app = &fixture.app;
    let token = fixture.jwt(Algorithm::HS256, USER, now() + 600);
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let response = app
            .client
            .get(app.url("/v1/users/7/summary"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("an answer");
        statuses.push(response.status().as_u16());
        last = Some(response);
    }
    // Four requests in well under a second: the burst of 3, then one refused (a
    // token refilled in between would make it 4 × 200, so allow that only if the
    // machine was stalled for over a second).
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    let last = last.expect("four answers");
    if statuses[3] == 429 {
        let retry_after: u64 = last.headers()["retry-after"]
            .to_str()
            .expect("ASCII")
            .parse()
            .expect("whole seconds");
        assert!((1..=2).contains(&retry_after), "{retry_after}");
        let body: Value = last.json().await.expect("a problem");
        assert_eq!(
            body["type"],
            "https://readstate.dev/problems/too-many-requests"
        );
        // The read key has a bucket of its own.
        let metrics = app
            .client
            .get(app.url("/metrics"))
            .bearer_auth(&fixture.keys["read"])
            .send()
            .await
            .expect("an answer");
        assert_eq!(metrics.status(), StatusCode::OK);
        let text = metrics.text().await.expect("text");
        assert!(
            metric(&text, "readstate_rate_limited_total").is_some_and(|c| c >= 1.0),
            "{text}"
        );
    }
    // Over gRPC the same bucket answers RESOURCE_EXHAUSTED with the wait.
    let mut client = crate::grpc_transport::Grpc::new(app.grpc_addr).client();
    let mut refused = None;
    for _ in 0..5 {
        if let Err(status) =
            call_grpc(&mut client, "GetSummary", Some(&format!("Bearer {token}"))).await
        {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("the bucket runs dry within 5 calls");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    use tonic_types::StatusExt;
    assert!(status.get_details_retry_info().is_some(), "{status:?}");
}

#[tokio::test]
async fn monitoring_needs_the_read_scope_and_health_does_not() {
    let fixture = Fixture::new(|_| {}).await;
    let app = &fixture.app;
    for path in ["/metrics", "/dashboard/history"] {
        assert_eq!(
            app.get(path, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        for (scope, status) in [("read", StatusCode::OK), ("write", StatusCode::FORBIDDEN)] {
            let reply = app
                .raw(
                    Method::GET,
                    path,
                    &[("authorization", &format!("Bearer {}", fixture.keys[scope]))],
                    "",
                )
                .await;
            assert_eq!(reply.0, status, "{path} with the {scope} key");
        }
        let user = fixture.jwt(Algorithm::HS256, USER, now() + 600);
        let reply = app
            .raw(
                Method::GET,
                path,
                &[("authorization", &format!("Bearer {user}"))],
                "",
            )
            .await;
        assert_eq!(reply.0, StatusCode::FORBIDDEN, "{path} with a user token");
    }
    // The page shells hold no data and stay public; so do health and the document.
    for path in ["/", "/docs", "/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(app.get(path, None).await.0, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn the_event_stream_takes_the_token_from_the_query_for_browsers() {
    let fixture = Fixture::new(|_| {}).await;
    let app = &fixture.app;
    let own = fixture.jwt(Algorithm::HS256, USER, now() + 600);
    let other = fixture.jwt(Algorithm::HS256, OTHER_USER, now() + 600);
    let open = |query: String| {
        let url = app.url(&format!("/v1/users/7/events{query}"));
        async move {
            app.client
                .get(url)
                .send()
                .await
                .expect("an answer")
                .status()
        }
    };
    assert_eq!(open(format!("?access_token={own}")).await, StatusCode::OK);
    assert_eq!(
        open(format!("?access_token={other}")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        open("?access_token=nope".to_owned()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(open(String::new()).await, StatusCode::UNAUTHORIZED);
    // Other routes do not read it.
    let summary = app
        .client
        .get(app.url(&format!("/v1/users/7/summary?access_token={own}")))
        .send()
        .await
        .expect("an answer");
    assert_eq!(summary.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_documented_401_and_429_examples_are_real_answers() {
    let fixture = Fixture::new(|s| {
        s.limits.per_caller_rps = 1;
        s.limits.per_caller_burst = 1;
    })
    .await;
    let app = &fixture.app;
    let doc = app.get("/openapi.json", None).await.2;
    let example = |status: &str| {
        doc["paths"]["/v1/users/{user_id}/summary"]["get"]["responses"][status]["content"]
            ["application/problem+json"]["example"]
            .clone()
    };
    let missing = app.get("/v1/users/7/summary", None).await;
    assert_eq!(missing.0, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.2, example("401"));
    assert_eq!(missing.1["www-authenticate"], "Bearer realm=\"readstate\"");

    let key = format!("Bearer {}", fixture.keys["read"]);
    let mut limited = None;
    for _ in 0..5 {
        let reply = app
            .raw(
                Method::GET,
                "/v1/users/7/summary",
                &[("authorization", &key)],
                "",
            )
            .await;
        if reply.0 == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(reply);
            break;
        }
    }
    let limited = limited.expect("a burst of 1 runs dry within 5 requests");
    assert_eq!(limited.2, example("429"));
    assert_eq!(limited.1["retry-after"], "1");
}
