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

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

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
    /// gRPC server (reserved: accepted, not served yet).
    pub grpc: GrpcSettings,
    /// Live change streams (`/v1/users/{id}/events`).
    pub events: EventsSettings,
    /// NATS JetStream ingest and change publishing.
    pub nats: NatsSettings,
}

/// `[http]`: the HTTP/JSON API server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Listen address; port 0 binds a free port.
    pub addr: SocketAddr,
    /// Whole-request timeout in milliseconds.
    pub request_timeout_ms: u64,
    /// Timeout for reading request headers in milliseconds.
    pub header_read_timeout_ms: u64,
    /// Largest accepted request body.
    pub max_body_bytes: ByteSize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            request_timeout_ms: 10_000,
            header_read_timeout_ms: 5_000,
            max_body_bytes: ByteSize::mib(1),
        }
    }
}

impl HttpSettings {
    /// `http.request_timeout_ms` as a [`Duration`].
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
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
    /// `READSTATE_STORAGE__URL` sets it, `DATABASE_URL` is used if set.
    pub url: String,
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
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://readstate-data/readstate.db".to_owned(),
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
            CommitMode::Auto => !is_postgres_url(&self.url),
        }
    }

    /// The commit log's directory (`storage.log_dir`, or its default).
    pub fn log_dir(&self) -> PathBuf {
        if !self.log_dir.is_empty() {
            return PathBuf::from(&self.log_dir);
        }
        let sqlite_file = self
            .url
            .strip_prefix("sqlite://")
            .or_else(|| self.url.strip_prefix("sqlite:"))
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
        is_postgres_url(&self.url)
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

/// `[grpc]`: gRPC server (reserved: accepted, not served yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSettings {
    /// Listen address; unset disables the gRPC server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<SocketAddr>,
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
    /// Server URL; unset disables NATS entirely.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
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

/// A number of bytes, written as an integer or with a unit (`512MiB`, `1 GB`, `1048576`).
///
/// Units are case-insensitive: `B`; `KB`, `MB`, `GB`, `TB` (powers of 1000); `KiB`, `MiB`,
/// `GiB`, `TiB` (powers of 1024).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1000),
    ("mb", 1000 * 1000),
    ("gb", 1000 * 1000 * 1000),
    ("tb", 1000 * 1000 * 1000 * 1000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

impl ByteSize {
    /// `n` bytes.
    pub const fn b(n: u64) -> Self {
        Self(n)
    }

    /// `n` KiB (1024 bytes each).
    pub const fn kib(n: u64) -> Self {
        Self(n << 10)
    }

    /// `n` MiB (1024² bytes each).
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    /// `n` GiB (1024³ bytes each).
    pub const fn gib(n: u64) -> Self {
        Self(n << 30)
    }

    /// The number of bytes.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The number of bytes as `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// Parses `"512MiB"`, `"512 mib"`, `"1GB"` or `"1048576"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(format!(
                "invalid byte size {text:?}: expected a number with an optional unit such as `512MiB`"
            ));
        }
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("invalid byte size {text:?}: number is too large"))?;
        let unit = unit.trim_start();
        let multiplier = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| unit.eq_ignore_ascii_case(name))
                .map(|&(_, m)| m)
                .ok_or_else(|| {
                    format!(
                        "invalid byte size {text:?}: unknown unit {unit:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
                    )
                })?
        };
        number
            .checked_mul(multiplier)
            .map(Self)
            .ok_or_else(|| format!("invalid byte size {text:?}: too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the value exactly, or plain bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (suffix, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            let unit = 1u64 << shift;
            if n >= unit && n.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 >= 1024 && self.0.is_multiple_of(1024) {
            serializer.collect_str(self)
        } else {
            serializer.serialize_u64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ByteSizeVisitor;

        impl Visitor<'_> for ByteSizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count or a size with a unit such as \"512MiB\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_u128<E: de::Error>(self, v: u128) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("byte size {v} is too large")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("byte size must not be negative, got {v}")))
            }

            fn visit_i128<E: de::Error>(self, v: i128) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("byte size {v} is out of range")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

/// A configuration that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {cause}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why it could not be read.
        cause: std::io::Error,
    },
    /// A key is unknown, has a value of the wrong type, or fails validation.
    #[error("{}", describe(key, message, origin.as_deref()))]
    Invalid {
        /// Dotted key path such as `cache.max_bytes`; empty when the whole source is malformed.
        key: String,
        /// What is wrong, in lowercase without a trailing period.
        message: String,
        /// Where the value came from, e.g. `environment variable READSTATE_CACHE__MAX_BYTES`.
        origin: Option<String>,
    },
}

