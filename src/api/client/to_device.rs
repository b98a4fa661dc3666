//! Send-to-device messaging: `PUT /sendToDevice/{eventType}/{txnId}`.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use http::StatusCode;
use ruma::{api::client::to_device::send_event_to_device, to_device::DeviceIdOrAllDevices};

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    services::Services,
    users::to_device::Recipient,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(send)
}

async fn send(req: Ruma<send_event_to_device::v3::Request>) -> Result<send_event_to_device::v3::Response> {
    let body = &req.body;
    req.services.limiters.to_device.check_user(req.user())?;
    let limit = req.services.config.limits.max_to_device_message_size;
    let mut messages = BTreeMap::new();
    for (user, by_device) in &body.messages {
        let mut recipients = BTreeMap::new();
        for (target, content) in by_device {
            let content = content.json();
            if content.get().len() > limit {
                return Err(Error::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ruma::api::error::ErrorKind::TooLarge,
                    format!(
                        "The message for {user} {target} is {} bytes; a to-device message may be at most {limit}",
                        content.get().len()
                    ),
                ));
            }
            let recipient = match target {
                DeviceIdOrAllDevices::AllDevices => Recipient::AllDevices,
                DeviceIdOrAllDevices::DeviceId(device) => Recipient::Device(device.clone()),
            };
            recipients.insert(recipient, content.to_owned());
        }
        messages.insert(user.clone(), recipients);
    }
    req.services.users.send_to_device(
        req.user(),
        req.device(),
        &body.event_type.to_string(),
        body.txn_id.as_str(),
        &messages,
    )?;
    // Unique per sender: its device and transaction ID.
    let message_id = format!("{}_{}", req.device(), body.txn_id);
    crate::federation::edus::send_to_device(
        &req.services,
        req.user(),
        &body.event_type.to_string(),
        &message_id,
        &messages,
    )?;
    Ok(send_event_to_device::v3::Response::new())
}
