//! Settings: compiled defaults, then a TOML file, then `READSTATE_` environment variables.
//!
//! Loading is a pure function ([`load`]) over the file contents and an environment map, so tests
//! never touch the process environment. [`load_from`] is the thin wrapper the binary uses.
//!
//! Environment variables use `__` between levels: `READSTATE_HTTP__ADDR` sets `http.addr`,
//! `READSTATE_CACHE__MAX_BYTES=64MiB` sets `cache.max_bytes`. Values are given as strings and
//! converted to the key's type (numbers, byte sizes, enums, addresses).
//! `READSTATE_CONFIG` is the CLI's config-file path and is not a setting.
//!
//! `DATABASE_URL` (the name most tooling uses) sets `storage.url` when neither the file
//! nor `READSTATE_STORAGE__URL` does.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::secret::Secret;

/// Prefix of every environment variable that sets a key.
pub const ENV_PREFIX: &str = "READSTATE_";

/// Environment variable holding the config-file path (read by the CLI, not a setting).
pub const CONFIG_PATH_ENV: &str = "READSTATE_CONFIG";

/// Environment variable that sets `storage.url` when nothing else does.
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";

/// Separator between levels in environment variable names.
const ENV_SPLIT: &str = "__";

/// Metadata name of the environment layer, used to recognise it in errors.
const ENV_SOURCE_NAME: &str = "environment variable";

/// Upper bound for `state.unread_cap` and `state.mention_cap`.
pub const MAX_CAP: u32 = 10_000;

/// The whole configuration tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// HTTP/JSON API server.
    pub http: HttpSettings,
    /// Durable storage and the commit pipeline.
    pub storage: StorageSettings,
    /// In-memory cache of users and channels.
    pub cache: CacheSettings,
    /// Admission control and request size limits.
    pub limits: LimitsSettings,
    /// Derived read-state fields.
    pub state: StateSettings,
    /// Logging.
    pub log: LogSettings,
    /// Graceful shutdown.
    pub shutdown: ShutdownSettings,
    /// gRPC server (`readstate.v1.ReadStates`, health, reflection).
    pub grpc: GrpcSettings,
    /// Live change streams (`/v1/users/{id}/events`).
    pub events: EventsSettings,
    /// NATS JetStream ingest and change publishing.
    pub nats: NatsSettings,
    /// Who may call the API: API keys for services, JWTs for end users.
    pub auth: AuthSettings,
}

/// `[http]`: the HTTP/JSON API server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Listen address; port 0 binds a free port.
    pub addr: SocketAddr,
    /// Whole-request timeout in milliseconds.
    pub request_timeout_ms: u64,
    /// Time a connection has to send its request head, counted from the accept (a
    /// connection that sends nothing is closed), in milliseconds.
    pub header_read_timeout_ms: u64,
    /// Largest accepted request body.
    pub max_body_bytes: ByteSize,
    /// Time a request has to deliver its whole body once its handler starts reading
    /// it, in milliseconds: a body that stops short of its `Content-Length` gets 400
    /// `invalid-input` (`field`: `body`) after this, not 503 after the request
    /// timeout. At most `request_timeout_ms`.
    pub body_read_timeout_ms: u64,
    /// Origins (`https://app.example`) whose browser pages may call the API besides
    /// the server's own: they get CORS headers, and every other origin's requests
    /// are refused with 403. Empty (the default): only the server's own pages.
    pub cors_origins: Vec<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            request_timeout_ms: 10_000,
            header_read_timeout_ms: 5_000,
            max_body_bytes: ByteSize::mib(1),
            body_read_timeout_ms: 5_000,
            cors_origins: Vec::new(),
        }
    }
}

impl HttpSettings {
    /// `http.request_timeout_ms` as a [`Duration`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `http.body_read_timeout_ms` as a [`Duration`].
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }

    /// `http.header_read_timeout_ms` as a [`Duration`].
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
}

/// When a write is acknowledged relative to being durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledge only after the write is committed to storage.
    #[default]
    Sync,
    /// Acknowledge once applied in memory; flushed to storage shortly after.
    Async,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sync => "sync",
            Self::Async => "async",
        })
    }
}

