//! `ReadStates`: every RPC converts its message ([`super::convert`]), calls the
//! service within the call's deadline and converts the answer; nothing else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::convert::{Fields, export, groups, op_result, read_states};
use super::pb::read_states_server::ReadStates;
use super::{denied_status, parse_timeout, pb, problem_status, status};
use crate::api::problem::{Problem, log_batch_errors};
use crate::auth::{Access, Caller, Denied, Invalid, Operation};
use crate::domain::Op;
use crate::domain::UserId;
use crate::live::wire::{LiveEvent, live_event};
use crate::service::{Service, ServiceError};

/// Most ops one `Write` stream may carry (its reply holds one result per op);
/// a producer opens a new stream for more.
pub const MAX_WRITE_OPS: usize = 1_000_000;

/// The `ReadStates` service over a [`Service`].
#[derive(Clone)]
pub struct GrpcService {
    service: Arc<Service>,
    access: Arc<Access>,
    request_timeout: Duration,
}

type Reply<T> = Result<Response<T>, Status>;

impl GrpcService {
    /// Serves `service`; unary calls end within `request_timeout` or the client's
    /// deadline, whichever is shorter.
    pub fn new(service: Arc<Service>, access: Arc<Access>, request_timeout: Duration) -> Self {
        Self {
            service,
            access,
            request_timeout,
        }
    }

    /// Checks the call against the access rules: the `authorization` metadata
    /// (`Bearer <API key or JWT>`), the operation and the user the message names.
    #[allow(clippy::result_large_err)]
    fn access(
        &self,
        metadata: &MetadataMap,
        op: Operation,
        user: Option<u64>,
    ) -> Result<Caller, Status> {
        if !self.access.is_on() {
            return Ok(Caller::Anonymous);
        }
        let token = match metadata.get("authorization").map(|v| v.to_str()) {
            None => Ok(None),
            Some(Ok(value)) => crate::auth::bearer_value(value).map(Some),
            Some(Err(_)) => Err(Denied::Invalid(Invalid::Malformed)),
        };
        let user = user.and_then(|id| UserId::new(id).ok());
        token
            .and_then(|token| self.access.check(token, op, user))
            .map_err(|denied| denied_status(&denied.problem(), &denied))
    }

    /// Checks the ops of a batch (or a `Write` group) against what `caller` may do.
    #[allow(clippy::result_large_err)]
    fn access_ops(
        &self,
        caller: &Caller,
        ops: &[(usize, Result<Op, ServiceError>)],
    ) -> Result<(), Status> {
        let parsed = ops
            .iter()
            .filter_map(|(i, op)| op.as_ref().ok().map(|op| (*i, op)));
        self.access
            .authorize_ops(caller, parsed)
            .map_err(|(i, denied)| denied_status(&denied.problem_at(i), &denied))
    }

