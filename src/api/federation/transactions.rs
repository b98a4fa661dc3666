//! `PUT /_matrix/federation/v1/send/{txnId}`: another server's PDUs and
//! EDUs. A transaction ID is answered once per origin (a retry within a
//! day gets the first answer); rooms are taken in concurrently, each room's PDUs in
//! order. A PDU for a room this server is not in, from a server not in the
//! room, or from one the room's ACL denies, is refused and changes nothing.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    CanonicalJsonObject, OwnedEventId, OwnedRoomId, OwnedServerName,
    api::federation::transactions::send_transaction_message::v1 as send,
};
use tokio::task::JoinSet;

use crate::{
    Error, Result,
    api::ruma::{Ruma, RumaRouter},
    federation::ingest::{self, PduResult},
    rooms::pdu::event_id_of,
    services::Services,
};

const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(send_transaction)
}

async fn send_transaction(req: Ruma<send::Request>) -> Result<send::Response> {
    let origin = req.origin().to_owned();
    let services = req.services.clone();
    let body = req.body;
    if body.origin != origin {
        return Err(Error::forbidden("The transaction's origin is not the signing server"));
    }
    if body.pdus.len() > MAX_PDUS || body.edus.len() > MAX_EDUS {
        return Err(Error::bad_json(format!("At most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs per transaction")));
    }
    if let Some(answered) = ingest::answered(&services, &origin, body.transaction_id.as_str())? {
        return Ok(send::Response::new(answered));
    }

    // The PDUs by room, in the order sent.
    let mut by_room: BTreeMap<OwnedRoomId, Vec<CanonicalJsonObject>> = BTreeMap::new();
    for raw in &body.pdus {
        match ingest::parse_pdu(raw) {
            Ok(object) => match ingest::room_of(&object) {
                Some(room_id) => by_room.entry(room_id).or_default().push(object),
                None => tracing::debug!("a PDU from {origin} without a room ID"),
            },
            Err(why) => tracing::debug!("a PDU from {origin} refused: {why}"),
        }
    }
    let mut rooms = JoinSet::new();
    for (room_id, objects) in by_room {
        let (services, origin) = (services.clone(), origin.clone());
        rooms.spawn(async move { take_room(&services, &origin, &room_id, objects).await });
    }
    let mut results = BTreeMap::new();
    while let Some(done) = rooms.join_next().await {
        match done {
            Ok(room_results) => results.extend(room_results),
            Err(e) => tracing::warn!("a room of a transaction from {origin} failed: {e}"),
        }
    }
    for edu in &body.edus {
        match serde_json::from_str::<serde_json::Value>(edu.json().get()) {
            Ok(edu) => crate::federation::edus::take(&services, &origin, &edu).await,
            Err(e) => tracing::debug!("an EDU from {origin} is not JSON: {e}"),
        }
    }
    ingest::remember_answer(&services, &origin, body.transaction_id.as_str(), results.clone())?;
    Ok(send::Response::new(results))
}

/// One room's PDUs, in order; each result keyed by event ID.
async fn take_room(
    services: &Arc<Services>,
    origin: &OwnedServerName,
    room_id: &OwnedRoomId,
    objects: Vec<CanonicalJsonObject>,
) -> Vec<(OwnedEventId, PduResult)> {
    let (room_short, rules) = match services.rooms.room(room_id) {
        Ok(Some((short, record))) => match record.rules() {
            Ok(rules) => (short, rules),
            Err(_) => return vec![],
        },
        // Not a room we are in: nothing to report against, nothing changed.
        _ => {
            tracing::debug!("{} PDUs from {origin} for unknown room {room_id}", objects.len());
            return vec![];
        }
    };
    let refusal = match check_origin(services, origin, room_short) {
        Ok(()) => None,
        Err(e) => Some(e.to_string()),
    };
    let mut results = Vec::new();
    for object in objects {
        let Ok(event_id) = event_id_of(&object, &rules) else { continue };
        let result = match &refusal {
            Some(why) => Err(why.clone()),
            None => ingest::take_pdu(services, origin, room_id, object).await.map(|_| ()),
        };
        if let Err(why) = &result {
            tracing::debug!("{event_id} from {origin}: {why}");
        }
        results.push((event_id, result));
    }
    results
}

/// The origin must be in the room and allowed by its ACL.
fn check_origin(services: &Services, origin: &ruma::ServerName, room_short: u64) -> Result<()> {
    super::check_acl(services, origin, room_short)?;
    if !services.rooms.server_in_room(origin, room_short)? {
        return Err(Error::forbidden(format!("{origin} is not in the room")));
    }
    Ok(())
}
