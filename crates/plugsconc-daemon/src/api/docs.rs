//! The OpenAPI description of the REST API (`/api-docs/openapi.json`) and a Swagger UI served
//! from the binary (`/swagger-ui/`), so the docs work without internet access.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::types::ErrorBody;
use super::{call, catalog, health, install, jobs, logs, manage, publishers, routes};

/// The aliases of the route table: each gets the operation of the route it stands for, saying
/// so, under an operation id of its own.
struct Aliases;

impl Modify for Aliases {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for route in super::table() {
            let Some((verb, of)) = route.alias_of else {
                continue;
            };
            let Some(mut operation) = openapi
                .paths
                .paths
                .get_mut(of)
                .and_then(|item| slot(item, verb))
                .and_then(|operation| operation.clone())
            else {
                // The route-table test names the alias whose original is not documented.
                continue;
            };
            let path = route.full_path();
            let method = route.verb.openapi();
            operation.operation_id = operation
                .operation_id
                .map(|id| format!("{id}_as_{method}_{}", path.replace(['/', '{', '}'], "_")));
            operation.summary = Some(format!("Alias of {} {of}", verb.openapi().to_uppercase()));
            let item = openapi.paths.paths.entry(path).or_default();
            if let Some(slot) = slot(item, route.verb) {
                *slot = Some(operation);
            }
        }
    }
}

/// The operation of `item` for `verb`, or its slot (`None` for [`super::Verb::Any`], which no
/// alias uses).
fn slot(item: &mut PathItem, verb: super::Verb) -> Option<&mut Option<Operation>> {
    match verb {
        super::Verb::Get => Some(&mut item.get),
        super::Verb::Post => Some(&mut item.post),
        super::Verb::Put => Some(&mut item.put),
        super::Verb::Delete => Some(&mut item.delete),
        super::Verb::Any => None,
    }
}

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
        catalog::search,
        catalog::show,
        catalog::list_unversioned,
        catalog::show_unversioned,
        health::health,
        health::ready,
        health::stats,
        health::metrics,
        manage::enable,
        manage::disable,
        manage::put_enable,
        manage::put_disable,
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
    modifiers(&BearerAuth, &Aliases)
)]
pub(super) struct ApiDoc;

/// The spec and the UI, as routes.
pub fn routes() -> axum::Router {
    SwaggerUi::new("/swagger-ui")
        .url("/api-docs/openapi.json", ApiDoc::openapi())
        .into()
}