    /// The client's deadline (`grpc-timeout`), if any, a little early: tonic also
    /// enforces it and answers CANCELLED when it passes, so the call gives up a tenth
    /// of it (at most 100 ms) before, and the client gets DEADLINE_EXCEEDED.
    fn client_deadline(metadata: &MetadataMap) -> Option<Duration> {
        metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_timeout)
            .map(|d| d.saturating_sub((d / 10).min(Duration::from_millis(100))))
    }

    /// Runs `call` within the call's deadline: `DEADLINE_EXCEEDED` past it, the
    /// service error's status on failure.
    async fn within<T>(
        &self,
        metadata: &MetadataMap,
        call: impl Future<Output = Result<T, ServiceError>>,
    ) -> Reply<T> {
        let timeout = Self::client_deadline(metadata)
            .map_or(self.request_timeout, |d| d.min(self.request_timeout));
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(answer)) => Ok(Response::new(answer)),
            Ok(Err(e)) => Err(status(&e)),
            Err(_) => {
                tracing::debug!(timeout_ms = timeout.as_millis(), "gRPC call timed out");
                Err(problem_status(&Problem::timed_out(timeout)))
            }
        }
    }

    /// Applies a write; answers once it is durable (sync mode).
    async fn write_op(
        &self,
        metadata: &MetadataMap,
        op: Result<Op, ServiceError>,
    ) -> Reply<pb::WriteReply> {
        self.within(metadata, async {
            self.service.execute(&op?).await?;
            Ok(pb::WriteReply {})
        })
        .await
    }

    /// Applies a write about one read state, then answers the read state.
    async fn write_and_read(
        &self,
        metadata: &MetadataMap,
        op: Result<Op, ServiceError>,
        user: u64,
        channel: u64,
    ) -> Reply<pb::ReadState> {
        self.within(metadata, async {
            let op = op?;
            let (user, channel) = Fields::BARE.user_channel(user, channel)?;
            self.service.execute(&op).await?;
            Ok(self.service.read_state(user, channel).await?.into())
        })
        .await
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl ReadStates for GrpcService {
    async fn message_created(
        &self,
        request: Request<pb::MessageCreatedRequest>,
    ) -> Reply<pb::WriteReply> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::MessageCreated, None)?;
        self.write_op(&metadata, Fields::BARE.message_created(message))
            .await
    }

    async fn message_deleted(
        &self,
        request: Request<pb::MessageDeletedRequest>,
    ) -> Reply<pb::WriteReply> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::MessageDeleted, None)?;
        self.write_op(&metadata, Fields::BARE.message_deleted(message))
            .await
    }

    async fn delete_channel(
        &self,
        request: Request<pb::DeleteChannelRequest>,
    ) -> Reply<pb::WriteReply> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::DeleteChannel, None)?;
        self.write_op(&metadata, Fields::BARE.delete_channel(message))
            .await
    }

    async fn readers(&self, request: Request<pb::ReadersRequest>) -> Reply<pb::ReadersReply> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::Readers, None)?;
        self.within(&metadata, async {
            let (channel, msg, after) = Fields::BARE.readers(&message)?;
            let (readers, next) = self
                .service
                .readers(channel, msg, after, message.limit)
                .await?;
            Ok(pb::ReadersReply {
                readers: readers.into_iter().map(|u| u.get()).collect(),
                next: next.map(|u| u.get()),
            })
        })
        .await
    }

    async fn join(&self, request: Request<pb::JoinRequest>) -> Reply<pb::ReadState> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::Join, Some(message.user_id))?;
        let op = Fields::BARE.join(&message);
        self.write_and_read(&metadata, op, message.user_id, message.channel_id)
            .await
    }

    async fn leave(&self, request: Request<pb::LeaveRequest>) -> Reply<pb::WriteReply> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::Leave, Some(message.user_id))?;
        self.write_op(&metadata, Fields::BARE.leave(&message)).await
    }

    async fn get_read_state(
        &self,
        request: Request<pb::GetReadStateRequest>,
    ) -> Reply<pb::ReadState> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::GetReadState, Some(message.user_id))?;
        self.within(&metadata, async {
            let (user, channel) = Fields::BARE.user_channel(message.user_id, message.channel_id)?;
            Ok(self.service.read_state(user, channel).await?.into())
        })
        .await
    }

    async fn get_read_states(
        &self,
        request: Request<pb::GetReadStatesRequest>,
    ) -> Reply<pb::ReadStatesReply> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::GetReadStates, Some(message.user_id))?;
        self.within(&metadata, async {
            let user = Fields::BARE.user_only(message.user_id)?;
            let channels = Fields::BARE.channels(&message.channels)?;
            let group = Fields::BARE.group(message.group_id)?;
            let views = self
                .service
                .read_states_filtered(user, channels.as_deref(), group)
                .await?;
            Ok(read_states(views))
        })
        .await
    }

    async fn ack(&self, request: Request<pb::AckRequest>) -> Reply<pb::ReadState> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::Ack, Some(message.user_id))?;
        let op = Fields::BARE.ack(&message);
        self.write_and_read(&metadata, op, message.user_id, message.channel_id)
            .await
    }

    async fn mark_unread(&self, request: Request<pb::MarkUnreadRequest>) -> Reply<pb::ReadState> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::MarkUnread, Some(message.user_id))?;
        let op = Fields::BARE.unread(&message);
        self.write_and_read(&metadata, op, message.user_id, message.channel_id)
            .await
    }

    async fn ack_all(&self, request: Request<pb::AckAllRequest>) -> Reply<pb::ReadStatesReply> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::AckAll, Some(message.user_id))?;
        self.within(&metadata, async {
            let user = Fields::BARE.user_only(message.user_id)?;
            self.service.execute(&Op::AckAll { user }).await?;
            Ok(read_states(self.service.read_states(user, None).await?))
        })
        .await
    }

    async fn get_summary(&self, request: Request<pb::GetSummaryRequest>) -> Reply<pb::Summary> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::GetSummary, Some(message.user_id))?;
        self.within(&metadata, async {
            let user = Fields::BARE.user_only(message.user_id)?;
            let summary = match Fields::BARE.group(message.group_id)? {
                Some(group) => self.service.group_summary(user, group).await?,
                None => self.service.summary(user).await?,
            };
            Ok(summary.into())
        })
        .await
    }

    async fn get_summaries(
        &self,
        request: Request<pb::GetSummariesRequest>,
    ) -> Reply<pb::Summaries> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::GetSummaries, None)?;
        self.within(&metadata, async {
            let users = Fields::BARE.users(&message.user_ids)?;
            let summaries = self.service.summaries(&users).await?;
            Ok(pb::Summaries {
                summaries: summaries
                    .into_iter()
                    .map(|(user, s)| pb::UserSummary {
                        user_id: user.get(),
                        unread_channels: s.unread_channels,
                        mentions: s.mentions,
                        unread_threads: s.unread_threads,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn set_channel(&self, request: Request<pb::SetChannelRequest>) -> Reply<pb::Channel> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::SetChannel, None)?;
        self.within(&metadata, async {
            let op = Fields::BARE.set_channel(&message)?;
            let channel = Fields::BARE.channel_only(message.channel_id)?;
            self.service.execute(&op).await?;
            Ok(self.service.channel_after_write(channel).await?.into())
        })
        .await
    }

    async fn get_channel(&self, request: Request<pb::GetChannelRequest>) -> Reply<pb::Channel> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::GetChannel, None)?;
        self.within(&metadata, async {
            let channel = Fields::BARE.channel_only(message.channel_id)?;
            Ok(self.service.channel(channel).await?.into())
        })
        .await
    }

    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Reply<pb::ReadState> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::Settings, Some(message.user_id))?;
        let op = Fields::BARE.settings(&message);
        self.write_and_read(&metadata, op, message.user_id, message.channel_id)
            .await
    }

    async fn get_groups(&self, request: Request<pb::GetGroupsRequest>) -> Reply<pb::GroupsReply> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::GetGroups, Some(message.user_id))?;
        self.within(&metadata, async {
            let user = Fields::BARE.user_only(message.user_id)?;
            Ok(groups(self.service.groups(user).await?))
        })
        .await
    }

    async fn get_threads(
        &self,
        request: Request<pb::GetThreadsRequest>,
    ) -> Reply<pb::ThreadsReply> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::GetThreads, Some(message.user_id))?;
        self.within(&metadata, async {
            let (user, channel, after) = Fields::BARE.threads(&message)?;
            let threads = self
                .service
                .threads(user, channel, after, message.limit)
                .await?;
            Ok(threads.into())
        })
        .await
    }

    async fn delete_user(&self, request: Request<pb::DeleteUserRequest>) -> Reply<pb::WriteReply> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::DeleteUser, Some(message.user_id))?;
        self.write_op(&metadata, Fields::BARE.delete_user(&message))
            .await
    }

    async fn export_user(&self, request: Request<pb::ExportUserRequest>) -> Reply<pb::ExportReply> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::ExportUser, Some(message.user_id))?;
        self.within(&metadata, async {
            let user = Fields::BARE.user_only(message.user_id)?;
            Ok(export(user, self.service.export(user).await?))
        })
        .await
    }

    async fn batch(&self, request: Request<pb::BatchRequest>) -> Reply<pb::BatchReply> {
        let (metadata, _, message) = request.into_parts();
        let caller = self.access(&metadata, Operation::Batch, None)?;
        let ops: Vec<(usize, Result<Op, ServiceError>)> = message
            .ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| (i, Fields::op(i).batch_op(op)))
            .collect();
        self.access_ops(&caller, &ops)?;
        self.within(&metadata, async {
            let ops = ops.into_iter().map(|(_, op)| op).collect();
            let results = self.service.execute_batch(ops).await?;
            log_batch_errors(&results);
            Ok(pb::BatchReply {
                results: results.iter().map(op_result).collect(),
            })
        })
        .await
    }

    type SubscribeStream = EventStream;

    async fn subscribe(&self, request: Request<pb::SubscribeRequest>) -> Reply<EventStream> {
        let (metadata, _, message) = request.into_parts();
        self.access(&metadata, Operation::Subscribe, Some(message.user_id))?;
        let user = Fields::BARE
            .user_only(message.user_id)
            .map_err(|e| status(&e))?;
        let subscription = self
            .service
            .subscribe(user, message.last_event_id.as_deref())
            .map_err(|e| status(&e))?;
        let user = user.get();
        let stream = futures_util::stream::unfold(
            (subscription, self.service.clone()),
            move |(mut subscription, service)| async move {
                loop {
                    let item = subscription.next().await?;
                    if let Some(event) = live_event(&service, user, item).await {
                        return Some((Ok(event_message(user, event)), (subscription, service)));
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn write(&self, request: Request<Streaming<pb::Op>>) -> Reply<pb::BatchReply> {
        let (metadata, _, mut stream) = request.into_parts();
        let caller = self.access(&metadata, Operation::Batch, None)?;
        // Only the client's deadline bounds a producer's stream; each group's
        // commit is bounded by `storage.commit_timeout_ms`.
        let client_deadline = Self::client_deadline(&metadata);
        let deadline = client_deadline.map(|d| tokio::time::Instant::now() + d);
        let max_group = self.service.limits().max_batch_ops.max(1);
        let closing = self.service.closing().clone();
        let mut results: Vec<pb::OpResult> = Vec::new();
        loop {
            let first = tokio::select! {
                next = stream.next() => next,
                // Shutting down: answer the results so far; the client resends the rest.
                () = closing.cancelled() => break,
                () = sleep_until(deadline) => {
                    return Err(problem_status(&Problem::timed_out(
                        client_deadline.unwrap_or_default(),
                    )));
                }
            };
            let Some(first) = first else { break };
            // The group: this op and whatever has already arrived after it.
            let mut group = vec![first];
            while group.len() < max_group {
                match stream.next().now_or_never() {
                    Some(Some(next)) => group.push(next),
                    _ => break,
                }
            }
            let start = results.len();
            if start + group.len() > MAX_WRITE_OPS {
                return Err(status(&ServiceError::invalid(
                    "ops",
                    format!(
                        "at most {MAX_WRITE_OPS} ops per Write stream; open a new stream for more"
                    ),
                )));
            }
            let mut ops = Vec::with_capacity(group.len());
            for (i, next) in group.into_iter().enumerate() {
                // A broken stream (not a bad op) ends the call.
                let op = next?;
                ops.push((start + i, Fields::op(start + i).batch_op(op)));
            }
            self.access_ops(&caller, &ops)?;
            let ops = ops.into_iter().map(|(_, op)| op).collect();
            let applied = self
                .service
                .execute_ops(start, ops)
                .await
                .map_err(|e| status(&e))?;
            log_batch_errors(&applied);
            results.extend(applied.iter().map(op_result));
        }
        Ok(Response::new(pb::BatchReply { results }))
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The message of one live event.
fn event_message(user: u64, event: LiveEvent) -> pb::Event {
    use pb::event::Event as Kind;
    let (id, kind) = match event {
        LiveEvent::Ready { id } => (id, Kind::Ready(pb::Ready { user_id: user })),
        LiveEvent::Resync { id } => (id, Kind::Resync(pb::Resync { user_id: user })),
        LiveEvent::Change { id, change } => (id, Kind::ReadState(change.into())),
    };
    pb::Event {
        id: id.to_string(),
        event: Some(kind),
    }
}
