//! The key endpoints: this server's signing keys
//! (`GET /_matrix/key/v2/server`) and the notary
//! (`GET /_matrix/key/v2/query/{serverName}`, `POST /_matrix/key/v2/query`),
//! which relays other servers' key documents with its own signature.

use std::sync::Arc;

use axum::Router;
use ruma::{
    CanonicalJsonObject,
    api::federation::discovery::{
        ServerSigningKeys, get_remote_server_keys::v2 as query_one,
        get_remote_server_keys_batch::v2 as query, get_server_keys::v2 as server_keys,
    },
    serde::Raw,
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
};

/// Servers one notary request may ask about.
const MAX_SERVERS_PER_QUERY: usize = 100;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(own_keys)
        .ruma(notary_one)
        .ruma(notary_batch)
        // The deprecated form with a key ID (which is ignored), still asked
        // for by older servers and SyTest; Synapse serves it too.
        .route("/_matrix/key/v2/server/{key_id}", axum::routing::get(own_keys_by_id))
        .route("/_matrix/key/v2/query/{server_name}/{key_id}", axum::routing::get(notary_one_by_id))
}

/// The deprecated notary form with a key ID.
async fn notary_one_by_id(
    axum::extract::State(services): axum::extract::State<Arc<Services>>,
    axum::extract::Path((server_name, key_id)): axum::extract::Path<(String, String)>,
) -> Result<axum::Json<serde_json::Value>> {
    let server = ruma::OwnedServerName::try_from(server_name)
        .map_err(|_| Error::invalid_param("Invalid server name"))?;
    let found = services.servers.keys.notarise(&services.servers.client, &server, &[key_id], 0).await?;
    Ok(axum::Json(serde_json::json!({"server_keys": found})))
}

async fn own_keys_by_id(
    axum::extract::State(services): axum::extract::State<Arc<Services>>,
) -> Result<axum::Json<CanonicalJsonObject>> {
    Ok(axum::Json(services.servers.keys.own_document()?))
}

async fn own_keys(req: Ruma<server_keys::Request>) -> Result<server_keys::Response> {
    let document = req.services.servers.keys.own_document()?;
    Ok(server_keys::Response::new(raw(&document)?))
}

async fn notary_one(req: Ruma<query_one::Request>) -> Result<query_one::Response> {
    let servers = &req.services.servers;
    let minimum = req.body.minimum_valid_until_ts.get().into();
    let found = servers.keys.notarise(&servers.client, &req.body.server_name, &[], minimum).await?;
    Ok(query_one::Response::new(found.iter().map(raw).collect::<Result<_>>()?))
}

async fn notary_batch(req: Ruma<query::Request>) -> Result<query::Response> {
    if req.body.server_keys.len() > MAX_SERVERS_PER_QUERY {
        return Err(Error::invalid_param(format!("At most {MAX_SERVERS_PER_QUERY} servers per query")));
    }
    let servers = &req.services.servers;
    let mut documents = Vec::new();
    for (server, keys) in &req.body.server_keys {
        let minimum = keys
            .values()
            .filter_map(|criteria| criteria.minimum_valid_until_ts)
            .map(|ts| u64::from(ts.get()))
            .max()
            .unwrap_or(0);
        let key_ids: Vec<String> = keys.keys().map(|id| id.to_string()).collect();
        for document in servers.keys.notarise(&servers.client, server, &key_ids, minimum).await? {
            documents.push(raw(&document)?);
        }
    }
    Ok(query::Response::new(documents))
}

fn raw(document: &CanonicalJsonObject) -> Result<Raw<ServerSigningKeys>> {
    let json = serde_json::to_string(document).map_err(Error::internal)?;
    Ok(Raw::from_json(serde_json::value::RawValue::from_string(json).map_err(Error::internal)?))
}