/// Where a write becomes durable (`storage.commit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitMode {
    /// `log` for SQLite, `direct` for PostgreSQL.
    #[default]
    Auto,
    /// An append-only commit log in `storage.log_dir`, fsynced per group; the database
    /// is written by background checkpoints. One node only.
    Log,
    /// Group-committed database transactions; several nodes may share the database.
    Direct,
}

impl fmt::Display for CommitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Log => "log",
            Self::Direct => "direct",
        })
    }
}

/// `[storage]`: durable storage and the commit pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// Database URL: `sqlite://PATH` (embedded, single node) or `postgres://...` /
    /// `postgresql://...` (shared, several nodes). When neither the file nor
    /// `READSTATE_STORAGE__URL` sets it, `DATABASE_URL` is used if set. A [`Secret`]:
    /// its password is never shown (`check-config` prints `user:***@`).
    pub url: Secret,
    /// `sync` or `async` acknowledgement of writes.
    pub durability: Durability,
    /// Longest wait before a pending batch is committed, in milliseconds.
    pub flush_interval_ms: u64,
    /// Most operations committed in one transaction.
    pub max_batch: usize,
    /// Most queued, uncommitted storage writes; beyond it writes answer 503 (back pressure).
    pub max_unflushed: usize,
    /// Longest wait for a commit before the request fails, in milliseconds.
    pub commit_timeout_ms: u64,
    /// Timeout of a single storage query, in milliseconds.
    pub timeout_ms: u64,
    /// Number of SQLite reader connections.
    pub sqlite_readers: u32,
    /// Most PostgreSQL connections (loads, read receipts and the commit writer share them).
    pub pool_size: u32,
    /// PostgreSQL `statement_timeout` of every session, in milliseconds.
    pub statement_timeout_ms: u64,
    /// `log`, `direct` or `auto` (`log` for SQLite, `direct` for PostgreSQL).
    pub commit: CommitMode,
    /// Directory of the commit log; empty: `wal/` beside the SQLite file, or
    /// `readstate-data/wal` for PostgreSQL.
    pub log_dir: String,
    /// A commit log segment is closed once it passes this size.
    pub log_segment_bytes: ByteSize,
    /// Longest time logged writes wait before a checkpoint writes them to the
    /// database, in milliseconds.
    pub checkpoint_interval_ms: u64,
    /// A checkpoint starts early once this many logged writes wait for it.
    pub checkpoint_writes: usize,
    /// SQLite with the commit log: how fast, per second, a checkpoint that is not
    /// behind writes the database file and its WAL, so that the device never gets a
    /// burst that commit-log syncs wait for; 0: as fast as it can.
    pub checkpoint_write_rate: ByteSize,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            url: Secret::new("sqlite://readstate-data/readstate.db"),
            durability: Durability::Sync,
            flush_interval_ms: 50,
            max_batch: 4096,
            max_unflushed: 1_000_000,
            commit_timeout_ms: 5_000,
            timeout_ms: 5_000,
            sqlite_readers: 4,
            pool_size: 16,
            statement_timeout_ms: 5_000,
            commit: CommitMode::Auto,
            log_dir: String::new(),
            log_segment_bytes: ByteSize::mib(64),
            checkpoint_interval_ms: 10_000,
            checkpoint_writes: 500_000,
            checkpoint_write_rate: ByteSize::mib(128),
        }
    }
}

impl StorageSettings {
    /// `storage.flush_interval_ms` as a [`Duration`].
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    /// `storage.commit_timeout_ms` as a [`Duration`].
    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.commit_timeout_ms)
    }

    /// `storage.timeout_ms` as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// `storage.checkpoint_interval_ms` as a [`Duration`].
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }

    /// Whether writes go through the commit log (`auto` resolved by backend).
    pub fn uses_log(&self) -> bool {
        match self.commit {
            CommitMode::Log => true,
            CommitMode::Direct => false,
            CommitMode::Auto => !is_postgres_url(self.url.expose()),
        }
    }

    /// The commit log's directory (`storage.log_dir`, or its default).
    pub fn log_dir(&self) -> PathBuf {
        if !self.log_dir.is_empty() {
            return PathBuf::from(&self.log_dir);
        }
        let sqlite_file = self
            .url
            .expose()
            .strip_prefix("sqlite://")
            .or_else(|| self.url.expose().strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or(rest));
        match sqlite_file {
            Some(file) if !file.is_empty() && file != ":memory:" => Path::new(file)
                .parent()
                .map_or_else(|| PathBuf::from("wal"), |dir| dir.join("wal")),
            _ => PathBuf::from("readstate-data/wal"),
        }
    }

    /// `storage.statement_timeout_ms` as a [`Duration`].
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }

    /// Whether `storage.url` names a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        is_postgres_url(self.url.expose())
    }
}

