//! Descriptors read from a running plugin's gRPC server reflection, for plugins that ship no
//! `.proto` files: `grpc.reflection.v1`, falling back to `v1alpha` for older servers (grpc-go
//! before 1.57, as go-plugin plugins often are). The plugin's services are listed, the file
//! declaring each is fetched, then every import those files name, until the set is closed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost::Message as _;
use prost_reflect::DescriptorPool;
use prost_reflect::prost_types::FileDescriptorProto;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

use super::transcode::TranscodeError;

/// The v1 and v1alpha services carry the same messages; only the path differs.
const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

/// A plugin answering with more files than this is refused rather than followed.
const MAX_FILES: usize = 512;

/// How long the whole exchange may take: a plugin that stalls cannot hold a caller forever.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The descriptors of every service the plugin on `channel` reflects.
///
/// # Errors
///
/// [`TranscodeError::Reflection`] when the plugin serves no reflection, stalls, or answers with
/// descriptors that do not form a valid, closed set.
pub async fn descriptors(channel: Channel) -> Result<DescriptorPool, TranscodeError> {
    let exchange = async {
        match files(channel.clone(), V1).await {
            Err(status) if status.code() == Code::Unimplemented => files(channel, V1ALPHA).await,
            other => other,
        }
    };
    let files = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| failure(format!("no answer within {}s", TIMEOUT.as_secs())))?
        .map_err(|status| match status.code() {
            Code::Unimplemented => {
                failure("the plugin does not serve grpc.reflection (v1 or v1alpha)".to_owned())
            }
            _ => failure(format!("{:?}: {}", status.code(), status.message())),
        })?;
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files.into_values())
        .map_err(|err| failure(format!("the reflected descriptors are not valid: {err}")))?;
    Ok(pool)
}

fn failure(reason: String) -> TranscodeError {
    TranscodeError::Reflection { reason }
}

/// One reflection stream: each request is answered in order.
struct Session {
    requests: mpsc::UnboundedSender<ServerReflectionRequest>,
    responses: tonic::Streaming<ServerReflectionResponse>,
}

impl Session {
    /// Opens the stream with `first` already queued: grpc-go sends response headers only with
    /// its first message, so the stream must not open empty.
    async fn open(
        channel: Channel,
        path: &'static str,
        first: MessageRequest,
    ) -> Result<Self, Status> {
        let (requests, queue) = mpsc::unbounded_channel();
        send(&requests, first)?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|err| Status::unavailable(format!("plugin not reachable: {err}")))?;
        let responses = grpc
            .streaming(
                tonic::Request::new(UnboundedReceiverStream::new(queue)),
                PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await?
            .into_inner();
        Ok(Self {
            requests,
            responses,
        })
    }

    async fn answer(&mut self) -> Result<MessageResponse, Status> {
        self.responses
            .message()
            .await?
            .and_then(|reply| reply.message_response)
            .ok_or_else(|| Status::unavailable("the reflection stream ended without an answer"))
    }

    async fn ask(&mut self, request: MessageRequest) -> Result<MessageResponse, Status> {
        send(&self.requests, request)?;
        self.answer().await
    }
}

fn send(
    requests: &mpsc::UnboundedSender<ServerReflectionRequest>,
    request: MessageRequest,
) -> Result<(), Status> {
    requests
        .send(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        })
        .map_err(|_| Status::unavailable("the reflection stream closed"))
}

/// Every file the plugin's services need, by file name.
async fn files(
    channel: Channel,
    path: &'static str,
) -> Result<BTreeMap<String, FileDescriptorProto>, Status> {
    let mut session =
        Session::open(channel, path, MessageRequest::ListServices(String::new())).await?;
    let services = match session.answer().await? {
        MessageResponse::ListServicesResponse(list) => list.service,
        MessageResponse::ErrorResponse(err) => return Err(reflected_error(&err)),
        _ => return Err(unexpected("a service list")),
    };
    let mut files = BTreeMap::new();
    for service in services {
        match session
            .ask(MessageRequest::FileContainingSymbol(service.name.clone()))
            .await?
        {
            MessageResponse::FileDescriptorResponse(found) => {
                add(&mut files, found.file_descriptor_proto)?;
            }
            // A service listed without a descriptor (internal ones, on some servers) cannot be
            // called by name anyway; the others still can.
            MessageResponse::ErrorResponse(err) => {
                tracing::debug!(
                    service = service.name,
                    error = err.error_message,
                    "no descriptor for a reflected service"
                );
            }
            _ => return Err(unexpected("a file descriptor")),
        }
    }
    loop {
        let known: BTreeSet<&String> = files.keys().collect();
        let missing: BTreeSet<String> = files
            .values()
            .flat_map(|file| file.dependency.iter())
            .filter(|name| !known.contains(name))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(files);
        }
        for name in missing {
            match session
                .ask(MessageRequest::FileByFilename(name.clone()))
                .await?
            {
                MessageResponse::FileDescriptorResponse(found) => {
                    add(&mut files, found.file_descriptor_proto)?;
                }
                MessageResponse::ErrorResponse(err) => {
                    return Err(Status::not_found(format!(
                        "import {name:?} is not served: {}",
                        err.error_message
                    )));
                }
                _ => return Err(unexpected("a file descriptor")),
            }
            if !files.contains_key(&name) {
                return Err(Status::not_found(format!("import {name:?} is not served")));
            }
        }
    }
}

/// Decodes and keeps the files of one answer.
fn add(
    files: &mut BTreeMap<String, FileDescriptorProto>,
    encoded: Vec<Vec<u8>>,
) -> Result<(), Status> {
    for bytes in encoded {
        let file = FileDescriptorProto::decode(bytes.as_slice())
            .map_err(|err| Status::internal(format!("undecodable file descriptor: {err}")))?;
        files.insert(file.name().to_owned(), file);
        if files.len() > MAX_FILES {
            return Err(Status::resource_exhausted(format!(
                "more than {MAX_FILES} descriptor files"
            )));
        }
    }
    Ok(())
}

fn reflected_error(err: &tonic_reflection::pb::v1::ErrorResponse) -> Status {
    Status::new(Code::from_i32(err.error_code), err.error_message.clone())
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!(
        "the reflection service answered out of turn (expected {what})"
    ))
}
