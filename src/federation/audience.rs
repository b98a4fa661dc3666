//! Which other servers an EDU goes to, and queuing it for them.

use std::collections::BTreeSet;

use ruma::{OwnedServerName, UserId};
use serde_json::{Value, json};

use crate::{Result, servers::outbox::Item, services::Services};

/// The other servers in a room.
pub fn other_servers(services: &Services, room_short: u64) -> Result<Vec<OwnedServerName>> {
    let ours = &services.config.server_name;
    Ok(services
        .rooms
        .servers_in_room(room_short)?
        .into_iter()
        .filter(|s| s != ours && services.config.federation.allows(s))
        .collect())
}

/// The other servers sharing a room with `user`.
pub fn servers_sharing(services: &Services, user: &UserId) -> Result<Vec<OwnedServerName>> {
    let mut servers = BTreeSet::new();
    for (room_short, membership) in services.rooms.memberships(user)? {
        if membership == "join" {
            servers.extend(other_servers(services, room_short)?);
        }
    }
    Ok(servers.into_iter().collect())
}

/// Queues an EDU for `destinations` (none: nothing).
pub fn queue_edu(
    services: &Services,
    destinations: &[OwnedServerName],
    edu_type: &str,
    content: Value,
) -> Result<()> {
    if destinations.is_empty() {
        return Ok(());
    }
    services.servers.outbox.queue(destinations, Item::Edu(json!({"edu_type": edu_type, "content": content})))
}
