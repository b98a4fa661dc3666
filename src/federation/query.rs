//! Questions about rooms that may live on another server.

use ruma::{
    OwnedRoomId, OwnedServerName, RoomAliasId, api::federation::query::get_room_information::v1 as directory,
};

use crate::{Error, Result, services::Services};

/// The room an alias names and servers that can help join it: a local
/// alias from our directory (this server first, then the room's other
/// servers), another server's alias by asking that server.
pub async fn resolve_alias(
    services: &Services,
    alias: &RoomAliasId,
) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    let ours = &services.config.server_name;
    if alias.server_name() == ours {
        let record = services.rooms.alias(alias)?.ok_or_else(|| Error::not_found("Room alias not found."))?;
        return Ok((record.room_id.clone(), local_servers(services, &record.room_id)?));
    }
    let server = alias.server_name();
    let answer = services
        .servers
        .client
        .send(server, directory::Request::new(alias.to_owned()))
        .await
        .map_err(|f| f.to_client_error(server))?;
    Ok((answer.room_id, answer.servers))
}

/// This server, then the room's other servers.
pub fn local_servers(services: &Services, room_id: &ruma::RoomId) -> Result<Vec<OwnedServerName>> {
    let ours = services.config.server_name.clone();
    let mut servers = vec![ours.clone()];
    if let Some(short) = services.rooms.room_short(room_id)? {
        servers.extend(services.rooms.servers_in_room(short)?.into_iter().filter(|s| *s != ours));
    }
    Ok(servers)
}
