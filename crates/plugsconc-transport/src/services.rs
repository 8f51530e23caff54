//! A set of gRPC services served on one connection, routed by the service name in the request
//! path (`/package.Service/Method`). tonic's own router is built on axum, which a plugin SDK must
//! not pull in; this is the few lines of it that gRPC needs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt as _};

type BoxedService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;
type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>>;

/// A tonic-generated server (what `FooServer::new(impl)` returns), in one bound.
pub trait GrpcService:
    Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S where
    S: Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// gRPC services keyed by their full name; unknown services answer `UNIMPLEMENTED`.
#[derive(Clone, Default)]
pub struct Services {
    by_name: Arc<HashMap<&'static str, BoxedService>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_name.keys()).finish()
    }
}

impl Services {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tonic-generated server (replacing one of the same name).
    #[must_use]
    pub fn add_service<S: GrpcService>(mut self, svc: S) -> Self {
        Arc::make_mut(&mut self.by_name).insert(S::NAME, BoxCloneSyncService::new(svc));
        self
    }

    /// The names of the services in the set.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_name.keys().copied()
    }
}

impl Service<http::Request<Body>> for Services {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Every boxed service is checked for readiness when it is called.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let name = request
            .uri()
            .path()
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        match self.by_name.get(name) {
            Some(svc) => Box::pin(svc.clone().oneshot(request)),
            None => {
                let status = tonic::Status::unimplemented(format!("unknown service {name}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
