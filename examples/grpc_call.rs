//! A grpcurl-style caller of readstate's gRPC API: one unary call, its request and
//! answer as JSON (the canonical protobuf JSON mapping, with the proto's field
//! names, 64-bit ids as strings), typed by the proto compiled into readstate (the
//! same descriptors its server reflection serves), so it needs neither protoc nor
//! generated code.
//!
//! ```sh
//! cargo run --example grpc_call -- 127.0.0.1:50051 readstate.v1.ReadStates/Ack \
//!     '{"user_id": "2", "channel_id": "10", "message_id": "500"}'
//! ```
//!
//! Prints the answer as one line of JSON and exits 0, or prints the status (code,
//! message, the invalid field) to stderr and exits 1.

use std::str::FromStr;

use anyhow::{Context, bail};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Encodes dynamic requests and decodes answers of one message type.
struct DynamicCodec {
    answer: MessageDescriptor,
}

struct DynamicEncoder;
struct DynamicDecoder(MessageDescriptor);

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.answer.clone())
    }
}

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the request: {e}")))
    }
}

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the answer: {e}")))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, method, json] = args.as_slice() else {
        bail!("usage: grpc_call HOST:PORT readstate.v1.ReadStates/METHOD 'JSON REQUEST'");
    };
    let pool = DescriptorPool::decode(readstate::grpc::pb::FILE_DESCRIPTOR_SET)
        .context("readstate's descriptors")?;
    let (service, name) = method
        .split_once('/')
        .context("the method is SERVICE/METHOD, e.g. readstate.v1.ReadStates/Ack")?;
    let descriptor = pool
        .get_service_by_name(service)
        .with_context(|| format!("no service {service}"))?
        .methods()
        .find(|m| m.name() == name)
        .with_context(|| format!("{service} has no method {name}"))?;
    if descriptor.is_client_streaming() || descriptor.is_server_streaming() {
        bail!("{method} streams; this example makes unary calls only");
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let request = DynamicMessage::deserialize(descriptor.input(), &mut deserializer)
        .with_context(|| format!("the request is not a {}", descriptor.input().full_name()))?;

    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("the connection is not ready")?;
    let path = http::uri::PathAndQuery::from_str(&format!("/{method}"))?;
    let codec = DynamicCodec {
        answer: descriptor.output(),
    };
    match grpc.unary(tonic::Request::new(request), path, codec).await {
        Ok(answer) => {
            let options = SerializeOptions::new()
                .use_proto_field_name(true)
                .skip_default_fields(false);
            let mut out = serde_json::Serializer::new(Vec::new());
            answer
                .into_inner()
                .serialize_with_options(&mut out, &options)?;
            println!("{}", String::from_utf8(out.into_inner())?);
            Ok(())
        }
        Err(status) => {
            let field = status
                .get_details_bad_request()
                .and_then(|b| b.field_violations.into_iter().next())
                .map(|v| format!(" (field {})", v.field))
                .unwrap_or_default();
            eprintln!("{:?}: {}{field}", status.code(), status.message());
            std::process::exit(if status.code() == Code::Ok { 0 } else { 1 });
        }
    }
}
