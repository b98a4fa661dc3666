//! Typing notifications: kept in memory only (they expire in seconds), each
//! change of a room's typing set stamped with a stream position so sync can
//! tell who is typing now and whether that changed since a token.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{OwnedUserId, UserId};
use tokio::time::Instant;

use crate::{
    Result,
    stream::{Stream, Topic},
};

/// The longest a user is shown typing without renewing it (as Synapse).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct RoomTyping {
    users: BTreeMap<OwnedUserId, Instant>,
    /// The stream position of the last change of `users`.
    changed_at: u64,
}

#[derive(Default)]
struct State {
    rooms: HashMap<u64, RoomTyping>,
    /// Each room's latest change by position, so finding the rooms that
    /// changed since a token reads only those.
    changes: BTreeMap<u64, u64>,
}

impl State {
    fn mark_changed(&mut self, room_short: u64, position: u64) {
        let room = self.rooms.entry(room_short).or_default();
        self.changes.remove(&room.changed_at);
        room.changed_at = position;
        self.changes.insert(position, room_short);
    }
}

pub struct Typing {
    stream: Arc<Stream>,
    state: Mutex<State>,
}

impl Typing {
    pub fn new(stream: Arc<Stream>) -> Arc<Self> {
        Arc::new(Self { stream, state: Mutex::default() })
    }

    /// Forgets a room (purged).
    pub fn forget_room(&self, room_short: u64) {
        let mut state = self.state.lock().expect("typing");
        if let Some(room) = state.rooms.remove(&room_short) {
            state.changes.remove(&room.changed_at);
        }
    }

    /// Marks `user` typing in a room for `timeout`, or not typing.
    pub fn set(self: &Arc<Self>, room_short: u64, user: &UserId, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t.min(MAX_TIMEOUT));
        let position = self.stream.allocate()?;
        let changed = {
            let mut state = self.state.lock().expect("typing");
            let room = state.rooms.entry(room_short).or_default();
            let changed = match deadline {
                Some(deadline) => room.users.insert(user.to_owned(), deadline).is_none(),
                None => room.users.remove(user).is_some(),
            };
            if changed {
                state.mark_changed(room_short, position.get());
            }
            changed
        };
        if changed {
            position.publish([Topic::Room(room_short)]);
        }
        if let Some(deadline) = deadline {
            // Weak: a pending expiry must not keep the server's storage open.
            let typing = Arc::downgrade(self);
            let user = user.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline).await;
                if let Some(typing) = typing.upgrade() {
                    typing.expire(room_short, &user, deadline);
                }
            });
        }
        Ok(())
    }

    /// Ends a typing notice that was not renewed.
    fn expire(&self, room_short: u64, user: &UserId, deadline: Instant) {
        let Ok(position) = self.stream.allocate() else { return };
        let mut state = self.state.lock().expect("typing");
        let Some(room) = state.rooms.get_mut(&room_short) else { return };
        if room.users.get(user) == Some(&deadline) {
            room.users.remove(user);
            state.mark_changed(room_short, position.get());
            drop(state);
            position.publish([Topic::Room(room_short)]);
        }
    }

    /// Who is typing in a room, if that changed after `since`, as of
    /// `upto`. Without `since`, for every room whose typing ever changed
    /// (an empty list included, as Synapse: a client that syncs afresh
    /// after someone stopped typing sees that they stopped).
    pub fn changed(&self, room_short: u64, since: Option<u64>, upto: u64) -> Option<Vec<OwnedUserId>> {
        let state = self.state.lock().expect("typing");
        let room = state.rooms.get(&room_short)?;
        let changed = match since {
            Some(since) => room.changed_at > since && room.changed_at <= upto,
            None => room.changed_at > 0 && room.changed_at <= upto,
        };
        changed.then(|| room.users.keys().cloned().collect())
    }

    /// Rooms whose typing set changed in `(since, upto]`.
    pub fn rooms_changed(&self, since: u64, upto: u64) -> Vec<u64> {
        let state = self.state.lock().expect("typing");
        if upto <= since {
            return Vec::new();
        }
        state.changes.range(since + 1..=upto).map(|(_, room)| *room).collect()
    }
}
