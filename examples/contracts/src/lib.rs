//! The example contracts, generated from `proto/`: `animal` (a small sample contract), `kv` (go-plugin's
//! gRPC example, wire-exact) and `counter` (go-plugin's bidirectional example: the plugin calls
//! the host back through the broker).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `proto/animalpb/animal.proto`.
pub mod animal {
    tonic::include_proto!("animal");
}

/// `proto/kvpb/kv.proto`.
pub mod kv {
    tonic::include_proto!("kv");
}

/// `proto/counterpb/counter.proto`.
pub mod counter {
    tonic::include_proto!("counter");
}

/// Encoded `FileDescriptorSet` of the three contracts (for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/contracts.bin"));