/// Whether `url` is a `postgres://` or `postgresql://` URL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `[cache]`: the in-memory cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Memory budget of the cache.
    pub max_bytes: ByteSize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            max_bytes: ByteSize::mib(512),
        }
    }
}

/// `[limits]`: admission control and request size limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSettings {
    /// In-flight requests above which a warning is logged and a counter raised.
    pub soft_in_flight: usize,
    /// In-flight requests above which every request is shed.
    pub hard_in_flight: usize,
    /// Most operations in one batch request.
    pub max_batch_ops: usize,
    /// Most mentions in one message.
    pub max_mentions: usize,
    /// Largest page size of list endpoints.
    pub max_page: usize,
    /// Most users in one summary request.
    pub max_summary_users: usize,
    /// Most channels in one channel filter.
    pub max_channels_filter: usize,
    /// Most open HTTP connections; beyond it a new connection is accepted and closed
    /// at once (and counted), so a flood cannot use up the file descriptors.
    pub max_connections: usize,
    /// Requests per second each caller (API key, or JWT subject) may make on average;
    /// beyond it (and the burst) 429 + `Retry-After`. 0 turns the limit off. Callers
    /// are only told apart when auth is on.
    pub per_caller_rps: u32,
    /// Requests a caller may make at once above its rate (the bucket size).
    pub per_caller_burst: u32,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            soft_in_flight: 512,
            hard_in_flight: 1024,
            max_batch_ops: 1000,
            max_mentions: 100,
            max_page: 1000,
            max_summary_users: 1000,
            max_channels_filter: 1000,
            max_connections: 10_000,
            per_caller_rps: 1_000,
            per_caller_burst: 2_000,
        }
    }
}

/// `[state]`: derived read-state fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSettings {
    /// Unread counts above this are reported as capped.
    pub unread_cap: u32,
    /// Mention counts above this are reported as capped.
    pub mention_cap: u32,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            unread_cap: 99,
            mention_cap: 99,
        }
    }
}

/// Log output format.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable when stderr is a terminal, JSON otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Json => "json",
            Self::Pretty => "pretty",
        })
    }
}

/// `[log]`: logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Output format.
    pub format: LogFormat,
    /// `tracing` filter directives; `RUST_LOG` overrides it when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            filter: "info".to_owned(),
        }
    }
}

/// `[shutdown]`: graceful shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// Longest wait for in-flight work to drain, in milliseconds.
    pub grace_period_ms: u64,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        Self {
            grace_period_ms: 30_000,
        }
    }
}

impl ShutdownSettings {
    /// `shutdown.grace_period_ms` as a [`Duration`].
    pub fn grace_period(&self) -> Duration {
        Duration::from_millis(self.grace_period_ms)
    }
}

/// `[grpc]`: the gRPC server (`readstate.v1.ReadStates`, health, reflection).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSettings {
    /// Listen address; unset disables the gRPC server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
}

/// `[auth]`: who may call the API. With neither API keys nor a JWT key configured,
/// auth is off: allowed on loopback addresses only (see [`AuthSettings::is_on`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Serve without auth on a non-loopback address (a warning at every start).
    pub allow_unauthenticated: bool,
    /// Service keys, sent as `Authorization: Bearer <key>`; only their SHA-256 is
    /// configured (`readstate api-key new` makes one).
    pub api_keys: Vec<ApiKeySettings>,
    /// End-user JSON Web Tokens, sent as `Authorization: Bearer <jwt>`.
    pub jwt: JwtSettings,
}

