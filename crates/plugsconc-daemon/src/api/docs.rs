//! The OpenAPI description of the REST API (`/api-docs/openapi.json`) and a Swagger UI served
//! from the binary (`/swagger-ui/`), so the docs work without internet access.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::types::ErrorBody;
use super::{call, catalog, health, install, jobs, logs, manage, publishers, routes};

/// The bearer token of every route that changes state.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "plugsconc",
        description = "The plugsconc daemon: the plugin catalog, its management, and calls into plugins. Routes that change state need `Authorization: Bearer <token>` (api.token, or the api-token file in the data folder). Errors are JSON: {\"error\": {\"code\", \"message\"}}."
    ),
    paths(
        catalog::list,
        catalog::show,
        catalog::list_unversioned,
        catalog::show_unversioned,
        health::health,
        health::ready,
        health::stats,
        health::metrics,
        manage::enable,
        manage::disable,
        manage::reload,
        manage::reload_all,
        manage::audit,
        logs::logs,
        jobs::submit,
        jobs::list,
        jobs::get,
        jobs::cancel,
        jobs::stats,
        install::install,
        install::uninstall,
        publishers::list,
        publishers::add,
        publishers::remove,
        call::call,
        routes::serve
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth)
)]
pub(super) struct ApiDoc;

/// The spec and the UI, as routes.
pub fn routes() -> axum::Router {
    SwaggerUi::new("/swagger-ui")
        .url("/api-docs/openapi.json", ApiDoc::openapi())
        .into()
}
