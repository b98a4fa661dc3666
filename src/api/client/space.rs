//! Spaces: `GET /rooms/{roomId}/hierarchy`.

use std::sync::Arc;

use axum::{
    Json, Router,
    response::{IntoResponse, Response},
};
use ruma::api::client::space::get_hierarchy;
use serde_json::json;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::hierarchy::{MAX_ROOMS, Query},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma_untyped(hierarchy)
}

/// The page token names how far the walk got and the query it belongs to:
/// a token of another query is refused, as Synapse does.
fn token(query: &Query, walked: usize) -> String {
    let depth = query.max_depth.map_or_else(|| "-".to_owned(), |d| d.to_string());
    format!("{walked}_{depth}_{}", u8::from(query.suggested_only))
}

async fn hierarchy(req: Ruma<get_hierarchy::v1::Request>) -> Result<Response> {
    let body = &req.body;
    let limit = body.limit.map_or(MAX_ROOMS, |l| usize::try_from(u64::from(l)).unwrap_or(MAX_ROOMS));
    if limit == 0 {
        return Err(Error::invalid_param("limit must be positive"));
    }
    let mut query = Query {
        suggested_only: body.suggested_only,
        max_depth: body.max_depth.map(u64::from),
        skip: 0,
        limit: limit.min(MAX_ROOMS),
    };
    if let Some(from) = &body.from {
        let skip = from
            .split_once('_')
            .and_then(|(skip, _)| skip.parse().ok())
            .filter(|skip| token(&query, *skip) == *from)
            .ok_or_else(|| Error::invalid_param("Unknown pagination token"))?;
        query.skip = skip;
    }
    let (rooms, more) = req.services.rooms.hierarchy(req.user(), &body.room_id, &query)?;
    let mut answer = json!({ "rooms": rooms });
    if more {
        answer["next_batch"] = json!(token(&query, query.skip + rooms.len()));
    }
    Ok(Json(answer).into_response())
}
