//! The OpenAPI 3 document of the admin API, served at `/api/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{catalog, info, jobs, lanes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Sluice admin API",
        description = "Jobs, destinations, plugins, config and audit of a Sluice deployment. \
                       Every call needs `Authorization: Bearer <token>`; read tokens may GET, \
                       operator tokens may also POST, PUT and DELETE. Errors are \
                       `{\"error\": \"...\"}`, with `field` when a catalog item is refused."
    ),
    paths(
        jobs::list, jobs::show, jobs::retry, jobs::abort, jobs::replay,
        lanes::list, lanes::stats, lanes::blocked, lanes::pause, lanes::resume,
        info::plugins, info::config, info::audit, info::whoami,
        catalog::show, catalog::audit, catalog::apply::apply,
        catalog::destinations::create_destination, catalog::destinations::show_destination,
        catalog::destinations::update_destination, catalog::destinations::delete_destination,
        catalog::sources::create_source, catalog::sources::show_source,
        catalog::sources::update_source, catalog::sources::delete_source,
        catalog::sources::add_key, catalog::plugins::plugins,
    ),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
