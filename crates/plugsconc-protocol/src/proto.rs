//! Generated code for go-plugin's internal services (package `plugin`): the broker, the
//! controller and the stdio stream (`proto/pluginpb/plugin.proto`); and plugsconc's host
//! services (`proto/hostpb/host.proto`).

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Package `plugin`, exactly as go-plugin declares it.
pub mod plugin {
    tonic::include_proto!("plugin");
}

/// Package `plugsconc.host.v1`: the host services plugins reach through the broker.
pub mod host {
    tonic::include_proto!("plugsconc.host.v1");
}
