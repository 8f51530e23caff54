//! The REST API under `/api/v1` (and the unversioned `GET /plugins`, `GET /plugins/{name}`): the
//! catalog, the daemon's health and readiness, and — behind the bearer token — enable, disable
//! (recorded in the store, announced to daemons sharing it), reload, the audit log, and a
//! generic JSON call of any unary plugin method. Errors are JSON with a stable code and a
//! message about the client's own mistake, nothing internal — axum's own rejections and
//! unknown routes and methods included.
//!
//! This file holds the route table, the one list the router is built from and the OpenAPI
//! document is checked against; the handlers live in the modules named after what they serve,
//! the bodies in [`types`].

mod auth;
pub mod call;
mod catalog;
mod docs;
mod error;
mod extract;
mod health;
mod install;
mod jobs;
pub mod logs;
mod manage;
mod publishers;
mod rejection;
mod routes;
pub mod server;
mod state;
pub mod types;

#[cfg(test)]
mod tests;

use axum::handler::Handler;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Router, middleware};

pub use auth::load_or_create as load_token;
pub use error::ApiError;
pub use install::InstallGate;
pub use state::ApiState;

/// The prefix of the versioned API.
const V1: &str = "/api/v1";

/// Which methods a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    /// Every method: the plugins' own HTTP routes, which the handler matches itself.
    Any,
}

/// Where a route is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mount {
    /// Under [`V1`], open to anyone.
    Open,
    /// Under [`V1`], behind the bearer token (checked before the method: a client without the
    /// token learns nothing about the route).
    Token,
    /// At the root, outside the version (the handler checks the token where one is needed).
    Root,
}

/// One route: what the router serves and what the OpenAPI document must describe.
struct Route {
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by the documentation check")
    )]
    verb: Verb,
    mount: Mount,
    /// Relative to the mount.
    path: &'static str,
    handler: MethodRouter<ApiState>,
}

impl Route {
    fn new<H, T>(verb: Verb, mount: Mount, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let handler = match verb {
            Verb::Get => axum::routing::on(MethodFilter::GET, handler),
            Verb::Post => axum::routing::on(MethodFilter::POST, handler),
            Verb::Any => axum::routing::any(handler),
        };
        Self {
            verb,
            mount,
            path,
            handler,
        }
    }

    /// The path a client requests.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by the documentation check")
    )]
    fn full_path(&self) -> String {
        match self.mount {
            Mount::Open | Mount::Token => format!("{V1}{}", self.path),
            Mount::Root => self.path.to_owned(),
        }
    }
}

/// Every route of the API (the OpenAPI document and Swagger UI are served beside them).
fn table() -> Vec<Route> {
    use Mount::{Open, Root, Token};
    use Verb::{Any, Get, Post};
    vec![
        Route::new(Get, Open, "/plugins", catalog::list),
        Route::new(Get, Open, "/plugins/{name}", catalog::show),
        Route::new(Get, Open, "/health", health::health),
        Route::new(Get, Open, "/ready", health::ready),
        Route::new(Get, Open, "/stats", health::stats),
        Route::new(Post, Token, "/plugins/{name}/enable", manage::enable),
        Route::new(Post, Token, "/plugins/{name}/disable", manage::disable),
        Route::new(Post, Token, "/plugins/{name}/reload", manage::reload),
        Route::new(Post, Token, "/reload", manage::reload_all),
        Route::new(Get, Token, "/audit", manage::audit),
        Route::new(Get, Token, "/logs", logs::logs),
        Route::new(Get, Token, "/jobs", jobs::list),
        Route::new(Post, Token, "/jobs", jobs::submit),
        Route::new(Get, Token, "/jobs/stats", jobs::stats),
        Route::new(Get, Token, "/jobs/{id}", jobs::get),
        Route::new(Post, Token, "/jobs/{id}/cancel", jobs::cancel),
        Route::new(Get, Token, "/publishers", publishers::list),
        Route::new(Post, Token, "/publishers", publishers::add),
        Route::new(Post, Token, "/publishers/{name}/remove", publishers::remove),
        Route::new(Post, Token, "/plugins/install", install::install),
        Route::new(Post, Token, "/plugins/{name}/uninstall", install::uninstall),
        Route::new(
            Post,
            Token,
            "/plugins/{name}/call/{service}/{method}",
            call::call,
        ),
        Route::new(Get, Root, "/plugins", catalog::list_unversioned),
        Route::new(Get, Root, "/plugins/{name}", catalog::show_unversioned),
        Route::new(Any, Root, "/plugins/{name}/{*rest}", routes::serve),
        Route::new(Get, Root, "/metrics", health::metrics),
    ]
}

/// Every route.
pub fn router(state: ApiState) -> Router {
    let (mut open, mut guarded, mut root) = (Router::new(), Router::new(), Router::new());
    for route in table() {
        let router = match route.mount {
            Mount::Open => &mut open,
            Mount::Token => &mut guarded,
            Mount::Root => &mut root,
        };
        // Two verbs of one path merge into one method router.
        *router = std::mem::take(router).route(route.path, route.handler);
    }
    let guarded = guarded.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    root.nest(V1, open.merge(guarded))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
        .merge(docs::routes())
        .layer(middleware::from_fn(rejection::json_errors))
}
