//! Receipts and read markers: `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`,
//! `POST /rooms/{roomId}/read_markers`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    OwnedEventId, RoomId,
    api::client::{
        read_marker::set_read_marker,
        receipt::create_receipt::{self, v3::ReceiptType},
    },
    events::receipt::ReceiptThread,
};
use serde_json::json;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    rooms::receipts::ReceiptKey,
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(receipt).ruma(read_markers)
}

/// The room's short ID, if the user is joined to it.
fn joined_room<T>(req: &Ruma<T>, room_id: &RoomId) -> Result<u64> {
    let rooms = &req.services.rooms;
    let not_in_room = || Error::forbidden("You are not in this room.");
    let short = rooms.room_short(room_id)?.ok_or_else(not_in_room)?;
    match rooms.membership(req.user(), short)?.as_deref() {
        Some("join") => Ok(short),
        _ => Err(not_in_room()),
    }
}

fn set_fully_read<T>(
    req: &Ruma<T>,
    room_id: &RoomId,
    room_short: u64,
    event_id: &OwnedEventId,
) -> Result<()> {
    check_visible(req, room_short, event_id)?;
    let content = serde_json::value::to_raw_value(&json!({"event_id": event_id})).map_err(Error::internal)?;
    req.services.users.set_account_data(req.user(), Some(room_id), "m.fully_read", &content)
}

/// Receipts and read markers go only on events of the room the user may
/// see: else they would tell whether an unseen event exists (review §2.2).
fn check_visible<T>(req: &Ruma<T>, room_short: u64, event_id: &OwnedEventId) -> Result<()> {
    let rooms = &req.services.rooms;
    let not_found = || Error::not_found("Event not found in this room");
    let short = rooms.event_short(event_id)?.ok_or_else(not_found)?;
    let meta =
        rooms.event_meta(short)?.filter(|m| m.room == room_short && m.accepted()).ok_or_else(not_found)?;
    let pdu = rooms.pdu_by_short(short)?.ok_or_else(not_found)?;
    if !rooms.can_see(req.user(), &pdu, &meta)? {
        return Err(not_found());
    }
    Ok(())
}

fn set_read(
    req: &Ruma<impl Sized>,
    room_short: u64,
    kind: &str,
    thread: String,
    event_id: OwnedEventId,
) -> Result<()> {
    check_visible(req, room_short, &event_id)?;
    let key = ReceiptKey { kind: kind.to_owned(), thread, user: req.user().clone() };
    req.services.rooms.set_receipt(room_short, key.clone(), event_id.clone())?;
    let room_id =
        ruma::OwnedRoomId::try_from(req.services.rooms.short.name(room_short)?).map_err(Error::internal)?;
    crate::federation::edus::send_receipt(&req.services, &room_id, room_short, &key, &event_id)?;
    // The phone's unread count may have gone down.
    req.services.users.request_badge(req.user());
    Ok(())
}

async fn receipt(req: Ruma<create_receipt::v3::Request>) -> Result<create_receipt::v3::Response> {
    let body = &req.body;
    req.services.limiters.receipts.check_user(req.user())?;
    let room_short = joined_room(&req, &body.room_id)?;
    let thread = match &body.thread {
        ReceiptThread::Unthreaded => String::new(),
        ReceiptThread::Main => "main".to_owned(),
        ReceiptThread::Thread(root) => root.to_string(),
        _ => return Err(Error::invalid_param("thread_id field must be a non-empty string")),
    };
    match &body.receipt_type {
        ReceiptType::FullyRead if thread.is_empty() => {
            set_fully_read(&req, &body.room_id, room_short, &body.event_id)?
        }
        ReceiptType::FullyRead => {
            return Err(Error::invalid_param("m.fully_read receipts cannot be threaded"));
        }
        ReceiptType::Read => set_read(&req, room_short, "m.read", thread, body.event_id.clone())?,
        ReceiptType::ReadPrivate => {
            set_read(&req, room_short, "m.read.private", thread, body.event_id.clone())?
        }
        other => return Err(Error::invalid_param(format!("Unknown receipt type {}", other.as_str()))),
    }
    Ok(create_receipt::v3::Response::new())
}

async fn read_markers(req: Ruma<set_read_marker::v3::Request>) -> Result<set_read_marker::v3::Response> {
    let body = &req.body;
    req.services.limiters.receipts.check_user(req.user())?;
    let room_short = joined_room(&req, &body.room_id)?;
    if let Some(event_id) = &body.fully_read {
        set_fully_read(&req, &body.room_id, room_short, event_id)?;
    }
    if let Some(event_id) = &body.read_receipt {
        set_read(&req, room_short, "m.read", String::new(), event_id.clone())?;
    }
    if let Some(event_id) = &body.private_read_receipt {
        set_read(&req, room_short, "m.read.private", String::new(), event_id.clone())?;
    }
    Ok(set_read_marker::v3::Response::new())
}
