//! The `readstate-grpc` target's client: the workload's operations as `ReadStates`
//! calls over HTTP/2, one connection per worker (like the HTTP target's).

use std::net::SocketAddr;

use anyhow::Context as _;
use tonic::transport::Channel;

use super::workload::Op;
use readstate::grpc::pb;
use readstate::grpc::pb::read_states_client::ReadStatesClient;

/// One worker's gRPC connection.
#[derive(Debug, Clone)]
pub struct GrpcClient {
    client: ReadStatesClient<Channel>,
}

impl GrpcClient {
    /// Connects to the gRPC server at `addr`.
    ///
    /// # Errors
    /// When the server is not reachable.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .context("a gRPC URI")?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("while connecting to the gRPC server at {addr}"))?;
        Ok(Self {
            client: ReadStatesClient::new(channel),
        })
    }

    /// Runs one operation.
    ///
    /// # Errors
    /// The status the server answered instead of OK.
    pub async fn execute(&mut self, op: &Op) -> anyhow::Result<()> {
        let client = &mut self.client;
        let outcome = match *op {
            Op::Ack {
                user,
                channel,
                message,
            } => client
                .ack(pb::AckRequest {
                    user_id: user,
                    channel_id: channel,
                    message_id: message,
                    at: None,
                })
                .await
                .map(drop),
            Op::Unread {
                user,
                channel,
                message,
            } => client
                .mark_unread(pb::MarkUnreadRequest {
                    user_id: user,
                    channel_id: channel,
                    message_id: message,
                })
                .await
                .map(drop),
            Op::Message {
                channel,
                message,
                author,
                ..
            } => client
                .message_created(pb::MessageCreatedRequest {
                    channel_id: channel,
                    message_id: message,
                    author_id: Some(author),
                    mentions: op.mentions().to_vec(),
                })
                .await
                .map(drop),
            Op::ReadStates { user } => client
                .get_read_states(pb::GetReadStatesRequest {
                    user_id: user,
                    channels: Vec::new(),
                    group_id: None,
                })
                .await
                .map(|r| {
                    std::hint::black_box(r.into_inner());
                }),
            Op::Summary { user } => client
                .get_summary(pb::GetSummaryRequest {
                    user_id: user,
                    group_id: None,
                })
                .await
                .map(|r| {
                    std::hint::black_box(r.into_inner());
                }),
        };
        outcome.map_err(|status| {
            anyhow::anyhow!(
                "gRPC {:?}: {}",
                status.code(),
                status.message().chars().take(200).collect::<String>()
            )
        })
    }
}
