//! `plugin.GRPCController`: the host's request to stop.

use plugsconc_protocol::proto::plugin::Empty;
use plugsconc_protocol::proto::plugin::grpc_controller_server::GrpcController;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Answers `Shutdown` and starts a graceful stop: no new connections, in-flight calls finish.
#[derive(Debug)]
pub(crate) struct Controller {
    pub(crate) shutdown: CancellationToken,
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::debug!("shutdown requested by the host");
        self.shutdown.cancel();
        Ok(Response::new(Empty {}))
    }
}
