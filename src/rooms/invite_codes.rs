//! Room invite codes (a Hearth extension: Matrix has no standard for
//! invite links): a room admin makes a code for an invite-only room, with
//! an expiry (7 days unless said otherwise) and a number of uses; whoever
//! redeems it is invited by the code's maker and joins. Codes can be
//! listed and revoked; a revoked, expired or used-up code says which.

use std::sync::Mutex;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use super::Rooms;
use crate::{
    Error, Result,
    storage::{Db, maps},
    util,
};

/// A code's default lifetime.
pub const DEFAULT_LIFETIME_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Characters in a code (~71 random bits).
const CODE_LEN: usize = 12;

/// What `room_invite_codes` stores of a code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteCode {
    pub room_id: OwnedRoomId,
    pub created_by: OwnedUserId,
    pub created_ts: u64,
    /// None: never expires.
    pub expires_ts: Option<u64>,
    /// None: any number of uses.
    pub max_uses: Option<u64>,
    pub uses: u64,
    #[serde(default)]
    pub revoked: bool,
}

/// Why a code cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    Revoked,
    Expired,
    UsedUp,
}

impl InviteCode {
    /// As the client and admin APIs show it.
    pub fn to_json(&self, code: &str) -> serde_json::Value {
        serde_json::json!({
            "code": code,
            "room_id": self.room_id,
            "created_by": self.created_by,
            "created_ts": self.created_ts,
            "expires_ts": self.expires_ts,
            "max_uses": self.max_uses,
            "uses": self.uses,
            "revoked": self.revoked,
            "valid": self.unusable(util::now_ms()).is_none(),
        })
    }

    pub fn unusable(&self, now: u64) -> Option<Unusable> {
        if self.revoked {
            Some(Unusable::Revoked)
        } else if self.expires_ts.is_some_and(|at| at <= now) {
            Some(Unusable::Expired)
        } else if self.max_uses.is_some_and(|max| self.uses >= max) {
            Some(Unusable::UsedUp)
        } else {
            None
        }
    }
}

/// Serialises the use counts.
#[derive(Default)]
pub struct CodeLock(Mutex<()>);

fn code_error(unusable: Unusable) -> Error {
    let (errcode, message) = match unusable {
        Unusable::Revoked => ("DEV.HEARTH.INVITE_CODE_REVOKED", "This invite code was revoked"),
        Unusable::Expired => ("DEV.HEARTH.INVITE_CODE_EXPIRED", "This invite code has expired"),
        Unusable::UsedUp => ("DEV.HEARTH.INVITE_CODE_USED_UP", "This invite code has been used up"),
    };
    Error::custom(http::StatusCode::FORBIDDEN, errcode, message)
}

pub fn unknown_code() -> Error {
    Error::not_found("No such invite code")
}

fn get(db: &Db, code: &str) -> Result<Option<InviteCode>> {
    Ok(db.get_json(&maps::ROOM_INVITE_CODES, code.as_bytes())?)
}

/// The refusal to anyone but the room's admins.
pub const MANAGERS_ONLY: &str = "Only the room's admins manage its invite codes";

