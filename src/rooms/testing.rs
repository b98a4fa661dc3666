//! What the rooms tests share: a room on a fresh database, events built on
//! chosen branches of its DAG, and another server with its own signing key.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomVersionId,
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap},
    user_id,
};
use serde_json::{Value, json};

use super::{
    Rooms,
    builder::{PduBuilder, finish_event},
    create::{CreateRoom, Preset},
    pdu::Pdu,
    pipeline::{AppendError, Origin, Outcome, StateBefore},
};
use crate::{Result, keys::ServerKeys, storage::Db};

pub struct Fixture {
    _dir: tempfile::TempDir,
    pub rooms: Rooms,
    pub room_id: OwnedRoomId,
}

pub async fn fixture() -> Fixture {
    fixture_with(RoomVersionId::V12, Preset::PrivateChat).await
}

pub async fn fixture_with(version: RoomVersionId, preset: Preset) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), 8, false).unwrap();
    let keys = Arc::new(ServerKeys::load_or_generate(&db).unwrap());
    let stream = Arc::new(crate::stream::Stream::open(db.clone(), 0).unwrap());
    let users = Arc::new(
        crate::users::Users::new(db.clone(), "localhost".try_into().unwrap(), stream.clone()).unwrap(),
    );
    let rooms = Rooms::open(db, "localhost".try_into().unwrap(), keys, stream, users).unwrap();
    let request = CreateRoom::new(version, preset);
    let room_id = rooms.create_room(user_id!("@alice:localhost"), request).await.unwrap();
    Fixture { _dir: dir, rooms, room_id }
}

impl Fixture {
    /// A correctly built and signed message from `sender`, as JSON.
    pub fn event(&self, sender: &ruma::UserId) -> Value {
        let (_, record) = self.rooms.room(&self.room_id).unwrap().unwrap();
        let state = self.rooms.current_state(&record).unwrap();
        let builder = PduBuilder::message("m.room.message", json!({"body": "hi", "msgtype": "m.text"}));
        let (_, object) = self.rooms.build(&record, &state, sender, &builder).unwrap();
        serde_json::to_value(&object).unwrap()
    }

    /// Re-hashes and re-signs edited JSON, so only the edit is wrong.
    pub fn resign(&self, mut event: Value) -> (OwnedEventId, CanonicalJsonObject) {
        let object = event.as_object_mut().unwrap();
        object.remove("hashes");
        object.remove("signatures");
        let version = self.rooms.room(&self.room_id).unwrap().unwrap().1.version;
        self.rooms.finish(event, &version.rules().unwrap(), &version).unwrap()
    }

    pub fn append(&self, event_id: OwnedEventId, object: CanonicalJsonObject) -> Result<Outcome> {
        let (short, mut record) = self.rooms.room(&self.room_id).unwrap().unwrap();
        Ok(self.rooms.append(
            short,
            &mut record,
            event_id,
            object,
            Origin::Local(None),
            StateBefore::FromPrevs,
        )?)
    }

    /// Appends as if another server had sent the event.
    pub fn append_remote(&self, event: (OwnedEventId, CanonicalJsonObject)) -> Outcome {
        self.append_remote_result(event).unwrap()
    }

    pub fn append_remote_result(
        &self,
        (event_id, object): (OwnedEventId, CanonicalJsonObject),
    ) -> Result<Outcome, AppendError> {
        let (short, mut record) = self.rooms.room(&self.room_id).unwrap().unwrap();
        let keys = PublicKeyMap::new();
        self.rooms.append(short, &mut record, event_id, object, Origin::Remote(keys), StateBefore::FromPrevs)
    }

    /// Builds an event on chosen prev_events (a branch of the DAG) with
    /// the auth events of the state after the first of them.
    pub fn build_on(
        &self,
        prev: &[&OwnedEventId],
        sender: &ruma::UserId,
        builder: PduBuilder,
        ts: u64,
    ) -> (OwnedEventId, CanonicalJsonObject) {
        let (_, mut record) = self.rooms.room(&self.room_id).unwrap().unwrap();
        let short = self.rooms.event_short(prev[0]).unwrap().unwrap();
        let meta = self.rooms.event_meta(short).unwrap().unwrap();
        let state = self.rooms.load_state(meta.state_after).unwrap();
        record.forward_extremities = prev.iter().map(|e| (*e).clone()).collect();
        let (_, object) = self.rooms.build(&record, &state, sender, &builder).unwrap();
        let mut event = serde_json::to_value(&object).unwrap();
        event["origin_server_ts"] = json!(ts);
        self.resign(event)
    }

    pub fn current(&self, event_type: &str, state_key: &str) -> Option<Pdu> {
        let short = self.rooms.room_short(&self.room_id).unwrap().unwrap();
        self.rooms.current_state_event(short, event_type, state_key).unwrap()
    }

    pub fn membership(&self, user: &ruma::UserId) -> Option<String> {
        let short = self.rooms.room_short(&self.room_id).unwrap().unwrap();
        self.rooms.membership(user, short).unwrap()
    }

    pub async fn send(&self, sender: &ruma::UserId, builder: PduBuilder) -> OwnedEventId {
        self.rooms.send(&self.room_id, sender, builder, None).await.unwrap()
    }

    /// Appends raw JSON under the ID its own reference hash gives.
    pub fn append_json(&self, event: Value) -> Result<Outcome> {
        let CanonicalJsonValue::Object(object) = CanonicalJsonValue::try_from(event).unwrap() else {
            panic!()
        };
        let rules = RoomVersionId::V12.rules().unwrap();
        let hash = ruma::signatures::reference_hash(&object, &rules).unwrap();
        self.append(OwnedEventId::try_from(format!("${hash}")).unwrap(), object)
    }

