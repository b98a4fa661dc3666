//! Each user's push rules: the spec's defaults until the user changes them,
//! then stored as the `m.push_rules` account data (which is how clients see
//! them in /sync). Parsed rule sets are cached.

use std::sync::Arc;

use ruma::{
    OwnedUserId, RoomId, UserId,
    push::{AnyPushRuleRef, PushCondition, Ruleset},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Users;
use crate::{Error, Result, storage::maps};

/// A user's rules, as evaluation needs them.
pub struct Rules {
    pub ruleset: Ruleset,
    /// Room rules whose IDs are no room IDs (Synapse takes any ID, say
    /// `#spam:example.com`): kept and listed after the others, never matched.
    pub unmatched_room: Vec<Value>,
    /// The server defaults, untouched (lets evaluation take shortcuts).
    pub is_default: bool,
    /// Some enabled rule needs the user's display name.
    pub uses_display_name: bool,
}

/// The rule kinds of the `global` scope, highest priority first.
pub const KINDS: [&str; 5] = ["override", "content", "room", "sender", "underride"];

impl Rules {
    /// The `global` rule set as clients see it.
    pub fn global(&self) -> Result<Value> {
        let mut global = serde_json::to_value(&self.ruleset).map_err(Error::internal)?;
        if let Some(object) = global.as_object_mut() {
            // ruma leaves out empty kinds; Synapse always sends all five.
            for kind in KINDS {
                object.entry(kind).or_insert_with(|| Value::Array(Vec::new()));
            }
            if let Some(room) = object.get_mut("room").and_then(Value::as_array_mut) {
                room.extend(self.unmatched_room.iter().cloned());
            }
        }
        Ok(global)
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    global: Value,
}

/// A stored `global` rule set as ruma's rule set and the unmatched room rules.
fn split(mut global: Value) -> Result<(Ruleset, Vec<Value>)> {
    let mut unmatched = Vec::new();
    if let Some(room) = global.get_mut("room").and_then(Value::as_array_mut) {
        room.retain(|rule| {
            let matchable = rule["rule_id"].as_str().is_some_and(|id| RoomId::parse(id).is_ok());
            if !matchable {
                unmatched.push(rule.clone());
            }
            matchable
        });
    }
    Ok((serde_json::from_value(global).map_err(Error::internal)?, unmatched))
}

impl Users {
    pub fn push_rules(&self, user_id: &UserId) -> Result<Arc<Rules>> {
        if let Some(rules) = self.push_rule_cache.lock().expect("push rules").get(user_id) {
            return Ok(rules.clone());
        }
        let stored = self.account_data(user_id, None, "m.push_rules")?;
        let (ruleset, unmatched_room, is_default) = match stored {
            Some(raw) => {
                let stored: Stored = serde_json::from_str(raw.get()).map_err(Error::internal)?;
                let (ruleset, unmatched) = split(stored.global)?;
                (ruleset, unmatched, false)
            }
            None => (Ruleset::server_default(user_id), Vec::new(), true),
        };
        let mut ruleset = ruleset;
        add_legacy_rules(&mut ruleset, user_id)?;
        let rules = Arc::new(Rules {
            uses_display_name: uses_display_name(&ruleset),
            ruleset,
            unmatched_room,
            is_default,
        });
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

    /// A room's own rules (a room rule, or an override rule named by the
    /// room as clients make to mute it) copied to its upgraded successor.
    pub fn copy_room_push_rules(&self, user_id: &UserId, old: &RoomId, new: &RoomId) -> Result<()> {
        use ruma::push::{NewConditionalPushRule, NewPushRule, NewSimplePushRule};
        let rules = self.push_rules(user_id)?;
        if rules.is_default {
            return Ok(());
        }
        let mut ruleset = rules.ruleset.clone();
        let mut copied = Vec::new();
        if let Some(rule) = ruleset.room.iter().find(|rule| rule.rule_id == old) {
            copied.push((
                NewPushRule::Room(NewSimplePushRule::new(new.to_owned(), rule.actions.clone())),
                rule.enabled,
            ));
        }
        if let Some(rule) = ruleset.override_.iter().find(|rule| rule.rule_id == old.as_str()) {
            // The conditions name the old room: they name the new one now.
            let conditions = serde_json::to_string(&rule.conditions).map_err(Error::internal)?;
            let conditions = serde_json::from_str(&conditions.replace(old.as_str(), new.as_str()))
                .map_err(Error::internal)?;
            let rule_id = new.to_string();
            copied.push((
                NewPushRule::Override(NewConditionalPushRule::new(rule_id, conditions, rule.actions.clone())),
                rule.enabled,
            ));
        }
        if copied.is_empty() {
            return Ok(());
        }
        for (rule, enabled) in copied {
            let (kind, rule_id) = (rule.kind(), rule.rule_id().to_owned());
            ruleset.insert(rule, None, None).map_err(Error::internal)?;
            ruleset.set_enabled(kind, &rule_id, enabled).map_err(Error::internal)?;
        }
        self.set_push_rules(user_id, ruleset, rules.unmatched_room.clone())
    }

    pub fn set_push_rules(
        &self,
        user_id: &UserId,
        ruleset: Ruleset,
        unmatched_room: Vec<Value>,
    ) -> Result<()> {
        let rules = Rules { ruleset, unmatched_room, is_default: false, uses_display_name: false };
        let mut batch = crate::storage::Batch::new();
        batch.put(&maps::CUSTOM_PUSH_RULES, user_id.as_bytes().to_vec(), b"".to_vec());
        self.db.write(batch)?;
        let content =
            serde_json::value::to_raw_value(&Stored { global: rules.global()? }).map_err(Error::internal)?;
        self.set_account_data(user_id, None, "m.push_rules", &content)?;
        self.push_rule_cache.lock().expect("push rules").remove(user_id);
        Ok(())
    }
}

/// The content rule `.m.rule.contains_user_name` (a message whose body
/// names the user's localpart highlights): gone from the spec's defaults
/// (1.7, `m.mentions` replaced it) but still Synapse's, and what clients
/// that send no `m.mentions` (bots, older clients) rely on. ruma evaluates
/// it only for events without `m.mentions`.
fn add_legacy_rules(ruleset: &mut Ruleset, user_id: &UserId) -> Result<()> {
    const RULE_ID: &str = ".m.rule.contains_user_name";
    if ruleset.content.iter().any(|rule| rule.rule_id == RULE_ID) {
        return Ok(());
    }
    let rule = serde_json::from_value(serde_json::json!({
        "rule_id": RULE_ID,
        "default": true,
        "enabled": true,
        "pattern": user_id.localpart(),
        "actions": ["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}],
    }))
    .map_err(Error::internal)?;
    ruleset.content.insert(rule);
    Ok(())
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
