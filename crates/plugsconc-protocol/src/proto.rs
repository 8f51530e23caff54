//! Generated code for go-plugin's internal services (package `plugin`): the broker, the
//! controller and the stdio stream. The `.proto` lives in `proto/pluginpb/plugin.proto`.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Package `plugin`, exactly as go-plugin declares it.
pub mod plugin {
    tonic::include_proto!("plugin");
}
