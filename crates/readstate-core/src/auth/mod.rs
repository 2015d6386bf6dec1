//! Who may call the API, for every transport: HTTP (`Authorization: Bearer`), gRPC
//! (the `authorization` metadata) and any later one ask [`Access::check`] with the
//! bearer token they received, the [`Operation`] the request is and the user it names.
//!
//! - **API keys** ([`keys`]) are for services: each has scopes (`read`, `write`,
//!   `admin`); only their SHA-256 is configured, and a presented key is compared in
//!   constant time.
//! - **JWTs** ([`jwt`]) are for end users: `sub` is the user id, and such a caller may
//!   only read its own read states, ack, mark unread, ack-all and subscribe, for its
//!   own user ([`Operation::for_end_users`]).
//! - With neither configured, auth is off ([`Caller::Anonymous`]): the configuration
//!   refuses that on a non-loopback address unless `auth.allow_unauthenticated`.
//! - Each identified caller has a request-rate limit (`limits.per_caller_rps`,
//!   `limits.per_caller_burst`); beyond it, 429.
//!
//! NATS ingest is trusted as configured (its subjects are the operator's concern) and
//! never comes here.

pub mod jwt;
pub mod keys;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use metrics::counter;

use crate::api::problem::{Problem, ProblemKind};
use crate::config::{AuthSettings, LimitsSettings};
use crate::domain::{Op, UserId};

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every read: read states, summaries, readers, events, the dashboard, `/metrics`.
    Read,
    /// Every write: messages, ack, unread, join, leave, ack-all, batch.
    Write,
    /// Deleting channels, and any later admin route.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    /// The scope's name in configuration (`read`, `write`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Read => 1,
            Scope::Write => 2,
            Scope::Admin => 4,
        }
    }
}

/// A set of [`Scope`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The set with `scope` added.
    pub fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::default(), Scopes::with)
    }
}

/// Every operation of the API, whatever the transport carries it: the unit access
/// rules are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A message was posted (`POST /v1/channels/{id}/messages`).
    MessageCreated,
    /// A message was deleted.
    MessageDeleted,
    /// A channel and every read state in it are deleted.
    DeleteChannel,
    /// Who has read a message.
    Readers,
    /// A user joins a channel.
    Join,
    /// A user leaves a channel.
    Leave,
    /// One read state of a user.
    GetReadState,
    /// A user's read states.
    GetReadStates,
    /// A user acks a message.
    Ack,
    /// A user marks a message unread.
    MarkUnread,
    /// A user acks every channel.
    AckAll,
    /// A user's unread summary.
    GetSummary,
    /// The summaries of many users at once.
    GetSummaries,
    /// Many operations in one request (each op is checked too: [`Access::authorize_ops`]).
    Batch,
    /// A user's live change stream.
    Subscribe,
    /// The dashboard and `/metrics`.
    Monitor,
    /// Set a channel's parent and group.
    SetChannel,
    /// A channel's metadata.
    GetChannel,
    /// Set a read state's notification settings.
    Settings,
    /// A user's summary per group.
    GetGroups,
    /// A user's unread threads under a channel.
    GetThreads,
    /// Delete everything stored about a user.
    DeleteUser,
    /// Everything stored about a user.
    ExportUser,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 23] = [
        Operation::MessageCreated,
        Operation::MessageDeleted,
        Operation::DeleteChannel,
        Operation::Readers,
        Operation::Join,
        Operation::Leave,
        Operation::GetReadState,
        Operation::GetReadStates,
        Operation::Ack,
        Operation::MarkUnread,
        Operation::AckAll,
        Operation::GetSummary,
        Operation::GetSummaries,
        Operation::Batch,
        Operation::Subscribe,
        Operation::Monitor,
        Operation::SetChannel,
        Operation::GetChannel,
        Operation::Settings,
        Operation::GetGroups,
        Operation::GetThreads,
        Operation::DeleteUser,
        Operation::ExportUser,
    ];

    /// The scope an API key needs for it.
    pub fn scope(self) -> Scope {
        match self {
            Operation::Readers
            | Operation::GetReadState
            | Operation::GetReadStates
            | Operation::GetSummary
            | Operation::GetSummaries
            | Operation::Subscribe
            | Operation::Monitor
            | Operation::GetChannel
            | Operation::GetGroups
            | Operation::GetThreads => Scope::Read,
            Operation::MessageCreated
            | Operation::MessageDeleted
            | Operation::Join
            | Operation::Leave
            | Operation::Ack
            | Operation::MarkUnread
            | Operation::AckAll
            | Operation::Batch
            | Operation::SetChannel
            | Operation::Settings => Scope::Write,
            Operation::DeleteChannel | Operation::DeleteUser | Operation::ExportUser => {
                Scope::Admin
            }
        }
    }

    /// Whether an end user (a JWT) may do it, for its own user only.
    pub fn for_end_users(self) -> bool {
        matches!(
            self,
            Operation::GetReadState
                | Operation::GetReadStates
                | Operation::GetSummary
                | Operation::Ack
                | Operation::MarkUnread
                | Operation::AckAll
                | Operation::Subscribe
                | Operation::Settings
                | Operation::GetGroups
                | Operation::GetThreads
        )
    }

    /// The operation one op of a batch is.
    pub fn of_op(op: &Op) -> Self {
        match op {
            Op::MessageCreated { .. } => Operation::MessageCreated,
            Op::MessageDeleted { .. } => Operation::MessageDeleted,
            Op::Join { .. } => Operation::Join,
            Op::Ack { .. } => Operation::Ack,
            Op::Unread { .. } => Operation::MarkUnread,
            Op::AckAll { .. } => Operation::AckAll,
            Op::Leave { .. } => Operation::Leave,
            Op::DeleteChannel { .. } => Operation::DeleteChannel,
            Op::SetChannel { .. } => Operation::SetChannel,
            Op::Settings { .. } => Operation::Settings,
            Op::DeleteUser { .. } => Operation::DeleteUser,
        }
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Auth is off: anyone may do anything.
    Anonymous,
    /// A service, by API key.
    Service {
        /// The key's index in `auth.api_keys` (the rate limiter's key).
        index: usize,
        /// The key's configured name.
        name: Arc<str>,
        /// What it may do.
        scopes: Scopes,
    },
    /// An end user, by JWT.
    User(UserId),
}

