//! Each user's push rules: the spec's defaults until the user changes them,
//! then stored as the `m.push_rules` account data (which is how clients see
//! them in /sync). Parsed rule sets are cached.

use std::sync::Arc;

use ruma::{
    OwnedUserId, UserId,
    push::{AnyPushRuleRef, PushCondition, Ruleset},
};
use serde::{Deserialize, Serialize};

use super::Users;
use crate::{Error, Result, storage::maps};

/// A user's rules, as evaluation needs them.
pub struct Rules {
    pub ruleset: Ruleset,
    /// The server defaults, untouched (lets evaluation take shortcuts).
    pub is_default: bool,
    /// Some enabled rule needs the user's display name.
    pub uses_display_name: bool,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    global: Ruleset,
}

impl Users {
    pub fn push_rules(&self, user_id: &UserId) -> Result<Arc<Rules>> {
        if let Some(rules) = self.push_rule_cache.lock().expect("push rules").get(user_id) {
            return Ok(rules.clone());
        }
        let stored = self.account_data(user_id, None, "m.push_rules")?;
        let (ruleset, is_default) = match stored {
            Some(raw) => {
                let stored: Stored = serde_json::from_str(raw.get()).map_err(Error::internal)?;
                (stored.global, false)
            }
            None => (Ruleset::server_default(user_id), true),
        };
        let rules = Arc::new(Rules { uses_display_name: uses_display_name(&ruleset), ruleset, is_default });
        let mut cache = self.push_rule_cache.lock().expect("push rules");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(user_id.to_owned(), rules.clone());
        Ok(rules)
    }

    /// Users whose rules are not the defaults (push evaluation must look at
    /// them even where the defaults could not notify).
    pub fn custom_push_rule_users(&self) -> Result<Vec<OwnedUserId>> {
        self.db
            .scan_prefix(&maps::CUSTOM_PUSH_RULES, b"")?
            .into_iter()
            .map(|(k, _)| {
                OwnedUserId::try_from(String::from_utf8(k).map_err(Error::internal)?).map_err(Error::internal)
            })
            .collect()
    }

    pub fn set_push_rules(&self, user_id: &UserId, ruleset: Ruleset) -> Result<()> {
        let mut batch = crate::storage::Batch::new();
        batch.put(&maps::CUSTOM_PUSH_RULES, user_id.as_bytes().to_vec(), b"".to_vec());
        self.db.write(batch)?;
        let content =
            serde_json::value::to_raw_value(&Stored { global: ruleset }).map_err(Error::internal)?;
        self.set_account_data(user_id, None, "m.push_rules", &content)?;
        self.push_rule_cache.lock().expect("push rules").remove(user_id);
        Ok(())
    }
}

/// `contains_display_name` is deprecated (spec 1.17) but still evaluated
/// for users whose rules have it.
#[allow(deprecated)]
fn uses_display_name(ruleset: &Ruleset) -> bool {
    ruleset.iter().any(|rule| {
        rule.enabled()
            && match rule {
                AnyPushRuleRef::Override(r) | AnyPushRuleRef::Underride(r) => {
                    r.conditions.iter().any(|c| matches!(c, PushCondition::ContainsDisplayName))
                }
                _ => false,
            }
    })
}
