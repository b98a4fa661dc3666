//! Synapse's admin API for server notices: `POST
//! /_synapse/admin/v1/send_server_notice` and `PUT …/{txnId}` (a retry
//! sends nothing again).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{post, put},
};
use serde_json::{Value, json};

use super::{Admin, Body, existing_user, missing_param};
use crate::{Error, Result, rooms::pipeline::Txn, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    const PATH: &str = "/_synapse/admin/v1/send_server_notice";
    router.route(PATH, post(send)).route(&format!("{PATH}/{{txn_id}}"), put(send_txn))
}

async fn notice(
    services: &Arc<Services>,
    admin: &Admin,
    body: &serde_json::Map<String, Value>,
    txn_id: Option<String>,
) -> Result<Json<Value>> {
    let missing: Vec<&str> = ["user_id", "content"].into_iter().filter(|f| !body.contains_key(*f)).collect();
    if !missing.is_empty() {
        return Err(missing_param(format!("Missing params: {missing:?}")));
    }
    if crate::admin::notices::notices_user(services).is_none() {
        return Err(super::bad_request("Server notices are not enabled on this server"));
    }
    let user = body["user_id"].as_str().ok_or_else(|| Error::invalid_param("user_id must be a string"))?;
    let user =
        existing_user(services, user, "Server notices can only be sent to local users", "User not found")?;
    let content = match &body["content"] {
        Value::Object(_) => body["content"].clone(),
        _ => return Err(Error::bad_json("content must be an object")),
    };
    let kind = body.get("type").and_then(Value::as_str).unwrap_or("m.room.message");
    let state_key = body.get("state_key").and_then(Value::as_str);
    let txn = txn_id.map(|txn_id| Txn {
        device_id: format!("ADMIN {} {}", admin.user, admin.device).into(),
        txn_id,
        endpoint: "server_notice",
    });
    let event_id = crate::admin::notices::send(services, &user, kind, state_key, content, txn).await?;
    Ok(Json(json!({"event_id": event_id})))
}

/// `POST /_synapse/admin/v1/send_server_notice`
async fn send(State(services): State<Arc<Services>>, admin: Admin, Body(body): Body) -> Result<Json<Value>> {
    notice(&services, &admin, &body, None).await
}

/// `PUT /_synapse/admin/v1/send_server_notice/{txnId}`
async fn send_txn(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(txn_id): Path<String>,
    Body(body): Body,
) -> Result<Json<Value>> {
    notice(&services, &admin, &body, Some(txn_id)).await
}
