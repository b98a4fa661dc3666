//! Acting on an event report from the queue: redacting the reported event,
//! kicking or banning its sender — done by the room's most powerful local
//! member, as a room moderator would —, or dismissing the report. Every
//! action closes the report.

use std::sync::Arc;

use ruma::{OwnedEventId, UserId};
use serde_json::json;

use crate::{Error, Result, rooms::builder::PduBuilder, services::Services};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportAction {
    Redact,
    Kick,
    Ban,
    Dismiss,
}

impl ReportAction {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "redact" => Some(Self::Redact),
            "kick" => Some(Self::Kick),
            "ban" => Some(Self::Ban),
            "dismiss" => Some(Self::Dismiss),
            _ => None,
        }
    }

    /// The past tense, for logs and answers.
    pub fn done(self) -> &'static str {
        match self {
            Self::Redact => "redacted",
            Self::Kick => "kicked",
            Self::Ban => "banned",
            Self::Dismiss => "dismissed",
        }
    }
}

/// Redacts `event` as `actor` (whose power was checked).
async fn redact(
    services: &Services,
    room_id: &ruma::RoomId,
    actor: &UserId,
    event: &ruma::EventId,
    reason: Option<&str>,
) -> Result<OwnedEventId> {
    let content = match reason {
        Some(reason) => json!({"reason": reason}),
        None => json!({}),
    };
    let mut builder = PduBuilder::message("m.room.redaction", content);
    builder.redacts = Some(event.to_owned());
    services.rooms.send(room_id, actor, builder, None).await
}

/// Takes `action` on event report `id` for server admin `admin`; the event
/// the action sent (the redaction or the membership change), if any.
pub async fn act_on_report(
    services: &Arc<Services>,
    id: u64,
    action: ReportAction,
    admin: &UserId,
) -> Result<Option<OwnedEventId>> {
    let rooms = &services.rooms;
    let report = rooms.get_report(id)?.filter(|r| r.is_event_report());
    let report = report.ok_or_else(|| Error::not_found("Event report not found"))?;
    let sent = match action {
        ReportAction::Dismiss => None,
        _ => {
            let (Some(room_id), Some(event_id)) = (&report.room_id, &report.event_id) else {
                return Err(Error::not_found("Event report not found"));
            };
            let pdu = rooms.pdu(event_id)?.ok_or_else(|| Error::not_found("The reported event is gone"))?;
            let (room_short, record) =
                rooms.room(room_id)?.ok_or_else(|| Error::not_found("The reported room is gone"))?;
            let state = rooms.current_state(&record)?;
            let rules = record.rules()?;
            let (actor, _) = super::rooms::strongest_local(services, room_short, &state, &rules)?
                .ok_or_else(|| Error::forbidden("No user of this server is in the room"))?;
            let reason = format!("Removed by a server admin (report {id})");
            let event_id = match action {
                ReportAction::Redact => {
                    if !rooms.may_redact(&state, &actor, &pdu, &rules)? {
                        return Err(Error::forbidden("No user of this server in the room may redact it"));
                    }
                    redact(services, room_id, &actor, &pdu.event_id, Some(&reason)).await?
                }
                _ => {
                    let membership = if action == ReportAction::Ban { "ban" } else { "leave" };
                    let content = crate::util::object(json!({"membership": membership, "reason": reason}));
                    crate::federation::membership::change_membership(
                        services,
                        room_id,
                        &actor,
                        &pdu.sender,
                        content,
                    )
                    .await?
                }
            };
            Some(event_id)
        }
    };
    rooms.delete_report(id)?;
    tracing::info!("{admin} acted on report {id}: {}", action.done());
    Ok(sent)
}

/// The job action of a user's events redacted (Synapse's `redact_all_events`).
pub const REDACT_USER: &str = "redact_all_events";

/// Redacts `user`'s messages, newest first and at most `limit` in each
/// room, in `rooms` (or every room where they have a membership here), as
/// each room's most powerful local member; the events that could not be
/// redacted, with why.
pub async fn redact_user_events(
    services: &Arc<Services>,
    user: &UserId,
    rooms: Vec<ruma::OwnedRoomId>,
    reason: Option<String>,
    limit: usize,
    progress: &crate::jobs::Progress,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let store = &services.rooms;
    let rooms = if rooms.is_empty() {
        let mut all = Vec::new();
        for (short, _) in store.memberships(user)? {
            all.push(ruma::OwnedRoomId::try_from(store.short.name(short)?).map_err(Error::internal)?);
        }
        all
    } else {
        rooms
    };
    let mut failed = serde_json::Map::new();
    let total = rooms.len() as u64;
    for (done, room_id) in rooms.iter().enumerate() {
        progress.set(done as u64, Some(total));
        let Some((room_short, record)) = store.room(room_id)? else { continue };
        let mut theirs = Vec::new();
        for (_, short) in store.messages_between(room_short, 0, u64::MAX, usize::MAX)? {
            if let Some(pdu) = store.pdu_by_short(short)?
                && pdu.sender == user
                && store.event_meta(short)?.is_some_and(|meta| meta.redacted_by.is_none())
            {
                theirs.push(pdu);
            }
        }
        let state = store.current_state(&record)?;
        let rules = record.rules()?;
        let actor = super::rooms::strongest_local(services, room_short, &state, &rules)?;
        for pdu in theirs.into_iter().rev().take(limit) {
            let Some((actor, _)) =
                actor.as_ref().filter(|(a, _)| store.may_redact(&state, a, &pdu, &rules).unwrap_or(false))
            else {
                failed.insert(
                    pdu.event_id.to_string(),
                    json!("No user of this server in the room may redact it"),
                );
                continue;
            };
            if let Err(e) = redact(services, room_id, actor, &pdu.event_id, reason.as_deref()).await {
                failed.insert(pdu.event_id.to_string(), json!(e.to_string()));
            }
        }
    }
    progress.set(total, Some(total));
    tracing::info!("redacted {user}'s events in {total} rooms ({} failed)", failed.len());
    Ok(failed)
}
