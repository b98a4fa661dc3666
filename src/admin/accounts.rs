//! Accounts as server admins see them, and what they do to them.

use std::sync::Arc;

use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::{
    Result,
    services::Services,
    users::{UserRecord, moderation::Moderation},
};

/// One account with everything an admin's list shows of it.
#[derive(Debug, Clone)]
pub struct Account {
    pub user_id: OwnedUserId,
    pub record: UserRecord,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    pub moderation: Moderation,
    pub erased: bool,
    pub last_seen_ts: Option<u64>,
}

fn profile_field(profile: Option<&serde_json::Map<String, Value>>, field: &str) -> Option<String> {
    profile.and_then(|p| p.get(field)).and_then(Value::as_str).map(str::to_owned)
}

/// What of each account a list reads beyond its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The record alone (one scan).
    Records,
    /// And display names (two scans).
    Names,
    /// And the whole profile and last-seen time (three scans: accounts,
    /// profiles, devices).
    Everything,
}

/// Every local account, in user ID order, with what `needs` asks for;
/// [`fill_details`] adds the rest to the few that need it.
pub fn all(services: &Services, needs: Needs) -> Result<Vec<Account>> {
    let users = &services.users;
    let profiles = match needs {
        Needs::Everything => users.all_profiles()?,
        _ => Default::default(),
    };
    let names = match needs {
        Needs::Names => users.all_displaynames()?,
        _ => Default::default(),
    };
    let seen = match needs {
        Needs::Everything => users.last_seen_all()?,
        _ => Default::default(),
    };
    Ok(users
        .records()?
        .into_iter()
        .map(|(user_id, record)| {
            let profile = profiles.get(user_id.as_bytes());
            let name = names.get(user_id.as_bytes()).cloned();
            Account {
                displayname: name.or_else(|| profile_field(profile, "displayname")),
                avatar_url: profile_field(profile, "avatar_url"),
                moderation: users.moderation(&user_id),
                erased: users.is_erased(&user_id),
                last_seen_ts: seen.get(user_id.as_bytes()).copied().filter(|&ts| ts > 0),
                user_id,
                record,
            }
        })
        .collect())
}

/// Adds profiles and last-seen times to accounts listed without them.
pub fn fill_details(services: &Services, accounts: &mut [Account]) -> Result<()> {
    let users = &services.users;
    for account in accounts {
        let profile = users.profile(&account.user_id)?;
        account.displayname = profile_field(profile.as_ref(), "displayname");
        account.avatar_url = profile_field(profile.as_ref(), "avatar_url");
        account.last_seen_ts = users.last_seen(&account.user_id)?;
    }
    Ok(())
}

/// One local account.
pub fn one(services: &Services, user_id: &UserId) -> Result<Option<Account>> {
    let users = &services.users;
    let Some(record) = users.get(user_id)? else { return Ok(None) };
    let profile = users.profile(user_id)?;
    Ok(Some(Account {
        user_id: user_id.to_owned(),
        displayname: profile_field(profile.as_ref(), "displayname"),
        avatar_url: profile_field(profile.as_ref(), "avatar_url"),
        moderation: users.moderation(user_id),
        erased: users.is_erased(user_id),
        last_seen_ts: users.last_seen(user_id)?,
        record,
    }))
}

/// Deactivates an account the way Synapse's admin API does: it leaves
/// every room (rejecting invites and withdrawing knocks, here and on other
/// servers), then loses its password, devices, keys and profile; with
/// `erase`, its messages are hidden from later members.
pub async fn deactivate(services: &Arc<Services>, user_id: &UserId, erase: bool) -> Result<()> {
    leave_everything(services, user_id).await?;
    services.users.deactivate(user_id, erase)?;
    tracing::info!("deactivated {user_id} (erase: {erase})");
    Ok(())
}

/// Leaves every room the user is joined to, invited to or knocking on.
pub async fn leave_everything(services: &Arc<Services>, user_id: &UserId) -> Result<Vec<ruma::OwnedRoomId>> {
    let mut rooms = Vec::new();
    for (short, membership) in services.rooms.memberships(user_id)? {
        if matches!(membership.as_str(), "join" | "invite" | "knock") {
            rooms.push(
                ruma::OwnedRoomId::try_from(services.rooms.short.name(short)?)
                    .map_err(crate::Error::internal)?,
            );
        }
    }
    let pending = services.rooms.remote_invites(user_id)?.into_iter().filter(|(_, i)| i.rejected.is_none());
    rooms.extend(pending.map(|(room_id, _)| room_id));
    rooms.sort();
    rooms.dedup();
    let mut left = Vec::new();
    for room_id in rooms {
        let content = crate::util::object(json!({"membership": "leave"}));
        match crate::federation::membership::change_membership(services, &room_id, user_id, user_id, content)
            .await
        {
            Ok(_) => left.push(room_id),
            Err(e) => tracing::warn!("{user_id} could not leave {room_id}: {e}"),
        }
    }
    Ok(left)
}
