//! The member events each lazy-loading device already has, by room and
//! user: an incremental sync sends a member again only when it changed
//! (Synapse's default, unless the filter asks for redundant members). An
//! initial sync starts the device afresh. In memory: after a restart a
//! device gets some members twice, which is harmless.

use std::{collections::HashMap, sync::Mutex};

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};

/// Most devices remembered; past it, all are forgotten (and get members again).
const MAX_DEVICES: usize = 10_000;

/// Room short ID → member's user ID → the member event ID sent.
type ByRoom = HashMap<u64, HashMap<String, String>>;

#[derive(Default)]
pub struct SentMembers(Mutex<HashMap<(OwnedUserId, OwnedDeviceId), ByRoom>>);

impl SentMembers {
    /// Forgets a room (purged) for every device.
    pub fn forget_room(&self, room_short: u64) {
        for by_room in self.0.lock().expect("sent members").values_mut() {
            by_room.remove(&room_short);
        }
    }

    pub fn forget(&self, user: &UserId, device: &DeviceId) {
        self.0.lock().expect("sent members").remove(&(user.to_owned(), device.to_owned()));
    }

    /// Whether the device has this member event of the room.
    pub fn has(&self, user: &UserId, device: &DeviceId, room: u64, member: &str, event_id: &str) -> bool {
        let devices = self.0.lock().expect("sent members");
        devices
            .get(&(user.to_owned(), device.to_owned()))
            .and_then(|rooms| rooms.get(&room))
            .and_then(|members| members.get(member))
            .is_some_and(|sent| sent == event_id)
    }

    /// Notes member events (user ID, event ID) the device got.
    pub fn remember(
        &self,
        user: &UserId,
        device: &DeviceId,
        room: u64,
        sent: impl IntoIterator<Item = (String, String)>,
    ) {
        let mut devices = self.0.lock().expect("sent members");
        if devices.len() >= MAX_DEVICES {
            devices.clear();
        }
        devices
            .entry((user.to_owned(), device.to_owned()))
            .or_default()
            .entry(room)
            .or_default()
            .extend(sent);
    }
}
