//! Device management: `GET /devices`, `GET/PUT/DELETE /devices/{deviceId}`,
//! `POST /delete_devices`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt,
    api::client::device::{Device, delete_device, delete_devices, get_device, get_devices, update_device},
};

use super::account::password_uia;
use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
    users::devices::DeviceRecord,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(list).ruma(get).ruma(update).ruma(delete).ruma(delete_many)
}

fn to_device(device_id: OwnedDeviceId, record: DeviceRecord) -> Device {
    let mut device = Device::new(device_id);
    device.display_name = record.display_name;
    device.last_seen_ip = record.last_seen_ip;
    device.last_seen_ts = record.last_seen_ts.and_then(UInt::new).map(MilliSecondsSinceUnixEpoch);
    device
}

async fn list(req: Ruma<get_devices::v3::Request>) -> Result<get_devices::v3::Response> {
    let devices = req.services.users.list_devices(req.user())?;
    Ok(get_devices::v3::Response::new(devices.into_iter().map(|(id, r)| to_device(id, r)).collect()))
}

async fn get(req: Ruma<get_device::v3::Request>) -> Result<get_device::v3::Response> {
    let id = &req.body.device_id;
    let record =
        req.services.users.get_device(req.user(), id)?.ok_or_else(|| Error::not_found("Device not found"))?;
    Ok(get_device::v3::Response::new(to_device(id.clone(), record)))
}

async fn update(req: Ruma<update_device::v3::Request>) -> Result<update_device::v3::Response> {
    let users = &req.services.users;
    // Without `display_name` the name stays as it is.
    match &req.body.display_name {
        Some(name) => users.set_device_display_name(req.user(), &req.body.device_id, name.clone())?,
        None if users.get_device(req.user(), &req.body.device_id)?.is_none() => {
            return Err(Error::not_found("Device not found"));
        }
        None => {}
    }
    Ok(update_device::v3::Response::new())
}

/// Deleting a device that is already gone succeeds, as the spec says, so a
/// retried request gets the same answer.
async fn delete(req: Ruma<delete_device::v3::Request>) -> Result<delete_device::v3::Response> {
    password_uia(&req, req.user(), req.body.auth.clone()).await?;
    req.services.users.remove_devices(req.user(), std::slice::from_ref(&req.body.device_id))?;
    Ok(delete_device::v3::Response::new())
}

async fn delete_many(req: Ruma<delete_devices::v3::Request>) -> Result<delete_devices::v3::Response> {
    password_uia(&req, req.user(), req.body.auth.clone()).await?;
    req.services.users.remove_devices(req.user(), &req.body.devices)?;
    Ok(delete_devices::v3::Response::new())
}