/// Why a credential is not valid (401); the label of
/// `readstate_auth_denied_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The `Authorization` value is not `Bearer <token>`, or the token is not a JWT
    /// nor a key.
    Malformed,
    /// No configured API key has this hash.
    UnknownKey,
    /// The JWT's `alg` is not one a key is configured for (`none` included).
    WrongAlgorithm,
    /// The JWT's signature does not verify with any configured key.
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` has not come yet (beyond the leeway).
    NotYetValid,
    /// `iss` is not `auth.jwt.issuer`.
    WrongIssuer,
    /// `aud` does not include `auth.jwt.audience`.
    WrongAudience,
    /// A required claim is missing, or `sub` is not a user id.
    BadClaims,
}

impl Invalid {
    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::Malformed => "malformed",
            Invalid::UnknownKey => "unknown_key",
            Invalid::WrongAlgorithm => "wrong_algorithm",
            Invalid::BadSignature => "bad_signature",
            Invalid::Expired => "expired",
            Invalid::NotYetValid => "not_yet_valid",
            Invalid::WrongIssuer => "wrong_issuer",
            Invalid::WrongAudience => "wrong_audience",
            Invalid::BadClaims => "bad_claims",
        }
    }

    fn detail(self) -> &'static str {
        match self {
            Invalid::Malformed => {
                "the credentials are malformed: send `Authorization: Bearer <API key or JWT>`"
            }
            Invalid::UnknownKey => "the API key is not valid",
            Invalid::WrongAlgorithm => "the token's algorithm is not accepted",
            Invalid::BadSignature => "the token's signature is not valid",
            Invalid::Expired => "the token has expired",
            Invalid::NotYetValid => "the token is not valid yet (nbf)",
            Invalid::WrongIssuer => "the token's issuer is not accepted",
            Invalid::WrongAudience => "the token's audience is not accepted",
            Invalid::BadClaims => {
                "the token's claims are not valid (exp and sub, a user id, are required)"
            }
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no credentials were sent.
    Missing,
    /// 401: the credentials are not valid.
    Invalid(Invalid),
    /// 403: an API key without the scope the operation needs.
    Scope(Scope),
    /// 403: an end user on another user's data.
    OtherUser,
    /// 403: an operation end users may not do.
    NotForUsers,
    /// 429: the caller is over its rate; retry after this long.
    RateLimited(Duration),
}

impl Denied {
    /// The label of `readstate_auth_denied_total{reason}` (429s are counted by
    /// `readstate_rate_limited_total` instead).
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Invalid(invalid) => invalid.as_str(),
            Denied::Scope(_) => "scope",
            Denied::OtherUser => "other_user",
            Denied::NotForUsers => "not_for_users",
            Denied::RateLimited(_) => "rate_limited",
        }
    }

    /// Every reason label, for exporting the counter at zero.
    pub const REASONS: [&'static str; 13] = [
        "missing",
        "malformed",
        "unknown_key",
        "wrong_algorithm",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "bad_claims",
        "scope",
        "other_user",
        "not_for_users",
    ];

    /// The problem every transport answers.
    pub fn problem(&self) -> Problem {
        match self {
            Denied::Missing => Problem::new(
                ProblemKind::Unauthorized,
                "credentials are required: send `Authorization: Bearer <API key or JWT>`",
            ),
            Denied::Invalid(invalid) => Problem::new(ProblemKind::Unauthorized, invalid.detail()),
            Denied::Scope(scope) => Problem::new(
                ProblemKind::Forbidden,
                format!("this API key lacks the `{}` scope", scope.as_str()),
            ),
            Denied::OtherUser => Problem::new(
                ProblemKind::Forbidden,
                "a user token may only act on its own user",
            ),
            Denied::NotForUsers => Problem::new(
                ProblemKind::Forbidden,
                "a user token may not do this; it needs an API key",
            ),
            Denied::RateLimited(wait) => Problem::new(
                ProblemKind::TooManyRequests,
                format!(
                    "too many requests from this caller; retry in {} s",
                    retry_after_secs(*wait)
                ),
            ),
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750) of a 401 or a missing scope.
    pub fn challenge(&self) -> Option<String> {
        match self {
            Denied::Missing => Some("Bearer realm=\"readstate\"".to_owned()),
            Denied::Invalid(_) => {
                Some("Bearer realm=\"readstate\", error=\"invalid_token\"".to_owned())
            }
            Denied::Scope(scope) => Some(format!(
                "Bearer realm=\"readstate\", error=\"insufficient_scope\", scope=\"{}\"",
                scope.as_str()
            )),
            Denied::OtherUser | Denied::NotForUsers | Denied::RateLimited(_) => None,
        }
    }

    /// The problem of op `index` of a batch refused for this reason: the detail
    /// names the op, and `field` is `ops[index]`.
    pub fn problem_at(&self, index: usize) -> Problem {
        let mut problem = self.problem();
        let field = format!("ops[{index}]");
        problem.detail = format!("{field}: {}", problem.detail);
        problem.field = Some(field);
        problem
    }

    /// For a 429, the whole seconds to wait (`Retry-After`).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Denied::RateLimited(wait) => Some(retry_after_secs(*wait)),
            _ => None,
        }
    }
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The rate limiter's key: one bucket per API key and per end user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CallerKey {
    Key(usize),
    User(u64),
}

/// A configuration that cannot be served (a key file that cannot be read, a key
/// that is not one): the key path and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct AccessError {
    /// The configuration key at fault (`auth.jwt.public_key_files[0]`).
    pub key: String,
    /// Why.
    pub message: String,
}

impl AccessError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The access rules of one server: its keys, its JWT verifier and its rate limiter.
pub struct Access {
    keys: keys::ApiKeys,
    jwt: Option<jwt::Verifier>,
    limiter: Option<DefaultKeyedRateLimiter<CallerKey>>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("api_keys", &self.keys.len())
            .field("jwt", &self.jwt.is_some())
            .field("rate_limited", &self.limiter.is_some())
            .finish()
    }
}

impl Access {
    /// The rules of `auth` and the per-caller limits of `limits`; reads the JWT key
    /// files.
    ///
    /// # Errors
    /// [`AccessError`] naming the key of a bad API key entry or an unreadable or
    /// unusable JWT key.
    pub fn new(auth: &AuthSettings, limits: &LimitsSettings) -> Result<Self, AccessError> {
        let keys = keys::ApiKeys::new(&auth.api_keys)?;
        let jwt = match auth.jwt.is_configured() {
            true => Some(jwt::Verifier::new(&auth.jwt)?),
            false => None,
        };
        let limiter = match (
            NonZeroU32::new(limits.per_caller_rps),
            NonZeroU32::new(limits.per_caller_burst),
        ) {
            (Some(rps), Some(burst)) => Some(DefaultKeyedRateLimiter::keyed(
                Quota::per_second(rps).allow_burst(burst),
            )),
            (Some(_), None) => {
                return Err(AccessError::new(
                    "limits.per_caller_burst",
                    "must be > 0 when limits.per_caller_rps is",
                ));
            }
            (None, _) => None,
        };
        Ok(Self {
            keys,
            jwt,
            limiter,
            clock: DefaultClock::default(),
        })
    }

    /// Open access: auth off, no limits (tests and embedded use).
    pub fn open() -> Self {
        Self {
            keys: keys::ApiKeys::default(),
            jwt: None,
            limiter: None,
            clock: DefaultClock::default(),
        }
    }

    /// Whether credentials are required.
    pub fn is_on(&self) -> bool {
        !self.keys.is_empty() || self.jwt.is_some()
    }

    /// Everything a request needs: authenticates `bearer` (the token the transport
    /// received, `None` when none was sent), authorizes `op` on `user` (the user the
    /// request names, if it names exactly one) and counts the request against the
    /// caller's rate. Refusals are counted in the metrics.
    ///
    /// # Errors
    /// [`Denied`]: 401, 403 or 429.
    pub fn check(
        &self,
        bearer: Option<&str>,
        op: Operation,
        user: Option<UserId>,
    ) -> Result<Caller, Denied> {
        if !self.is_on() {
            return Ok(Caller::Anonymous);
        }
        let result = self
            .authenticate(bearer)
            .and_then(|caller| authorize(&caller, op, user).map(|()| caller))
            .and_then(|caller| self.admit(&caller).map(|()| caller));
        if let Err(denied) = &result {
            record(denied);
        }
        result
    }

    /// Checks every op of a batch against what `caller` may do (the batch itself was
    /// checked as [`Operation::Batch`]): an op needing a scope the key lacks refuses
    /// the whole batch. `ops` are the ops that parsed, with their indexes.
    ///
    /// # Errors
    /// The first op not allowed: its index and why.
    pub fn authorize_ops<'a>(
        &self,
        caller: &Caller,
        ops: impl IntoIterator<Item = (usize, &'a Op)>,
    ) -> Result<(), (usize, Denied)> {
        for (i, op) in ops {
            if let Err(denied) = authorize(caller, Operation::of_op(op), None) {
                record(&denied);
                return Err((i, denied));
            }
        }
        Ok(())
    }

    /// Who `bearer` is.
    fn authenticate(&self, bearer: Option<&str>) -> Result<Caller, Denied> {
        let token = bearer.ok_or(Denied::Missing)?;
        if token.is_empty() || token.len() > 8192 {
            return Err(Denied::Invalid(Invalid::Malformed));
        }
        let looks_like_jwt = token.bytes().filter(|&b| b == b'.').count() == 2;
        match (&self.jwt, looks_like_jwt) {
            (Some(jwt), true) => jwt.verify(token).map(Caller::User).map_err(Denied::Invalid),
            _ => self.keys.find(token).map_err(Denied::Invalid),
        }
    }

    /// Counts a request against the caller's rate.
    fn admit(&self, caller: &Caller) -> Result<(), Denied> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let key = match caller {
            Caller::Anonymous => return Ok(()),
            Caller::Service { index, .. } => CallerKey::Key(*index),
            Caller::User(user) => CallerKey::User(user.get()),
        };
        limiter
            .check_key(&key)
            .map_err(|not_until| Denied::RateLimited(not_until.wait_time_from(self.clock.now())))
    }

    /// Forgets the rate state of callers idle long enough to be back at a full burst,
    /// so the limiter's memory follows the active callers (the app calls it every
    /// minute).
    pub fn sweep(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The token of an `Authorization` value (HTTP header or gRPC metadata):
/// `Bearer <token>`, the scheme case-insensitive (RFC 9110).
///
/// # Errors
/// [`Invalid::Malformed`] for any other scheme or an empty token.
pub fn bearer_value(value: &str) -> Result<&str, Denied> {
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(Denied::Invalid(Invalid::Malformed))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Denied::Invalid(Invalid::Malformed));
    }
    Ok(token)
}

/// Whether `caller` may do `op` on `user`.
fn authorize(caller: &Caller, op: Operation, user: Option<UserId>) -> Result<(), Denied> {
    match caller {
        Caller::Anonymous => Ok(()),
        Caller::Service { scopes, .. } => match scopes.contains(op.scope()) {
            true => Ok(()),
            false => Err(Denied::Scope(op.scope())),
        },
        Caller::User(own) => {
            if !op.for_end_users() {
                return Err(Denied::NotForUsers);
            }
            match user {
                Some(user) if user == *own => Ok(()),
                _ => Err(Denied::OtherUser),
            }
        }
    }
}

fn record(denied: &Denied) {
    match denied {
        Denied::RateLimited(_) => counter!(crate::metrics::RATE_LIMITED).increment(1),
        other => {
            counter!(crate::metrics::AUTH_DENIED, "reason" => other.reason()).increment(1);
        }
    }
}

#[cfg(test)]
mod tests;
