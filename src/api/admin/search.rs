//! The search index as an operator sees it: `GET /_hearth/admin/v1/search`
//! (on or off, how far it has indexed the stream, documents, bytes on disk)
//! and `POST /_hearth/admin/v1/search/reindex` (empty it and build it again
//! from the database, while the server runs).

use std::sync::Arc;

use axum::Router;
use serde_json::json;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter, json_reply},
    services::Services,
};

mod endpoints {
    use ruma::{
        api::{auth_scheme::AccessToken, request},
        metadata,
    };

    pub use crate::api::ruma::JsonResponse as Response;

    pub mod status {
        pub use super::Response;
        use super::*;

        metadata! {
            method: GET,
            authentication: AccessToken,
            rate_limited: false,
            path: "/_hearth/admin/v1/search",
        }

        #[request]
        pub struct Request {}
    }

    pub mod reindex {
        pub use super::Response;
        use super::*;

        metadata! {
            method: POST,
            authentication: AccessToken,
            rate_limited: false,
            path: "/_hearth/admin/v1/search/reindex",
        }

        #[request]
        pub struct Request {}
    }
}

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(status).ruma(reindex)
}

async fn status(req: Ruma<endpoints::status::Request>) -> Result<endpoints::Response> {
    super::require_admin(&req.services, req.user())?;
    let services = &req.services;
    let stream = services.stream.visible();
    let Some(search) = &services.search else {
        return json_reply(&json!({"enabled": false, "stream_position": stream}));
    };
    let (documents, bytes) = search.size()?;
    json_reply(&json!({
        "enabled": true,
        "indexed_position": search.indexed(),
        "rebuild_pending": search.rebuild_pending(),
        "stream_position": stream,
        "documents": documents,
        "size_bytes": bytes,
    }))
}

async fn reindex(req: Ruma<endpoints::reindex::Request>) -> Result<endpoints::Response> {
    super::require_admin(&req.services, req.user())?;
    let search = req.services.search.as_ref().ok_or_else(|| Error::not_found("Search is off"))?;
    search.request_rebuild();
    json_reply(&json!({}))
}