impl ConfigError {
    /// The dotted key path the error is about, when it concerns one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } if !key.is_empty() => Some(key),
            _ => None,
        }
    }

    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
            origin: None,
        }
    }
}

fn describe(key: &str, message: &str, origin: Option<&str>) -> String {
    match (key.is_empty(), origin) {
        (false, Some(origin)) => format!("{key}: {message} (from {origin})"),
        (false, None) => format!("{key}: {message}"),
        (true, Some(origin)) => format!("{origin}: {message}"),
        (true, None) => message.to_owned(),
    }
}

/// Loads settings from compiled defaults, the TOML `file_contents` (if any) and the
/// `READSTATE_`-prefixed pairs in `env`, in that order of precedence, then validates them.
pub fn load(
    file_contents: Option<&str>,
    env: &[(String, String)],
) -> Result<Settings, ConfigError> {
    load_layers(file_contents.map(|c| (c, "config file".to_owned())), env)
}

/// Reads the TOML file at `path` (if any) and the process environment, then calls [`load`].
pub fn load_from(path: Option<&Path>) -> Result<Settings, ConfigError> {
    let contents = match path {
        Some(path) => Some(
            std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
                path: path.to_owned(),
                cause,
            })?,
        ),
        None => None,
    };
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let file = match (contents.as_deref(), path) {
        (Some(contents), Some(path)) => Some((contents, format!("config file {}", path.display()))),
        _ => None,
    };
    load_layers(file, &env)
}

fn load_layers(
    file: Option<(&str, String)>,
    env: &[(String, String)],
) -> Result<Settings, ConfigError> {
    let mut figment = Figment::new();
    if let Some((contents, name)) = file {
        figment = figment.merge(FileLayer::new(name, contents));
    }
    figment = figment.merge(EnvLayer::from_pairs(env)?);
    if figment.find_value("storage.url").is_err()
        && let Some((_, url)) = env
            .iter()
            .find(|(name, url)| name.trim() == DATABASE_URL_ENV && !url.trim().is_empty())
    {
        figment = figment.merge(DatabaseUrlLayer { url: url.clone() });
    }

    let settings: Settings = figment
        .extract_lossy()
        .map_err(|e| from_figment(&figment, e))?;
    settings.validate().map_err(|e| with_origin(&figment, e))?;
    Ok(settings)
}

/// The TOML layer, named after its file so errors say where a bad value came from.
struct FileLayer {
    name: String,
    contents: String,
}

impl FileLayer {
    fn new(name: String, contents: &str) -> Self {
        Self {
            name,
            contents: contents.to_owned(),
        }
    }
}

impl Provider for FileLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Toml::string(&self.contents).data()
    }
}

/// `DATABASE_URL` as `storage.url`, named after its variable so errors say where the
/// value came from.
struct DatabaseUrlLayer {
    url: String,
}

impl Provider for DatabaseUrlLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("{ENV_SOURCE_NAME} {DATABASE_URL_ENV}"))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        insert_path(
            &mut dict,
            &["storage", "url"],
            Value::from(self.url.clone()),
        );
        Ok(Profile::Default.collect(dict))
    }
}

/// The environment layer built from explicit pairs instead of the process environment.
struct EnvLayer {
    dict: Dict,
}

