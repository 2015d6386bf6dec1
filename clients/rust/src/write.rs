//! [`Client::write`]: the client-streaming `Write` RPC, resumed on another stream
//! when one breaks or the server ends it early.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use tokio::sync::Mutex;

use crate::client::{Client, op_result};
use crate::error::Error;
use crate::proto::{Op, Problem};

/// The ops of one [`Client::write`], shared by the request streams of its tries.
struct Feed {
    /// The caller's ops.
    source: BoxStream<'static, Op>,
    /// Whether `source` has ended.
    source_done: bool,
    /// Ops taken from `source` and not answered yet, oldest first: what a new
    /// try sends before taking more.
    pending: VecDeque<Op>,
    /// How many ops were answered (the position of `pending[0]` in the whole).
    answered: usize,
    /// The try whose request stream may still read; older ones end.
    generation: u64,
}

impl Client {
    /// Streams `ops` to the server (the client-streaming `Write` RPC) and answers
    /// one result per op, in order, once `ops` has ended. Ops are applied as they
    /// arrive, in order, in groups each durable before the next; a bad op fails
    /// alone (its [`Problem`] names the field, e.g. `ops[7].user_id`, counted
    /// from the first op of `ops`).
    ///
    /// Takes any `Stream<Item = Op> + Send + 'static`: a channel receiver for a
    /// producer, or an iterator through [`Client::write_iter`].
    ///
    /// **Retries.** The ops taken from `ops` and not answered yet are kept. When
    /// the call fails with a retryable error they are sent again on a new stream
    /// (safe: every op is idempotent), then the rest of `ops` follows; up to
    /// [`RetryPolicy::attempts`](crate::RetryPolicy::attempts) consecutive tries
    /// without an answer. When the server ends the stream early (it is shutting
    /// down, answering what it applied), the unanswered ops are sent again too.
    ///
    /// # Errors
    /// The call failed (a retryable error once the tries are used up).
    pub async fn write<S>(&self, ops: S) -> Result<Vec<Result<(), Problem>>, Error>
    where
        S: Stream<Item = Op> + Send + 'static,
    {
        let feed = Arc::new(Mutex::new(Feed {
            source: ops.boxed(),
            source_done: false,
            pending: VecDeque::new(),
            answered: 0,
            generation: 0,
        }));
        let mut results = Vec::new();
        let mut failures = 0;
        loop {
            let (generation, start) = {
                let mut f = feed.lock().await;
                f.generation += 1;
                (f.generation, f.answered)
            };
            let mut grpc = self.grpc.clone();
            let answer = grpc.write(requests(feed.clone(), generation, start)).await;
            let retry_after = {
                let mut f = feed.lock().await;
                // That try's request stream (if still alive) reads no more.
                f.generation += 1;
                match answer.map_err(Error::from) {
                    Ok(reply) => {
                        let reply = reply.into_inner();
                        let n = reply.results.len();
                        if n > f.pending.len() {
                            return Err(Error::Other(tonic::Status::internal(format!(
                                "the server answered {n} results for {} ops",
                                f.pending.len()
                            ))));
                        }
                        results.extend(
                            reply
                                .results
                                .into_iter()
                                .map(|r| op_result(r).map_err(|p| shift(p, start))),
                        );
                        f.pending.drain(..n);
                        f.answered += n;
                        if f.source_done && f.pending.is_empty() {
                            return Ok(results);
                        }
                        // The server ended the stream before the ops did (it is
                        // shutting down): send the rest on a new stream.
                        if n > 0 {
                            failures = 0;
                            continue;
                        }
                        failures += 1;
                        if !self.retry.may_retry(failures) {
                            return Err(Error::Unavailable {
                                code: tonic::Code::Unavailable,
                                retry_after: None,
                                message: "the server ended the Write stream without applying the remaining ops"
                                    .to_owned(),
                            });
                        }
                        None
                    }
                    Err(e) => {
                        failures += 1;
                        if !e.is_retryable() || !self.retry.may_retry(failures) {
                            return Err(shift_error(e, start));
                        }
                        e.retry_after()
                    }
                }
            };
            tokio::time::sleep(self.retry.backoff(failures, retry_after)).await;
        }
    }

    /// [`Client::write`] of the ops of an iterator.
    ///
    /// # Errors
    /// See [`Client::write`].
    pub async fn write_iter<I>(&self, ops: I) -> Result<Vec<Result<(), Problem>>, Error>
    where
        I: IntoIterator<Item = Op>,
        I::IntoIter: Send + 'static,
    {
        self.write(stream::iter(ops)).await
    }
}

/// The request stream of try `generation`: the pending ops from position
/// `start` on, then new ops from the source as they come.
fn requests(
    feed: Arc<Mutex<Feed>>,
    generation: u64,
    start: usize,
) -> impl Stream<Item = Op> + Send + 'static {
    stream::unfold((feed, start), move |(feed, position)| async move {
        let op = {
            let mut f = feed.lock().await;
            if f.generation != generation {
                return None;
            }
            if let Some(op) = f.pending.get(position - f.answered) {
                op.clone()
            } else if f.source_done {
                return None;
            } else {
                match f.source.next().await {
                    Some(op) => {
                        f.pending.push_back(op.clone());
                        op
                    }
                    None => {
                        f.source_done = true;
                        return None;
                    }
                }
            }
        };
        Some((op, (feed, position + 1)))
    })
}

/// The problem of an op of a resumed stream, its field counted from the first op
/// of the whole (`ops[2].x` of a stream starting at op 10 is `ops[12].x`).
fn shift(mut problem: Problem, start: usize) -> Problem {
    shift_field(&mut problem.field, start);
    problem
}

/// The error that ended a resumed stream, the op it names (a refused op of
/// [`Error::PermissionDenied`]) counted from the first op of the whole.
fn shift_error(mut e: Error, start: usize) -> Error {
    if let Error::PermissionDenied { field, .. } = &mut e {
        shift_field(field, start);
    }
    e
}

/// `ops[i]...` as `ops[i + start]...`.
fn shift_field(field: &mut Option<String>, start: usize) {
    if start == 0 {
        return;
    }
    if let Some(f) = field.as_deref()
        && let Some(rest) = f.strip_prefix("ops[")
        && let Some((index, tail)) = rest.split_once(']')
        && let Ok(index) = index.parse::<usize>()
    {
        *field = Some(format!("ops[{}]{tail}", index + start));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_resumed_streams_count_from_the_first_op() {
        let p = Problem {
            field: Some("ops[2].channel_id".to_owned()),
            ..Problem::default()
        };
        assert_eq!(
            shift(p.clone(), 0).field.as_deref(),
            Some("ops[2].channel_id")
        );
        assert_eq!(shift(p, 10).field.as_deref(), Some("ops[12].channel_id"));
        let other = Problem {
            field: Some("ops".to_owned()),
            ..Problem::default()
        };
        assert_eq!(shift(other, 10).field.as_deref(), Some("ops"));
        let denied = Error::PermissionDenied {
            field: Some("ops[1]".to_owned()),
            message: "ops[1]: this API key lacks the `admin` scope".to_owned(),
        };
        assert_eq!(shift_error(denied, 5).field(), Some("ops[6]"));
    }
}
