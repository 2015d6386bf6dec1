//! A doubling delay between retries, capped, reset by a success: the one way every
//! retry loop here (commits, log syncs, checkpoints, the change feed, NATS) waits.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The delay before the next retry: `first`, then doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, doubles after every wait, never beyond `max`.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// How long the next wait takes.
    pub fn delay(&self) -> Duration {
        self.next
    }

    /// Sleeps for [`Backoff::delay`], then doubles it (up to the cap).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.grow();
    }

    /// As [`Backoff::wait`], but gives up as soon as `cancel` fires: `false` then.
    pub async fn wait_or_cancel(&mut self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep(self.next) => {
                self.grow();
                true
            }
            () = cancel.cancelled() => false,
        }
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    fn grow(&mut self) {
        self.next = (self.next * 2).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delays_double_up_to_the_cap_and_reset_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(3));
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(backoff.delay());
            backoff.wait().await;
        }
        assert_eq!(seen, [1, 2, 3, 3].map(Duration::from_millis).to_vec());
        backoff.reset();
        assert_eq!(backoff.delay(), Duration::from_millis(1));
    }

    #[tokio::test]
    async fn a_cancelled_wait_ends_at_once_and_does_not_grow() {
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_secs(3600));
        let cancel = CancellationToken::new();
        assert!(backoff.wait_or_cancel(&cancel).await);
        assert_eq!(backoff.delay(), Duration::from_millis(2));
        // A wait of an hour, cancelled: the test would hang if it slept.
        let mut long = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        cancel.cancel();
        assert!(!long.wait_or_cancel(&cancel).await);
        assert_eq!(long.delay(), Duration::from_secs(3600));
    }
}