impl EnvLayer {
    fn from_pairs(env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut dict = Dict::new();
        for (name, value) in env {
            let name = name.trim();
            let Some(rest) = strip_prefix_ignore_case(name, ENV_PREFIX) else {
                continue;
            };
            if name.eq_ignore_ascii_case(CONFIG_PATH_ENV) {
                continue;
            }
            let key = rest.to_ascii_lowercase();
            let path: Vec<&str> = key.split(ENV_SPLIT).collect();
            if path.iter().any(|segment| segment.is_empty()) {
                return Err(ConfigError::Invalid {
                    key: String::new(),
                    message: "malformed name: use `__` only between key levels, e.g. READSTATE_HTTP__ADDR".to_owned(),
                    origin: Some(format!("{ENV_SOURCE_NAME} {name}")),
                });
            }
            // Values stay strings (`extract_lossy` turns them into numbers where one is
            // expected), except `[...]`, a list such as `["a.>", "b.>"]`.
            let parsed = match value.trim_start().starts_with('[') {
                true => value
                    .parse::<Value>()
                    .ok()
                    .filter(|v| v.as_array().is_some()),
                false => None,
            };
            insert_path(
                &mut dict,
                &path,
                parsed.unwrap_or_else(|| Value::from(value.clone())),
            );
        }
        Ok(Self { dict })
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn insert_path(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

fn env_var_name(keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
    format!("{ENV_PREFIX}{}", keys.join(ENV_SPLIT))
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_SOURCE_NAME)
            .interpolater(|_: &Profile, keys: &[&str]| env_var_name(keys))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Converts the first figment error into a [`ConfigError`] that names the key path.
fn from_figment(figment: &Figment, error: figment::Error) -> ConfigError {
    let Some(error) = error.into_iter().next() else {
        return ConfigError::invalid("", "invalid configuration");
    };
    let mut path = error.path.clone();
    let message = match &error.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            if path.last() != Some(field) {
                path.push(field.clone());
            }
            if expected.is_empty() {
                "unknown key".to_owned()
            } else {
                format!("unknown key, expected one of: {}", expected.join(", "))
            }
        }
        figment::error::Kind::UnknownVariant(value, expected) => {
            format!(
                "unknown value `{value}`, expected one of: {}",
                expected.join(", ")
            )
        }
        kind => kind.to_string().trim_end().to_owned(),
    };
    let key = path.join(".");
    let origin = origin_of(figment, &key).or_else(|| {
        error.metadata.as_ref().map(|md| {
            let keys: Vec<&str> = path.iter().map(String::as_str).collect();
            describe_source(md, &keys)
        })
    });
    ConfigError::Invalid {
        key,
        message,
        origin,
    }
}

fn with_origin(figment: &Figment, error: ConfigError) -> ConfigError {
    match error {
        ConfigError::Invalid {
            key,
            message,
            origin: None,
        } => {
            let origin = origin_of(figment, &key);
            ConfigError::Invalid {
                key,
                message,
                origin,
            }
        }
        other => other,
    }
}

fn origin_of(figment: &Figment, key: &str) -> Option<String> {
    if key.is_empty() {
        return None;
    }
    let md = figment.find_metadata(key)?;
    let keys: Vec<&str> = key.split('.').collect();
    Some(describe_source(md, &keys))
}

fn describe_source(md: &Metadata, keys: &[&str]) -> String {
    if md.name == ENV_SOURCE_NAME {
        format!(
            "{ENV_SOURCE_NAME} {}",
            md.interpolate(&Profile::Default, keys)
        )
    } else {
        md.name.to_string()
    }
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

        let storage = &self.storage;
        if !(storage.url.starts_with("sqlite:") || is_postgres_url(&storage.url)) {
            return Err(ConfigError::invalid(
                "storage.url",
                "unsupported database URL: use sqlite://PATH, postgres://... or postgresql://...",
            ));
        }
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
            let url = url.trim();
            if url.is_empty() {
                return Err(ConfigError::invalid("nats.url", "must not be empty"));
            }
            if let Some((scheme, _)) = url.split_once("://")
                && !["nats", "tls", "ws", "wss"].contains(&scheme)
            {
                return Err(ConfigError::invalid(
                    "nats.url",
                    format!("unsupported scheme {scheme:?} (use nats://, tls://, ws:// or wss://)"),
                ));
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
        if !valid_subject(&nats.changes_prefix, false) {
            return Err(ConfigError::invalid(
                "nats.changes_prefix",
                "must be a subject without wildcards (tokens separated by '.')",
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
        assert_eq!(s.storage.url, "sqlite://readstate-data/readstate.db");
        assert_eq!(s.storage.durability, Durability::Sync);
        assert_eq!(s.cache.max_bytes.get(), 512 * 1024 * 1024);
        assert_eq!(s.http.max_body_bytes.get(), 1024 * 1024);
        assert_eq!(s.http.request_timeout(), Duration::from_secs(10));
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
        let file = "[http]\naddr = \"0.0.0.0:9000\"\n[storage]\ndurability = \"async\"\n";
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
        assert_eq!(s.nats.url.as_deref(), Some("nats://localhost:4222"));
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
            assert_eq!(s.storage.url, url);
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
        assert_eq!(s.storage.url, pg);

        let s = load(
            None,
            &env(&[
                ("DATABASE_URL", pg),
                ("READSTATE_STORAGE__URL", "sqlite://x.db"),
            ]),
        )
        .unwrap();
        assert_eq!(s.storage.url, "sqlite://x.db");

        let s = load(
            Some("[storage]\nurl = \"sqlite://file.db\"\n"),
            &env(&[("DATABASE_URL", pg)]),
        )
        .unwrap();
        assert_eq!(s.storage.url, "sqlite://file.db");

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
        let example = include_str!("../config/readstate.example.toml");
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
}
