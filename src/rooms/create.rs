//! Room creation (`POST /createRoom`): the initial events in the spec's
//! order, each through the one pipeline.

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use super::{
    RoomRecord, Rooms, SUPPORTED_ROOM_VERSIONS,
    builder::PduBuilder,
    pipeline::{Origin, StateBefore, Txn},
    short_ids::Kind,
};
use crate::{Error, Result, util};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// What a client asks for, already validated for shape by the API layer.
pub struct CreateRoom {
    pub version: RoomVersionId,
    pub creation_content: Map<String, Value>,
    pub preset: Preset,
    pub power_level_override: Option<Map<String, Value>>,
    pub alias: Option<OwnedRoomAliasId>,
    /// (type, state_key, content), in the client's order.
    pub initial_state: Vec<(String, String, Value)>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    /// The creator's profile, for their join event.
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// Publish the room in the room directory (`visibility: public`).
    pub publish: bool,
    /// The room ID, chosen beforehand (an upgrade names it in the old
    /// room's tombstone first); only for versions whose IDs are not the
    /// create event's hash, and only if free.
    pub room_id: Option<OwnedRoomId>,
}

impl CreateRoom {
    /// A request with nothing but a version and a preset.
    pub fn new(version: RoomVersionId, preset: Preset) -> Self {
        Self {
            version,
            creation_content: Map::new(),
            preset,
            power_level_override: None,
            alias: None,
            initial_state: Vec::new(),
            name: None,
            topic: None,
            invite: Vec::new(),
            is_direct: false,
            displayname: None,
            avatar_url: None,
            publish: false,
            room_id: None,
        }
    }
}

impl Rooms {
    /// A random room ID on this server, for versions whose IDs are not the
    /// create event's hash.
    pub fn new_room_id(&self) -> Result<OwnedRoomId> {
        RoomId::parse(format!("!{}:{}", util::random_string(18), self.server_name)).map_err(Error::internal)
    }

