//! [`RetryPolicy`]: how many times a call is tried and how long to wait between tries.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How a [`Client`](crate::Client) retries calls that failed with a retryable
/// [`Error`](crate::Error) (`UNAVAILABLE`, `RESOURCE_EXHAUSTED` with `RetryInfo`,
/// `DEADLINE_EXCEEDED`, a broken or refused connection).
///
/// `RESOURCE_EXHAUSTED` with `RetryInfo` is the server overloaded or this caller
/// over its rate limit (`limits.per_caller_rps`, HTTP's 429): the next try waits
/// at least the delay the server asked for. `UNAUTHENTICATED` and
/// `PERMISSION_DENIED` (HTTP's 401 and 403) are never retried: the same token
/// would be refused again.
///
/// Every call may be retried: reads change nothing and every write of readstate
/// is idempotent (applying it twice is applying it once). The wait before try
/// `n + 1` is `first_backoff · 2^(n-1)`, capped at `max_backoff`, jittered down
/// by up to half, and never shorter than the `RetryInfo` delay the server sent.
///
/// [`Client::subscribe`](crate::Client::subscribe) uses the same backoff to
/// reconnect but never gives up on a retryable error (`attempts` does not apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (`1` = no retry; `0` counts as `1`).
    pub attempts: u32,
    /// The wait after the first failed try.
    pub first_backoff: Duration,
    /// The longest computed wait (a longer `RetryInfo` delay is still honoured).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 3 tries, 100 ms then 200 ms apart (at least the server's `RetryInfo`
    /// delay, 1 s for readstate), waits capped at 5 s.
    fn default() -> Self {
        Self {
            attempts: 3,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retry: every error is answered at once.
    pub const fn none() -> Self {
        Self {
            attempts: 1,
            first_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        }
    }

    /// Whether a call that failed `failures` times may be tried again.
    pub(crate) fn may_retry(&self, failures: u32) -> bool {
        failures < self.attempts.max(1)
    }

    /// The wait after the `failures`-th consecutive failure (1-based), at least
    /// `retry_after`.
    pub fn backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        let computed = self
            .first_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        // Jitter: somewhere in [computed / 2, computed], so that clients cut off
        // together do not come back together.
        let half = computed / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(random() % nanos.saturating_add(1))
        };
        let wait = half + jitter;
        retry_after.map_or(wait, |r| wait.max(r))
    }
}

/// A random number from the standard library's randomly seeded hasher (no
/// dependency on a random number generator for a little jitter).
fn random() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into()),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_info() {
        let p = RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        for _ in 0..100 {
            let first = p.backoff(1, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let second = p.backoff(2, None);
            assert!(second >= Duration::from_millis(100) && second <= Duration::from_millis(200));
            let capped = p.backoff(30, None);
            assert!(capped >= Duration::from_millis(150) && capped <= Duration::from_millis(300));
            assert!(p.backoff(1, Some(Duration::from_secs(1))) >= Duration::from_secs(1));
        }
        assert!(p.may_retry(4));
        assert!(!p.may_retry(5));
        assert!(!RetryPolicy::none().may_retry(1));
        assert_eq!(RetryPolicy::none().backoff(3, None), Duration::ZERO);
    }
}