    pub fn extremities(&self) -> Vec<OwnedEventId> {
        self.rooms.room(&self.room_id).unwrap().unwrap().1.forward_extremities
    }
}

/// Another homeserver: its name and signing key, building and signing
/// events as it would.
pub struct Remote {
    pub name: &'static str,
    key: Ed25519KeyPair,
}

impl Remote {
    pub fn new(name: &'static str) -> Self {
        let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "1".into()).unwrap();
        Self { name, key }
    }

    /// The key map a caller would have fetched for this server.
    pub fn keys(&self) -> PublicKeyMap {
        let key = Base64::new(self.key.public_key().to_vec());
        PublicKeyMap::from([(self.name.to_owned(), [("ed25519:1".to_owned(), key)].into())])
    }

    /// Hashes and signs an event (JSON without hashes or signatures).
    pub fn sign(&self, event: Value, version: &RoomVersionId) -> (OwnedEventId, CanonicalJsonObject) {
        finish_event(self.name, &self.key, event, &version.rules().unwrap(), version).unwrap()
    }
}

/// A room built entirely on a remote server, event by event.
pub struct RemoteRoom {
    pub version: RoomVersionId,
    pub room_id: OwnedRoomId,
    /// Every event so far, in order.
    pub events: Vec<(OwnedEventId, CanonicalJsonObject)>,
    depth: u64,
}

impl RemoteRoom {
    /// create, the creator's join, power levels (everyone may invite),
    /// public join rules, `shared` history.
    pub fn new(remote: &Remote, version: RoomVersionId) -> Self {
        let creator = format!("@creator:{}", remote.name);
        let rules = version.rules().unwrap();
        let mut create_content = json!({"room_version": version.as_str()});
        if !rules.authorization.use_room_create_sender {
            create_content["creator"] = json!(creator);
        }
        let mut create = json!({
            "type": "m.room.create", "state_key": "", "sender": creator, "content": create_content,
            "origin_server_ts": 1, "prev_events": [], "auth_events": [], "depth": 1,
        });
        let v12 = rules.authorization.room_create_event_id_as_room_id;
        if !v12 {
            create["room_id"] = json!(format!("!room:{}", remote.name));
        }
        let (create_id, create_object) = remote.sign(create, &version);
        let room_id = if v12 {
            OwnedRoomId::try_from(format!("!{}", &create_id.as_str()[1..])).unwrap()
        } else {
            OwnedRoomId::try_from(format!("!room:{}", remote.name)).unwrap()
        };
        let mut room = Self { version, room_id, events: vec![(create_id, create_object)], depth: 1 };
        let join = room.state(remote, &creator, "m.room.member", &creator, json!({"membership": "join"}));
        // (From v12 the creator's power is implied, and may not be listed.)
        let users = if v12 { json!({}) } else { json!({creator.clone(): 100}) };
        let levels = json!({"users": users, "invite": 0});
        let levels = room.state(remote, &creator, "m.room.power_levels", "", levels);
        let rules = room.state(remote, &creator, "m.room.join_rules", "", json!({"join_rule": "public"}));
        let _ = (join, levels, rules);
        room.state(
            remote,
            &creator,
            "m.room.history_visibility",
            "",
            json!({"history_visibility": "shared"}),
        );
        room
    }

    fn find(&self, kind: &str, state_key: &str) -> Option<OwnedEventId> {
        self.events.iter().rev().find_map(|(id, object)| {
            (object.get("type").and_then(|t| t.as_str()) == Some(kind)
                && object.get("state_key").and_then(|k| k.as_str()) == Some(state_key))
            .then(|| id.clone())
        })
    }

    /// The auth events of an event from `sender` of this type.
    pub fn auth_events(&self, sender: &str, kind: &str, state_key: Option<&str>) -> Vec<OwnedEventId> {
        let mut auth = Vec::new();
        if !self.version.rules().unwrap().authorization.room_create_event_id_as_room_id {
            auth.extend(self.find("m.room.create", ""));
        }
        auth.extend(self.find("m.room.power_levels", ""));
        auth.extend(self.find("m.room.member", sender));
        if kind == "m.room.member" {
            auth.extend(self.find("m.room.join_rules", ""));
            if let Some(target) = state_key.filter(|t| *t != sender) {
                auth.extend(self.find("m.room.member", target));
            }
        }
        auth.sort();
        auth.dedup();
        auth
    }

    /// The JSON of the next event (on the latest one), unsigned.
    pub fn next(&mut self, sender: &str, kind: &str, state_key: Option<&str>, content: Value) -> Value {
        self.depth += 1;
        let latest = &self.events.last().unwrap().0;
        let mut event = json!({
            "room_id": self.room_id, "type": kind, "sender": sender, "content": content,
            "origin_server_ts": self.depth, "prev_events": [latest],
            "auth_events": self.auth_events(sender, kind, state_key), "depth": self.depth,
        });
        if let Some(state_key) = state_key {
            event["state_key"] = json!(state_key);
        }
        event
    }

    /// Signs and records a state event on the latest one.
    pub fn state(
        &mut self,
        remote: &Remote,
        sender: &str,
        kind: &str,
        key: &str,
        content: Value,
    ) -> OwnedEventId {
        let event = self.next(sender, kind, Some(key), content);
        self.push(remote.sign(event, &self.version.clone()))
    }

    pub fn push(&mut self, event: (OwnedEventId, CanonicalJsonObject)) -> OwnedEventId {
        let id = event.0.clone();
        self.events.push(event);
        id
    }
}
