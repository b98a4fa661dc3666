//! Third-party invites: inviting someone by email address through an
//! identity server, and turning such an invite into a real one when the
//! invitee binds the address (the identity server calls `3pid/onbind`) or
//! joins with `third_party_signed`.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, RoomId, UserId,
    api::{client::membership::Invite3pid, federation::thirdparty::exchange_invite},
    serde::{Base64, base64::Standard},
    signatures::{SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde_json::{Map, Value, json};

use crate::{Error, Result, identity, rooms::builder::PduBuilder, services::Services};

/// Invites the user an address is bound to, or, for an unbound address,
/// stores the invite at the identity server and announces it in the room
/// (`m.room.third_party_invite`, keyed by the identity server's token).
pub async fn invite(
    services: &Services,
    room_id: &RoomId,
    inviter: &UserId,
    invite: &Invite3pid,
) -> Result<()> {
    let rooms = &services.rooms;
    let room_short = rooms.room_short(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    // Checked first, so no invite is left at the identity server for nothing.
    if rooms.membership(inviter, room_short)?.as_deref() != Some("join") {
        return Err(Error::forbidden("You are not in this room."));
    }
    let (id_server, token) = (&invite.id_server, &invite.id_access_token);
    let medium = invite.medium.as_str();
    if let Some(user) = identity::lookup(&services.outbound, id_server, token, medium, &invite.address).await
    {
        let mut content = Map::new();
        content.insert("membership".to_owned(), json!("invite"));
        services.rooms.change_membership(room_id, inviter, &user, content).await?;
        return Ok(());
    }
    let field = |kind: &str, key: &str, name: &str| -> Result<String> {
        Ok(rooms.current_state_field(room_short, kind, key, name)?.unwrap_or_default())
    };
    let display_name = Some(field("m.room.member", inviter.as_str(), "displayname")?)
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| inviter.to_string());
    let mut details = json!({
        "medium": medium,
        "address": invite.address,
        "room_id": room_id,
        "sender": inviter,
        "room_alias": field("m.room.canonical_alias", "", "alias")?,
        "room_avatar_url": field("m.room.avatar", "", "url")?,
        "room_join_rules": field("m.room.join_rules", "", "join_rule")?,
        "room_name": field("m.room.name", "", "name")?,
        "sender_display_name": display_name,
        "sender_avatar_url": field("m.room.member", inviter.as_str(), "avatar_url")?,
    });
    // A space is presented as one.
    let room_type = field("m.room.create", "", "type")?;
    if !room_type.is_empty() {
        details["room_type"] = json!(room_type);
    }
    let stored = identity::store_invite(&services.outbound, id_server, token, &details).await?;
    let builder = PduBuilder::state("m.room.third_party_invite", &stored.token, stored.content);
    rooms.send(room_id, inviter, builder, None).await?;
    Ok(())
}

/// Turns the third-party invite that `signed` answers into an invite of
/// `target`, sent as the original inviter (who may have left since): the
/// identity server's signature must verify with a key of the invite, and
/// the identity server must still vouch for that key.
pub async fn accept(
    services: &Arc<Services>,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    signed: &Value,
) -> Result<()> {
    if !services.users.is_local(sender) {
        // The inviter's server makes the invite (it holds the room and the
        // inviter's identity): `exchange_third_party_invite`, as Synapse.
        return exchange(services, room_id, sender, target, signed).await;
    }
    let rooms = &services.rooms;
    let room_short = rooms.room_short(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
    if signed["mxid"] != target.as_str() {
        return Err(Error::forbidden("The signed invite names another user"));
    }
    let token = signed["token"].as_str().ok_or_else(|| Error::bad_json("The signed invite has no token"))?;
    let invite = rooms
        .current_state_event(room_short, "m.room.third_party_invite", token)?
        .filter(|invite| invite.sender == sender)
        .ok_or_else(|| Error::forbidden("Could not find an invite for this token"))?;
    let content = invite.content_value();
    let key = verified_key(&content, signed)?;
    if let Some(url) = key["key_validity_url"].as_str() {
        let public_key = key["public_key"].as_str().unwrap_or_default();
        if !identity::key_is_valid(&services.outbound, url, public_key).await? {
            return Err(Error::forbidden("Third party certificate was invalid"));
        }
    }
    let mut member = Map::new();
    member.insert("membership".to_owned(), json!("invite"));
    member.insert(
        "third_party_invite".to_owned(),
        json!({"display_name": content["display_name"], "signed": signed}),
    );
    // (Through the client path: an invitee of another server is invited
    // there, with `/invite`.)
    crate::federation::membership::change_membership(services, room_id, sender, target, member).await?;
    Ok(())
}

/// Asks the inviter's server, then the room's, to turn the third-party
/// invite into an invite of `target`.
async fn exchange(
    services: &Services,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    signed: &Value,
) -> Result<()> {
    let content = json!({"membership": "invite", "third_party_invite": {"signed": signed}});
    let content = serde_json::value::to_raw_value(&content).map_err(Error::internal)?;
    let mut last = Error::not_found("No server could make the invite");
    let mut servers = vec![sender.server_name()];
    servers.extend(room_id.server_name().filter(|s| *s != sender.server_name()));
    for server in servers {
        let request = exchange_invite::v1::Request::new(
            room_id.to_owned(),
            sender.to_owned(),
            target.to_owned(),
            ruma::serde::Raw::from_json(content.clone()),
        );
        match services.servers.client.send(server, request).await {
            Ok(_) => return Ok(()),
            Err(failure) => last = failure.to_client_error(server),
        }
    }
    Err(last)
}

/// The key object of the invite (`public_key` with `key_validity_url`)
/// whose key made one of the signatures on `signed`.
fn verified_key(invite: &Value, signed: &Value) -> Result<Value> {
    let invalid = || Error::forbidden("No valid signature on the third-party invite");
    let object: CanonicalJsonObject = serde_json::from_value(signed.clone()).map_err(|_| invalid())?;
    let canonical = to_canonical_json_string_for_signing(&object).map_err(|_| invalid())?;
    let mut keys =
        vec![json!({"public_key": invite["public_key"], "key_validity_url": invite["key_validity_url"]})];
    keys.extend(invite["public_keys"].as_array().into_iter().flatten().cloned());
    let signatures: Vec<&str> = signed["signatures"]
        .as_object()
        .into_iter()
        .flat_map(|servers| servers.values())
        .filter_map(Value::as_object)
        .flat_map(|by_key| by_key.iter())
        .filter(|(key_id, _)| key_id.starts_with("ed25519:"))
        .filter_map(|(_, signature)| signature.as_str())
        .collect();
    for key in keys {
        let Some(public_key) = key["public_key"].as_str().and_then(|k| Base64::<Standard>::parse(k).ok())
        else {
            continue;
        };
        for signature in &signatures {
            let Ok(signature) = Base64::<Standard>::parse(signature) else { continue };
            let verified = verify_canonical_json_bytes(
                &SigningKeyAlgorithm::Ed25519,
                public_key.as_bytes(),
                signature.as_bytes(),
                canonical.as_bytes(),
            );
            if verified.is_ok() {
                return Ok(key);
            }
        }
    }
    Err(invalid())
}
