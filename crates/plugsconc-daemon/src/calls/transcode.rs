//! JSON to protobuf and back for any unary gRPC method, with descriptors compiled at run time
//! from `.proto` files (protox, no protoc), so any plugin can be called without recompiling.

use std::path::{Path, PathBuf};

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Why a method could not be found or a message not transcoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TranscodeError {
    /// A `.proto` file did not compile.
    #[error("cannot compile {files}: {reason}")]
    Compile {
        /// The files given.
        files: String,
        /// protox's message (file, line, column).
        reason: String,
    },
    /// The method name is not `package.Service/Method`.
    #[error("method {0:?} is not of the form package.Service/Method")]
    MethodSyntax(String),
    /// No such service or method in the descriptors.
    #[error("no method {method:?} in the plugin's descriptors; known services: {known}")]
    UnknownMethod {
        /// What was asked for.
        method: String,
        /// Services that do exist.
        known: String,
    },
    /// The plugin's descriptors could not be read through gRPC reflection.
    #[error("cannot read the plugin's descriptors through gRPC reflection: {reason}")]
    Reflection {
        /// What went wrong (not served, stalled, invalid descriptors).
        reason: String,
    },
    /// The method streams; only unary methods can be called with one JSON body.
    #[error("method {0} is streaming; only unary methods can be called")]
    Streaming(String),
    /// The JSON does not fit the request message.
    #[error("request body does not match {message}: {reason}")]
    Json {
        /// The request message's full name.
        message: String,
        /// serde's explanation (field, expected type).
        reason: String,
    },
}

/// Compiles `protos` (with their folders and `includes` as import paths) into a pool.
///
/// # Errors
///
/// [`TranscodeError::Compile`] with protox's located message.
pub fn load(protos: &[PathBuf], includes: &[PathBuf]) -> Result<DescriptorPool, TranscodeError> {
    let mut paths: Vec<PathBuf> = includes.to_vec();
    for proto in protos {
        let dir = proto
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        if !paths.contains(&dir) {
            paths.push(dir);
        }
    }
    let compile = || -> Result<DescriptorPool, protox::Error> {
        let mut compiler = protox::Compiler::new(&paths)?;
        compiler.include_imports(true);
        compiler.open_files(protos)?;
        Ok(compiler.descriptor_pool())
    };
    compile().map_err(|err| TranscodeError::Compile {
        files: protos
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        reason: err.to_string(),
    })
}

/// Finds `package.Service/Method` (a leading `/` is accepted) and checks it is unary.
///
/// # Errors
///
/// [`TranscodeError`] naming the method and the services that exist.
pub fn find_method(pool: &DescriptorPool, name: &str) -> Result<MethodDescriptor, TranscodeError> {
    let trimmed = name.trim_start_matches('/');
    let (service, method) = trimmed
        .split_once('/')
        .ok_or_else(|| TranscodeError::MethodSyntax(name.to_owned()))?;
    let found = pool
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == method));
    let method_desc = found.ok_or_else(|| TranscodeError::UnknownMethod {
        method: trimmed.to_owned(),
        known: pool
            .services()
            .map(|s| s.full_name().to_owned())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    if method_desc.is_client_streaming() || method_desc.is_server_streaming() {
        return Err(TranscodeError::Streaming(trimmed.to_owned()));
    }
    Ok(method_desc)
}

/// Parses a JSON body (proto3 JSON mapping) into the method's request message.
///
/// # Errors
///
/// [`TranscodeError::Json`] naming the message and what did not fit.
pub fn request_from_json(
    method: &MethodDescriptor,
    json: &str,
) -> Result<DynamicMessage, TranscodeError> {
    let input = method.input();
    let mut de = serde_json::Deserializer::from_str(json);
    let message = DynamicMessage::deserialize(input.clone(), &mut de).and_then(|m| {
        de.end()?;
        Ok(m)
    });
    message.map_err(|err| TranscodeError::Json {
        message: input.full_name().to_owned(),
        reason: err.to_string(),
    })
}

/// Renders a response message as proto3 JSON.
pub fn response_to_json(message: &DynamicMessage) -> serde_json::Value {
    // Serializing a well-formed dynamic message into a JSON value cannot fail.
    serde_json::to_value(message).unwrap_or(serde_json::Value::Null)
}

/// Calls a unary method with a dynamic request on `channel`.
///
/// # Errors
///
/// The gRPC status the plugin (or the transport) returned.
pub async fn call_unary(
    channel: Channel,
    method: &MethodDescriptor,
    request: DynamicMessage,
) -> Result<DynamicMessage, tonic::Status> {
    let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path)
        .map_err(|err| tonic::Status::invalid_argument(format!("invalid method path: {err}")))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|err| tonic::Status::unavailable(format!("plugin not reachable: {err}")))?;
    let codec = DynamicCodec {
        output: method.output(),
    };
    Ok(grpc
        .unary(tonic::Request::new(request), path, codec)
        .await?
        .into_inner())
}

/// Encodes any dynamic message; decodes into the method's output type.
#[derive(Debug, Clone)]
struct DynamicCodec {
    output: MessageDescriptor,
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        DynamicDecoder(self.output.clone())
    }
}

#[derive(Debug)]
struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|err| tonic::Status::internal(format!("cannot encode request: {err}")))
    }
}

#[derive(Debug)]
struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|err| tonic::Status::internal(format!("cannot decode response: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv_pool() -> DescriptorPool {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
        load(&[root.join("kvpb/kv.proto")], &[]).unwrap()
    }

    #[test]
    fn finds_unary_methods_and_names_known_services() {
        let pool = kv_pool();
        assert_eq!(find_method(&pool, "kv.KV/Echo").unwrap().name(), "Echo");
        assert_eq!(find_method(&pool, "/kv.KV/Put").unwrap().name(), "Put");
        let err = find_method(&pool, "kv.KV/Nope").unwrap_err().to_string();
        assert!(err.contains("kv.KV"), "{err}");
        assert!(matches!(
            find_method(&pool, "kv.KV.Echo"),
            Err(TranscodeError::MethodSyntax(_))
        ));
    }

    #[test]
    fn json_round_trip_uses_proto3_mapping() {
        let pool = kv_pool();
        let method = find_method(&pool, "kv.KV/Put").unwrap();
        let request = request_from_json(&method, r#"{"key":"a","value":"aGk="}"#).unwrap();
        let bytes = request.encode_to_vec();
        let decoded = DynamicMessage::decode(method.input(), bytes.as_slice()).unwrap();
        assert_eq!(
            response_to_json(&decoded),
            serde_json::json!({"key": "a", "value": "aGk="})
        );
        let err = request_from_json(&method, r#"{"key": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("kv.PutRequest"), "{err}");
        assert!(request_from_json(&method, r#"{"nope": 1}"#).is_err());
        assert!(request_from_json(&method, r#"{} x"#).is_err());
    }

    #[test]
    fn compile_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.proto");
        std::fs::write(&bad, "syntax = \"proto3\"; message {").unwrap();
        let err = load(&[bad], &[]).unwrap_err().to_string();
        assert!(err.contains("bad.proto"), "{err}");
    }
}