impl Rooms {
    /// A new code for an invite-only room, made by one of its admins.
    pub fn create_invite_code(
        &self,
        room_id: &RoomId,
        creator: &UserId,
        lifetime_ms: Option<u64>,
        max_uses: Option<u64>,
    ) -> Result<(String, InviteCode)> {
        self.check_room_admin(room_id, creator, MANAGERS_ONLY)?;
        let short = self.room_short(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let join_rule = self.current_state_field(short, "m.room.join_rules", "", "join_rule")?;
        if !matches!(join_rule.as_deref(), Some("invite" | "knock")) {
            return Err(Error::invalid_param("Invite codes are for invite-only rooms"));
        }
        let now = util::now_ms();
        let record = InviteCode {
            room_id: room_id.to_owned(),
            created_by: creator.to_owned(),
            created_ts: now,
            expires_ts: Some(now.saturating_add(lifetime_ms.unwrap_or(DEFAULT_LIFETIME_MS))),
            max_uses,
            uses: 0,
            revoked: false,
        };
        let code = util::random_string(CODE_LEN);
        self.db.put_json(&maps::ROOM_INVITE_CODES, code.as_bytes(), &record)?;
        Ok((code, record))
    }

    /// A room's codes (or every room's), revoked ones too, newest first.
    pub fn invite_codes(&self, room_id: Option<&RoomId>) -> Result<Vec<(String, InviteCode)>> {
        let mut codes: Vec<(String, InviteCode)> = self
            .db
            .scan_json::<InviteCode>(&maps::ROOM_INVITE_CODES, b"")?
            .into_iter()
            .filter(|(_, code)| room_id.is_none_or(|room| code.room_id == room))
            .map(|(k, code)| (String::from_utf8_lossy(&k).into_owned(), code))
            .collect();
        codes.sort_by_key(|c| std::cmp::Reverse(c.1.created_ts));
        Ok(codes)
    }

    pub fn invite_code(&self, code: &str) -> Result<Option<InviteCode>> {
        get(&self.db, code)
    }

    /// Revokes a code of the room (of any room for a server admin: none).
    pub fn revoke_invite_code(&self, room_id: Option<&RoomId>, code: &str) -> Result<()> {
        let _guard = self.invite_code_lock.0.lock().expect("invite codes");
        let record = get(&self.db, code)?.filter(|c| room_id.is_none_or(|room| c.room_id == room));
        let mut record = record.ok_or_else(unknown_code)?;
        record.revoked = true;
        self.db.put_json(&maps::ROOM_INVITE_CODES, code.as_bytes(), &record)?;
        Ok(())
    }

    /// Takes one use of a code (the caller then invites and joins); the
    /// code as it was, or why it cannot be used.
    pub fn take_invite_code(&self, code: &str) -> Result<InviteCode> {
        let _guard = self.invite_code_lock.0.lock().expect("invite codes");
        let mut record = get(&self.db, code)?.ok_or_else(unknown_code)?;
        if let Some(unusable) = record.unusable(util::now_ms()) {
            return Err(code_error(unusable));
        }
        let taken = record.clone();
        record.uses += 1;
        self.db.put_json(&maps::ROOM_INVITE_CODES, code.as_bytes(), &record)?;
        Ok(taken)
    }

    /// Gives a use back (the invite or join failed).
    pub fn give_back_invite_code(&self, code: &str) -> Result<()> {
        let _guard = self.invite_code_lock.0.lock().expect("invite codes");
        if let Some(mut record) = get(&self.db, code)? {
            record.uses = record.uses.saturating_sub(1);
            self.db.put_json(&maps::ROOM_INVITE_CODES, code.as_bytes(), &record)?;
        }
        Ok(())
    }
}

/// Redeems a code for `user`: the code's maker invites them, they join.
/// A member of the room already spends nothing.
pub async fn redeem(rooms: &Rooms, code: &str, user: &UserId) -> Result<OwnedRoomId> {
    let peek = rooms.invite_code(code)?.ok_or_else(unknown_code)?;
    if let Some(short) = rooms.room_short(&peek.room_id)?
        && rooms.membership(user, short)?.as_deref() == Some("join")
    {
        return Ok(peek.room_id);
    }
    let taken = rooms.take_invite_code(code)?;
    let room_id = taken.room_id.clone();
    let member = |membership: &str| util::object(serde_json::json!({"membership": membership}));
    let joined = async {
        let short = rooms.room_short(&room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        if rooms.membership(user, short)?.as_deref() != Some("invite") {
            rooms.change_membership(&room_id, &taken.created_by, user, member("invite")).await?;
        }
        rooms.change_membership(&room_id, user, user, member("join")).await
    };
    match joined.await {
        Ok(_) => Ok(room_id),
        Err(e) => {
            rooms.give_back_invite_code(code)?;
            Err(e)
        }
    }
}
