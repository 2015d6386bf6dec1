//! [`Error`]: what a call can fail with, classified from the gRPC status and its
//! `google.rpc` details; and the [`Problem`] of one failed op of a batch.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;

use crate::proto::Problem;

/// Why a call failed.
///
/// The server maps its problem table onto gRPC statuses (see the proto); this is
/// that mapping read back. [`Error::is_retryable`] says whether trying again can
/// help; the [`Client`](crate::Client) already retried those errors as its
/// [`RetryPolicy`](crate::RetryPolicy) allows before answering one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `INVALID_ARGUMENT`: the request is malformed or a value is out of range
    /// (an id of 0, too many ops, ...). `field` is the offending field as the
    /// server's `google.rpc.BadRequest` detail names it (`channel_id`,
    /// `ops[2].channel_id`, ...).
    #[error("invalid argument{}: {message}", field_suffix(.field))]
    InvalidArgument {
        /// The offending field, when the server named one.
        field: Option<String>,
        /// The server's explanation.
        message: String,
    },
    /// `UNAUTHENTICATED`: the server needs credentials and got none, or the token
    /// ([`Client::with_token`](crate::Client::with_token)) is not valid: an unknown
    /// API key, a badly signed or expired JWT. Never retried: fix the token (for an
    /// expired JWT, [`Client::set_token`](crate::Client::set_token) a fresh one).
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// The server's explanation (it never repeats the token).
        message: String,
    },
    /// `PERMISSION_DENIED`: the token is valid but may not do this: an API key
    /// without the scope the call needs (`read`, `write`, `admin`), or a user's JWT
    /// on another user or on a call end users may not make. Never retried. `field`
    /// names the op of a batch or `Write` stream that was refused (`ops[2]`): the
    /// whole call (or `Write` group) is refused then.
    #[error("permission denied{}: {message}", field_suffix(.field))]
    PermissionDenied {
        /// The refused op of a batch or `Write` stream, when the server named one.
        field: Option<String>,
        /// The server's explanation.
        message: String,
    },
    /// `NOT_FOUND`: the resource does not exist.
    /// ([`Client::read_state`](crate::Client::read_state) and
    /// [`Client::channel`](crate::Client::channel) answer `None` instead.)
    #[error("not found: {message}")]
    NotFound {
        /// The server's explanation.
        message: String,
    },
    /// The server cannot take the call now: `UNAVAILABLE` (storage failing,
    /// starting, draining, or no connection to the server at all) or
    /// `RESOURCE_EXHAUSTED` with a `google.rpc.RetryInfo` (overloaded, or this
    /// caller is over its rate limit: HTTP's 429). Retry after `retry_after` (the
    /// server's `RetryInfo` delay, when it sent one).
    #[error("unavailable ({code:?}): {message}")]
    Unavailable {
        /// `Unavailable` or `ResourceExhausted` as the server answered; another
        /// code when the connection broke during the call.
        code: Code,
        /// The server's `RetryInfo` delay, if any.
        retry_after: Option<Duration>,
        /// The server's (or the transport's) explanation.
        message: String,
    },
    /// `DEADLINE_EXCEEDED`: the call did not finish within the client's deadline
    /// ([`Client::with_timeout`](crate::Client::with_timeout)) or the server's
    /// request timeout. Writes are idempotent, so this is retryable.
    #[error("deadline exceeded: {message}")]
    DeadlineExceeded {
        /// The server's (or the client's) explanation.
        message: String,
    },
    /// The endpoint given to [`Client::connect`](crate::Client::connect) is not a
    /// valid URI.
    #[error("invalid endpoint {endpoint:?}: {}", chain(.source))]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it is invalid.
        source: tonic::transport::Error,
    },
    /// The token given to [`Client::with_token`](crate::Client::with_token) or
    /// [`Client::set_token`](crate::Client::set_token) cannot be sent: it is empty
    /// or holds spaces, control or non-ASCII characters (the token itself is never
    /// part of the error).
    #[error("invalid token: {reason}")]
    InvalidToken {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Connecting failed ([`Client::connect`](crate::Client::connect)).
    #[error("cannot connect: {}", chain(.0))]
    Transport(#[from] tonic::transport::Error),
    /// Any other status (`INTERNAL`, `UNIMPLEMENTED`, `RESOURCE_EXHAUSTED` without
    /// `RetryInfo` such as a message too large, ...). Not retryable.
    #[error("gRPC status {:?}: {}", .0.code(), .0.message())]
    Other(tonic::Status),
}

fn field_suffix(field: &Option<String>) -> String {
    field
        .as_deref()
        .map(|f| format!(" ({f})"))
        .unwrap_or_default()
}

/// An error and its sources, `: `-separated (transport errors say little at the top).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    with_causes(e.to_string(), e.source())
}

