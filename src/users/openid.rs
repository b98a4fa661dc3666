//! OpenID tokens: a user proves its identity to a third party (a widget,
//! an integration manager), which checks the token with
//! `/_matrix/federation/v1/openid/userinfo`.

use std::{collections::HashMap, time::Duration};

use ruma::{OwnedUserId, UserId};

use super::Users;
use crate::util;

/// How long a token is good for (Synapse's default).
pub const LIFETIME: Duration = Duration::from_secs(3600);

/// Most live tokens kept; the oldest go first past it.
const MAX_TOKENS: usize = 100_000;

/// Live tokens: token → (user, expiry in ms since the epoch).
#[derive(Default)]
pub struct Tokens(HashMap<String, (OwnedUserId, u64)>);

impl Users {
    /// A new OpenID token for the user.
    pub fn issue_openid_token(&self, user_id: &UserId) -> String {
        let token = util::random_string(32);
        let now = util::now_ms();
        let mut tokens = self.openid_tokens.lock().expect("openid tokens");
        tokens.0.retain(|_, (_, expires)| *expires > now);
        if tokens.0.len() >= MAX_TOKENS
            && let Some(oldest) =
                tokens.0.iter().min_by_key(|(_, (_, expires))| *expires).map(|(t, _)| t.clone())
        {
            tokens.0.remove(&oldest);
        }
        let expires = now + u64::try_from(LIFETIME.as_millis()).unwrap_or(u64::MAX);
        tokens.0.insert(token.clone(), (user_id.to_owned(), expires));
        token
    }

    /// The user a live OpenID token was issued to.
    pub fn openid_user(&self, token: &str) -> Option<OwnedUserId> {
        let tokens = self.openid_tokens.lock().expect("openid tokens");
        tokens.0.get(token).filter(|(_, expires)| *expires > util::now_ms()).map(|(user, _)| user.clone())
    }
}