    pub async fn create_room(&self, creator: &UserId, request: CreateRoom) -> Result<OwnedRoomId> {
        let version = request.version.clone();
        if !SUPPORTED_ROOM_VERSIONS.contains(&version) {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::UnsupportedRoomVersion,
                format!("Room version {version} is not supported"),
            ));
        }
        let rules = version.rules().ok_or_else(|| Error::internal("rules for a supported version"))?;
        let v12 = rules.authorization.explicitly_privilege_room_creators;

        // The create event.
        let mut create_content = request.creation_content.clone();
        create_content.insert("room_version".into(), json!(version));
        if rules.authorization.use_room_create_sender {
            create_content.remove("creator");
        } else {
            create_content.insert("creator".into(), json!(creator));
        }
        let mut additional_creators: Vec<OwnedUserId> = Vec::new();
        if v12 {
            if let Some(list) = create_content.get("additional_creators") {
                additional_creators = serde_json::from_value(list.clone())
                    .map_err(|_| Error::bad_json("additional_creators must be a list of user IDs"))?;
            }
            if request.preset == Preset::TrustedPrivateChat {
                for invitee in &request.invite {
                    if !additional_creators.contains(invitee) && invitee != creator {
                        additional_creators.push(invitee.clone());
                    }
                }
            }
            additional_creators.retain(|u| u != creator);
            if additional_creators.is_empty() {
                create_content.remove("additional_creators");
            } else {
                create_content.insert("additional_creators".into(), json!(additional_creators));
            }
        }
        let mut create = json!({
            "sender": creator,
            "origin_server_ts": util::now_ms(),
            "type": "m.room.create",
            "state_key": "",
            "content": create_content,
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
        });
        // In v12 the room ID is the create event's hash, so identical
        // requests in one millisecond would collide: nudge the timestamp
        // and try again, as Synapse does. Older versions draw a random ID.
        let mut attempts = 0;
        let (room_id, create_id, create_object, _guard) = loop {
            attempts += 1;
            let mut event = create.clone();
            let room_id: OwnedRoomId =
                if rules.room_id_format == ruma::room_version_rules::RoomIdFormatVersion::V2 {
                    let (event_id, _) = self.finish(event.clone(), &rules, &version)?;
                    RoomId::parse(format!("!{}", &event_id.as_str()[1..])).map_err(Error::internal)?
                } else {
                    let id = match &request.room_id {
                        Some(chosen) if attempts == 1 => chosen.clone(),
                        Some(_) => return Err(Error::internal("the chosen room ID is taken")),
                        None => self.new_room_id()?,
                    };
                    event["room_id"] = json!(id);
                    id
                };
            let guard = self.lock(&room_id).await;
            if self.room_short(&room_id)?.is_none() {
                let (create_id, create_object) = self.finish(event, &rules, &version)?;
                break (room_id, create_id, create_object, guard);
            }
            if attempts >= 100 {
                return Err(Error::internal("could not find a free room ID"));
            }
            create["origin_server_ts"] = json!(create["origin_server_ts"].as_u64().unwrap_or(0) + 1);
        };
        if let Some(alias) = &request.alias
            && self.alias(alias)?.is_some()
        {
            return Err(Error::new(
                http::StatusCode::BAD_REQUEST,
                ruma::api::error::ErrorKind::RoomInUse,
                "Room alias already taken",
            ));
        }
        let room_short = self.short.get_or_create(Kind::Room, room_id.as_str())?;
        let mut record = RoomRecord {
            room_id: room_id.clone(),
            version: version.clone(),
            current_snapshot: None,
            forward_extremities: Vec::new(),
            created_ts: util::now_ms(),
        };
        self.append(
            room_short,
            &mut record,
            create_id,
            create_object,
            Origin::Local(None),
            StateBefore::FromPrevs,
        )?;

        let mut events = Vec::new();
        let mut join = json!({"membership": "join"});
        if let Some(name) = &request.displayname {
            join["displayname"] = json!(name);
        }
        if let Some(url) = &request.avatar_url {
            join["avatar_url"] = json!(url);
        }
        events.push(PduBuilder::state("m.room.member", creator.as_str(), join));

        let initial = |kind: &str, key: &str| {
            request.initial_state.iter().find(|(t, k, _)| t == kind && k == key).map(|(_, _, c)| c.clone())
        };
        let power_levels = match initial("m.room.power_levels", "") {
            Some(verbatim) => verbatim,
            None => self.default_power_levels(creator, &request, v12),
        };
        events.push(PduBuilder::state("m.room.power_levels", "", power_levels));

        if let Some(alias) = &request.alias
            && initial("m.room.canonical_alias", "").is_none()
        {
            events.push(PduBuilder::state("m.room.canonical_alias", "", json!({"alias": alias})));
        }
        let (join_rule, guest_access) = match request.preset {
            Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", Some("can_join")),
            Preset::PublicChat => ("public", None),
        };
        for (kind, content) in [
            ("m.room.join_rules", Some(json!({"join_rule": join_rule}))),
            ("m.room.history_visibility", Some(json!({"history_visibility": "shared"}))),
            ("m.room.guest_access", guest_access.map(|g| json!({"guest_access": g}))),
        ] {
            if let Some(content) = content
                && initial(kind, "").is_none()
            {
                events.push(PduBuilder::state(kind, "", content));
            }
        }
        // Later duplicates in initial_state replace earlier ones; the power
        // levels were sent already.
        let mut seen = std::collections::HashSet::new();
        let mut initial_events: Vec<_> = request
            .initial_state
            .iter()
            .rev()
            .filter(|(t, k, _)| t != "m.room.power_levels" && seen.insert((t.clone(), k.clone())))
            .map(|(t, k, c)| PduBuilder::state(t, k, c.clone()))
            .collect();
        initial_events.reverse();
        events.extend(initial_events);
        if let Some(name) = &request.name {
            events.push(PduBuilder::state("m.room.name", "", json!({"name": name})));
        }
        if let Some(topic) = &request.topic {
            events.push(PduBuilder::state(
                "m.room.topic",
                "",
                json!({"topic": topic, "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]}}),
            ));
        }
        // Other servers' users are invited once the room exists, through
        // their servers (`federation::membership::invite_remote`).
        for invitee in request.invite.iter().filter(|i| i.server_name() == self.server_name) {
            let mut content = json!({"membership": "invite"});
            if request.is_direct {
                content["is_direct"] = json!(true);
            }
            events.push(PduBuilder::state("m.room.member", invitee.as_str(), content));
        }

        for builder in events {
            let state = self.current_state(&record)?;
            let (event_id, object) = self.build(&record, &state, creator, &builder)?;
            self.append(
                room_short,
                &mut record,
                event_id,
                object,
                Origin::Local(None),
                StateBefore::FromPrevs,
            )
            .map_err(|e| match Error::from(e) {
                Error::Matrix { kind: ruma::api::error::ErrorKind::Forbidden, message, .. } => Error::new(
                    http::StatusCode::BAD_REQUEST,
                    ruma::api::error::ErrorKind::InvalidRoomState,
                    format!("{} event: {message}", builder.event_type),
                ),
                e => e,
            })?;
        }
        if let Some(alias) = &request.alias {
            self.put_alias(alias, &room_id, creator)?;
        }
        if request.publish {
            self.set_published(&room_id, true)?;
        }
        Ok(room_id)
    }

    fn default_power_levels(&self, creator: &UserId, request: &CreateRoom, v12: bool) -> Value {
        let mut users = Map::new();
        if !v12 {
            users.insert(creator.to_string(), json!(100));
            if request.preset == Preset::TrustedPrivateChat {
                for invitee in &request.invite {
                    users.insert(invitee.to_string(), json!(100));
                }
            }
        }
        let mut content = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": if v12 { 150 } else { 100 },
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 50,
            "historical": 100,
        });
        if request.preset != Preset::PublicChat {
            content["invite"] = json!(0);
        }
        if let (Some(overrides), Value::Object(content)) = (&request.power_level_override, &mut content) {
            for (k, v) in overrides {
                content.insert(k.clone(), v.clone());
            }
        }
        content
    }

    /// Builds a local event on the room's current state and appends it,
    /// holding the room's lock. A repeated transaction ID returns the event
    /// it produced the first time.
    pub async fn send(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        builder: PduBuilder,
        txn: Option<Txn>,
    ) -> Result<ruma::OwnedEventId> {
        // No lock (and no lock-map entry) for a room that does not exist.
        if self.room_short(room_id)?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        let _guard = self.lock(room_id).await;
        if let Some(txn) = &txn
            && let Some(event_id) =
                self.txn_event(sender, &txn.device_id, room_id, txn.endpoint, &txn.txn_id)?
        {
            return Ok(event_id);
        }
        let (short, mut record) = self.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        self.check_new_relation(short, sender, &builder.event_type, &builder.content)?;
        let state = self.current_state(&record)?;
        // A member sending the state that is already there, from them, makes
        // no new event (Synapse answers with the existing one, too).
        if let Some(state_key) = &builder.state_key
            && let Some(current) = self.state_event(&state, &builder.event_type, state_key)?
            && current.sender == sender
            && current.content_value() == builder.content
            && self.membership(sender, short)?.as_deref() == Some("join")
        {
            return Ok(current.event_id.clone());
        }
        util::heavy(|| {
            let (event_id, object) = self.build(&record, &state, sender, &builder)?;
            let origin = Origin::Local(txn);
            self.append(short, &mut record, event_id.clone(), object, origin, StateBefore::FromPrevs)?;
            Ok(event_id)
        })
    }
}