impl AuthSettings {
    /// Whether any credential is configured: then every `/v1` request (and gRPC call)
    /// needs one.
    pub fn is_on(&self) -> bool {
        !self.api_keys.is_empty() || self.jwt.is_configured()
    }
}

/// One entry of `auth.api_keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// A name for logs and metrics (never the key).
    pub name: String,
    /// The key's SHA-256, 64 hex digits.
    pub key_sha256: String,
    /// What the key may do: `read`, `write`, `admin`.
    pub scopes: Vec<String>,
}

/// `[auth.jwt]`: end-user tokens. `sub` is the user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// The HS256 shared secret (at least 32 bytes); unset: no HS256 tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<Secret>,
    /// PEM public keys (RSA for RS256, P-256 for ES256); each token is checked
    /// against the keys of its `alg`.
    pub public_key_files: Vec<PathBuf>,
    /// When set, a token's `iss` must be this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When set, a token's `aud` must include this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            hs256_secret: None,
            public_key_files: Vec::new(),
            issuer: None,
            audience: None,
            leeway_s: 30,
        }
    }
}

impl JwtSettings {
    /// Whether any JWT key is configured.
    pub fn is_configured(&self) -> bool {
        self.hs256_secret.is_some() || !self.public_key_files.is_empty()
    }
}

/// `[events]`: live change streams (Server-Sent Events and WebSocket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// How many recent changes (of all users) are kept so that a client can resume
    /// with `Last-Event-ID`; an older id gets a `resync` event instead.
    pub replay_window: usize,
    /// Changes queued per subscriber; a subscriber that falls this far behind gets a
    /// `resync` event instead of the backlog.
    pub subscriber_buffer: usize,
    /// Interval between heartbeats on an idle stream, in milliseconds.
    pub heartbeat_ms: u64,
    /// Most concurrent subscribers; more are answered 503.
    pub max_subscribers: usize,
}

impl Default for EventsSettings {
    fn default() -> Self {
        Self {
            replay_window: 65_536,
            subscriber_buffer: 256,
            heartbeat_ms: 15_000,
            max_subscribers: 10_000,
        }
    }
}

impl EventsSettings {
    /// `events.heartbeat_ms` as a [`Duration`].
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}

/// `[nats]`: NATS JetStream ingest and change publishing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// Server URL; unset disables NATS entirely. A [`Secret`]: credentials in it
    /// (`nats://user:password@host`) are never shown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// Consume events from JetStream (needs `nats.url`).
    pub ingest: bool,
    /// The JetStream stream to consume; created with `nats.subjects` when missing.
    pub stream: String,
    /// Subjects of the stream when readstate creates it.
    pub subjects: Vec<String>,
    /// Name of the durable pull consumer (shared by every node: each event is
    /// applied by one of them).
    pub consumer: String,
    /// Most events fetched and committed together.
    pub batch: usize,
    /// Fetch loops running at once (more than 1 may apply events out of stream order).
    pub concurrency: usize,
    /// How long JetStream waits for an ack before redelivering, in milliseconds.
    pub ack_wait_ms: u64,
    /// Replicas of the stream when readstate creates it (1 for a single server, 3
    /// on a JetStream cluster); an existing stream is used as it is.
    pub replicas: usize,
    /// Publish every read-state change to `<nats.changes_prefix>.<user_id>`.
    pub publish_changes: bool,
    /// Subject prefix of published changes.
    pub changes_prefix: String,
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            url: None,
            ingest: true,
            stream: "READSTATE".to_owned(),
            subjects: vec!["readstate.events.>".to_owned()],
            consumer: "readstate".to_owned(),
            batch: 256,
            concurrency: 1,
            ack_wait_ms: 30_000,
            replicas: 1,
            publish_changes: false,
            changes_prefix: "readstate.changes".to_owned(),
        }
    }
}

impl NatsSettings {
    /// `nats.ack_wait_ms` as a [`Duration`].
    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }
}

mod bytesize;
mod load;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod validate;

pub use bytesize::ByteSize;
pub use load::{ConfigError, load, load_from};