/// `text`, then each of `source` and its sources not already said, `: `-separated.
fn with_causes(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

impl Error {
    /// Whether trying the same call again later can succeed: [`Error::Unavailable`],
    /// [`Error::DeadlineExceeded`] and [`Error::Transport`] (cannot connect).
    /// Safe for every call: reads change nothing and every write is idempotent.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::DeadlineExceeded { .. } | Error::Transport(_)
        )
    }

    /// The delay the server asked for (`google.rpc.RetryInfo`), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The offending field of an [`Error::InvalidArgument`], or the refused op
    /// (`ops[2]`) of an [`Error::PermissionDenied`] batch or `Write` stream.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidArgument { field, .. } | Error::PermissionDenied { field, .. } => {
                field.as_deref()
            }
            _ => None,
        }
    }

    /// Whether the server refused the credentials (`UNAUTHENTICATED`, HTTP's 401):
    /// none were sent, or the token is unknown, badly signed or expired.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self, Error::Unauthenticated { .. })
    }

    /// Whether the credentials are valid but may not make this call
    /// (`PERMISSION_DENIED`, HTTP's 403): a missing scope, or a user's JWT on
    /// another user.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, Error::PermissionDenied { .. })
    }

    /// The gRPC code of the error (`Unavailable` for [`Error::Transport`],
    /// `InvalidArgument` for [`Error::InvalidEndpoint`] and [`Error::InvalidToken`]).
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. }
            | Error::InvalidEndpoint { .. }
            | Error::InvalidToken { .. } => Code::InvalidArgument,
            Error::Unauthenticated { .. } => Code::Unauthenticated,
            Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::NotFound { .. } => Code::NotFound,
            Error::Unavailable { code, .. } => *code,
            Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Error::Transport(_) => Code::Unavailable,
            Error::Other(status) => status.code(),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument => Error::InvalidArgument {
                field: bad_request_field(&status),
                message,
            },
            Code::Unauthenticated => Error::Unauthenticated { message },
            Code::PermissionDenied => Error::PermissionDenied {
                field: bad_request_field(&status),
                message,
            },
            Code::NotFound => Error::NotFound { message },
            Code::DeadlineExceeded => Error::DeadlineExceeded { message },
            Code::Unavailable => Error::Unavailable {
                code: Code::Unavailable,
                retry_after: retry_delay(&status),
                message: with_sources(&status),
            },
            // Overloaded and rate limited (429) come with a RetryInfo; without one
            // (a message too large) waiting does not help.
            Code::ResourceExhausted => match status.get_details_retry_info() {
                Some(info) => Error::Unavailable {
                    code: Code::ResourceExhausted,
                    retry_after: info.retry_delay,
                    message,
                },
                None => Error::Other(status),
            },
            // The client's own deadline (`grpc-timeout`), enforced by the channel.
            _ if caused_by::<tonic::TimeoutExpired>(&status) => Error::DeadlineExceeded {
                message: with_sources(&status),
            },
            // A status made on this side from a transport error (the connection
            // broke mid-call: reset, broken pipe, server gone) carries its source;
            // the server's own statuses never do.
            Code::Unknown | Code::Internal | Code::Cancelled if status.source().is_some() => {
                Error::Unavailable {
                    code: status.code(),
                    retry_after: None,
                    message: with_sources(&status),
                }
            }
            _ => Error::Other(status),
        }
    }
}

