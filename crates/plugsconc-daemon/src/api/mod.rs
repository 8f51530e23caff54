//! The REST API under `/api/v1` (and the unversioned `GET /plugins`, `GET /plugins/{name}`): the
//! catalog, the daemon's health and readiness, and — behind the bearer token — enable, disable
//! (recorded in the store, announced to daemons sharing it), reload, the audit log, and a
//! generic JSON call of any unary plugin method. Errors are JSON with a stable code and a
//! message about the client's own mistake, nothing internal — axum's own rejections and
//! unknown routes and methods included.
//!
//! The older plugin manager's surface (`/api/plugins...`, `PUT .../enable`, `DELETE` to
//! uninstall) is served as aliases of the same handlers: an alias in the table names the route
//! it stands for, and its OpenAPI operation is copied from that one.
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

/// The prefix of the older plugin manager's unversioned API, served as aliases.
const OLDER: &str = "/api";

/// Which methods a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Delete,
    /// Every method: the plugins' own HTTP routes, which the handler matches itself.
    Any,
}

impl Verb {
    /// The method's name as OpenAPI spells it (`any` for [`Verb::Any`]).
    fn openapi(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
            Self::Delete => "delete",
            Self::Any => "any",
        }
    }
}

/// Where a route is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mount {
    /// Under [`V1`], open to anyone.
    Open,
    /// Under [`V1`], behind the bearer token (checked before the method: a client without the
    /// token learns nothing about the route).
    Token,
    /// Under [`OLDER`], open to anyone.
    OlderOpen,
    /// Under [`OLDER`], behind the bearer token.
    OlderToken,
    /// At the root, outside the version (the handler checks the token where one is needed).
    Root,
}

impl Mount {
    fn guarded(self) -> bool {
        matches!(self, Self::Token | Self::OlderToken)
    }
}

/// One route: what the router serves and what the OpenAPI document must describe.
struct Route {
    verb: Verb,
    mount: Mount,
    /// Relative to the mount.
    path: &'static str,
    handler: MethodRouter<ApiState>,
    /// The route this one is an alias of (its verb and full path): same handler, and the
    /// OpenAPI operation copied from it.
    alias_of: Option<(Verb, &'static str)>,
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
            Verb::Put => axum::routing::on(MethodFilter::PUT, handler),
            Verb::Delete => axum::routing::on(MethodFilter::DELETE, handler),
            Verb::Any => axum::routing::any(handler),
        };
        Self {
            verb,
            mount,
            path,
            handler,
            alias_of: None,
        }
    }

    /// Marks the route as an alias of `verb full_path`.
    fn alias_of(mut self, verb: Verb, full_path: &'static str) -> Self {
        self.alias_of = Some((verb, full_path));
        self
    }

    /// The path a client requests.
    fn full_path(&self) -> String {
        match self.mount {
            Mount::Open | Mount::Token => format!("{V1}{}", self.path),
            Mount::OlderOpen | Mount::OlderToken => format!("{OLDER}{}", self.path),
            Mount::Root => self.path.to_owned(),
        }
    }
}

/// Every route of the API (the OpenAPI document and Swagger UI are served beside them).
fn table() -> Vec<Route> {
    use Mount::{OlderOpen, OlderToken, Open, Root, Token};
    use Verb::{Any, Delete, Get, Post, Put};
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
        Route::new(Get, Open, "/plugins/search", catalog::search),
        Route::new(Put, Token, "/plugins/{name}/enable", manage::put_enable),
        Route::new(Put, Token, "/plugins/{name}/disable", manage::put_disable),
        // The older plugin manager's verbs, where /api/v1 has another.
        Route::new(Get, Open, "/plugins/stats", health::stats).alias_of(Get, "/api/v1/stats"),
        Route::new(Delete, Token, "/plugins/{name}", install::uninstall)
            .alias_of(Post, "/api/v1/plugins/{name}/uninstall"),
        Route::new(Delete, Token, "/publishers/{name}", publishers::remove)
            .alias_of(Post, "/api/v1/publishers/{name}/remove"),
        // And its unversioned paths.
        Route::new(Get, OlderOpen, "/plugins", catalog::list).alias_of(Get, "/api/v1/plugins"),
        Route::new(Get, OlderOpen, "/plugins/search", catalog::search)
            .alias_of(Get, "/api/v1/plugins/search"),
        Route::new(Get, OlderOpen, "/plugins/stats", health::stats).alias_of(Get, "/api/v1/stats"),
        Route::new(Get, OlderOpen, "/plugins/{name}", catalog::show)
            .alias_of(Get, "/api/v1/plugins/{name}"),
        Route::new(
            Put,
            OlderToken,
            "/plugins/{name}/enable",
            manage::put_enable,
        )
        .alias_of(Put, "/api/v1/plugins/{name}/enable"),
        Route::new(
            Put,
            OlderToken,
            "/plugins/{name}/disable",
            manage::put_disable,
        )
        .alias_of(Put, "/api/v1/plugins/{name}/disable"),
        Route::new(Post, OlderToken, "/plugins/install", install::install)
            .alias_of(Post, "/api/v1/plugins/install"),
        Route::new(Post, OlderToken, "/plugins/{name}/reload", manage::reload)
            .alias_of(Post, "/api/v1/plugins/{name}/reload"),
        Route::new(Delete, OlderToken, "/plugins/{name}", install::uninstall)
            .alias_of(Post, "/api/v1/plugins/{name}/uninstall"),
        Route::new(Delete, OlderToken, "/publishers/{name}", publishers::remove)
            .alias_of(Post, "/api/v1/publishers/{name}/remove"),
        Route::new(Get, Root, "/plugins", catalog::list_unversioned),
        Route::new(Get, Root, "/plugins/{name}", catalog::show_unversioned),
        Route::new(Any, Root, "/plugins/{name}/{*rest}", routes::serve),
        Route::new(Get, Root, "/metrics", health::metrics),
    ]
}

/// Every route.
pub fn router(state: ApiState) -> Router {
    let (mut open, mut guarded) = (Router::new(), Router::new());
    for route in table() {
        let router = if route.mount.guarded() {
            &mut guarded
        } else {
            &mut open
        };
        // Two verbs of one path merge into one method router, across the two routers too
        // (`GET` open and `DELETE` guarded on one path).
        *router = std::mem::take(router).route(&route.full_path(), route.handler);
    }
    let guarded = guarded.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    open.merge(guarded)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(state)
        .merge(docs::routes())
        .layer(middleware::from_fn(rejection::json_errors))
}
