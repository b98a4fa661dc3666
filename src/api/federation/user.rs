//! Other servers asking about this server's users' end-to-end encryption:
//! `POST /user/keys/query`, `POST /user/keys/claim`, `GET /user/devices/{userId}`.
//! Only public signatures go out (a user-signing key's signatures stay
//! with their signer).

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OwnedOneTimeKeyId, UInt,
    api::federation::{
        device::get_devices::v1 as devices,
        keys::{claim_keys::v1 as claim, get_keys::v1 as query},
    },
    serde::Raw,
};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    federation::devices::cross_signing,
    services::Services,
    users::cross_signing::{MASTER, SELF_SIGNING},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(query_keys).ruma(claim_keys).ruma(user_devices)
}

async fn query_keys(req: Ruma<query::Request>) -> Result<query::Response> {
    let services = &req.services;
    let mut response = query::Response::new(BTreeMap::new());
    for (user, devices) in &req.body.device_keys {
        if !services.users.is_local(user) {
            continue;
        }
        response.device_keys.insert(user.clone(), services.users.device_keys_for_query(user, devices)?);
        if let Some(key) = cross_signing(services, user, MASTER)? {
            response.master_keys.insert(user.clone(), key);
        }
        if let Some(key) = cross_signing(services, user, SELF_SIGNING)? {
            response.self_signing_keys.insert(user.clone(), key);
        }
    }
    Ok(response)
}

async fn claim_keys(req: Ruma<claim::Request>) -> Result<claim::Response> {
    let users = &req.services.users;
    let mut claimed = BTreeMap::new();
    for (user, devices) in &req.body.one_time_keys {
        if !users.is_local(user) {
            continue;
        }
        for (device, algorithm) in devices {
            let Some((id, key)) = users.claim_key(user, device, algorithm.as_str())? else { continue };
            let id = OwnedOneTimeKeyId::try_from(id).map_err(Error::internal)?;
            let key = Raw::new(&key).map_err(Error::internal)?.cast_unchecked();
            claimed
                .entry(user.clone())
                .or_insert_with(BTreeMap::new)
                .entry(device.clone())
                .or_insert_with(BTreeMap::new)
                .insert(id, key);
        }
    }
    Ok(claim::Response::new(claimed))
}

async fn user_devices(req: Ruma<devices::Request>) -> Result<devices::Response> {
    let services = &req.services;
    let user = &req.body.user_id;
    if !services.users.is_local(user) {
        return Err(Error::not_found("Not a user of this server"));
    }
    let stream_id = crate::federation::devices::local_stream_id(services, user)?;
    let stream_id = UInt::try_from(stream_id).unwrap_or(UInt::MAX);
    let mut response = devices::Response::new(user.clone(), stream_id);
    let keys = services.users.device_keys_for_query(user, &[])?;
    for (device, record) in services.users.list_devices(user)? {
        let Some(device_keys) = keys.get(&device) else { continue };
        let mut entry = devices::UserDevice::new(device, device_keys.clone());
        entry.device_display_name = record.display_name;
        response.devices.push(entry);
    }
    response.master_key = cross_signing(services, user, MASTER)?;
    response.self_signing_key = cross_signing(services, user, SELF_SIGNING)?;
    Ok(response)
}