/// Whether an error of type `T` is among the sources of `status`.
fn caused_by<T: std::error::Error + 'static>(status: &tonic::Status) -> bool {
    let mut source = status.source();
    while let Some(s) = source {
        if s.is::<T>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// The first field named by the status's `google.rpc.BadRequest` detail.
fn bad_request_field(status: &tonic::Status) -> Option<String> {
    status.get_details_bad_request().and_then(|b| {
        b.field_violations
            .into_iter()
            .map(|v| v.field)
            .find(|f| !f.is_empty())
    })
}

fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    status.get_details_retry_info().and_then(|i| i.retry_delay)
}

fn with_sources(status: &tonic::Status) -> String {
    with_causes(status.message().to_owned(), status.source())
}

impl Problem {
    /// Whether the op may succeed when sent again (HTTP status 429, 503 or 504:
    /// overloaded, unavailable, timed out). Ops are idempotent, so resending the
    /// failed ones is safe.
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, 429 | 503 | 504)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.title, self.status)?;
        if let Some(field) = &self.field {
            write!(f, " [{field}]")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, StatusExt};

    use super::*;

    #[test]
    fn statuses_map_to_errors_with_their_details() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("ops[2].channel_id", "required");
        let e = Error::from(tonic::Status::with_error_details(
            Code::InvalidArgument,
            "ops[2].channel_id: required",
            details,
        ));
        assert_eq!(e.field(), Some("ops[2].channel_id"));
        assert!(!e.is_retryable());

        let e = Error::from(tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "too many",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
        ));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(e.code(), Code::ResourceExhausted);

        let e = Error::from(tonic::Status::resource_exhausted("too large"));
        assert!(matches!(e, Error::Other(_)));
        assert!(!e.is_retryable());

        let e = Error::from(tonic::Status::unavailable("down"));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), None);

        assert!(Error::from(tonic::Status::deadline_exceeded("late")).is_retryable());
        assert!(matches!(
            Error::from(tonic::Status::not_found("no")),
            Error::NotFound { .. }
        ));
        // The server's INTERNAL (no source) is not a broken connection.
        assert!(!Error::from(tonic::Status::internal("bug")).is_retryable());
    }

    #[test]
    fn access_refusals_are_never_retried() {
        let e = Error::from(tonic::Status::unauthenticated("credentials are required"));
        assert!(e.is_unauthenticated() && !e.is_permission_denied());
        assert!(!e.is_retryable());
        assert_eq!(e.code(), Code::Unauthenticated);

        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("ops[1]", "ops[1]: this API key lacks the `admin` scope");
        let e = Error::from(tonic::Status::with_error_details(
            Code::PermissionDenied,
            "ops[1]: this API key lacks the `admin` scope",
            details,
        ));
        assert!(e.is_permission_denied() && !e.is_unauthenticated());
        assert!(!e.is_retryable());
        assert_eq!(e.field(), Some("ops[1]"));
        assert_eq!(e.code(), Code::PermissionDenied);

        // The rate limit (429): retryable after the server's delay.
        let e = Error::from(tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "too many requests from this caller; retry in 2 s",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(2))),
        ));
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn problems_say_whether_to_retry() {
        let p = Problem {
            r#type: "https://readstate.dev/problems/unavailable".into(),
            title: "Service unavailable".into(),
            status: 503,
            detail: "draining".into(),
            field: None,
        };
        assert!(p.is_retryable());
        assert_eq!(p.to_string(), "Service unavailable (503): draining");
        let p = Problem {
            status: 400,
            field: Some("ops[1].user_id".into()),
            ..p
        };
        assert!(!p.is_retryable());
        assert!(p.to_string().contains("[ops[1].user_id]"));
    }
}
