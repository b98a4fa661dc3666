//! `required_state`: which state events of a room a connection wants, from
//! the `[event type, state key]` pairs lists and subscriptions send (`*` for
//! any type or any key, `$ME` for the user, `["m.room.member", "$LAZY"]`
//! for the members the timeline shows), merged over every list and
//! subscription a room is in.

use std::collections::{BTreeMap, BTreeSet};

use crate::users::sliding::RoomConfig;

const ANY: &str = "*";
const ME: &str = "$ME";
const LAZY: &str = "$LAZY";

/// What a room's configuration asks of its state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// All of it (`["*", "*"]`, or a key under any type: as Synapse, the
    /// whole state is a correct superset).
    all: bool,
    /// Every key of these types.
    types: BTreeSet<String>,
    /// These keys of these types (`$ME` already the user).
    keys: BTreeMap<String, BTreeSet<String>>,
    /// The members the timeline shows (senders and targets).
    pub lazy_members: bool,
    /// Left out of the above (lazy members aside): `(type, key)` with `*`.
    exclude: BTreeSet<(String, String)>,
}

impl Wanted {
    pub fn new(config: &RoomConfig, user: &str) -> Self {
        let mut wanted = Self::default();
        for (kind, key) in &config.required_state {
            match (kind.as_str(), key.as_str()) {
                (ANY, _) => wanted.all = true,
                ("m.room.member", LAZY) => wanted.lazy_members = true,
                (kind, ANY) => {
                    wanted.types.insert(kind.to_owned());
                }
                (kind, key) => {
                    let key = if key == ME { user } else { key };
                    wanted.keys.entry(kind.to_owned()).or_default().insert(key.to_owned());
                }
            }
        }
        wanted.exclude = config
            .exclude
            .iter()
            .map(|(kind, key)| (kind.clone(), if key == ME { user.to_owned() } else { key.clone() }))
            .collect();
        wanted
    }

    /// Whether the event at `(kind, key)` is wanted (lazy members aside).
    pub fn wants(&self, kind: &str, key: &str) -> bool {
        let included = self.all
            || self.types.contains(kind)
            || self.keys.get(kind).is_some_and(|keys| keys.contains(key));
        included && !self.excludes(kind, key)
    }

    fn excludes(&self, kind: &str, key: &str) -> bool {
        self.exclude.iter().any(|(k, s)| (k == ANY || k == kind) && (s == ANY || s == key))
    }

    /// Whether anything is wanted beyond what `before` wanted: the room's
    /// state must be sent again for the difference.
    pub fn grew_from(&self, before: &Wanted) -> bool {
        (self.all && !before.all)
            || before.exclude.iter().any(|pair| !self.exclude.contains(pair))
            || (self.lazy_members && !before.lazy_members)
            || self.types.iter().any(|t| !before.all && !before.types.contains(t))
            || self.keys.iter().any(|(kind, keys)| keys.iter().any(|key| !before.wants(kind, key)))
    }
}

/// A room's configuration over every list and subscription it is in: the
/// largest timeline and every state pair any asked for.
/// What one leaves out stays out unless another asks for some of it.
pub fn merge<'a>(configs: impl IntoIterator<Item = &'a RoomConfig> + Clone) -> RoomConfig {
    let mut merged = RoomConfig::default();
    for config in configs.clone() {
        merged.timeline_limit = merged.timeline_limit.max(config.timeline_limit);
        merged.required_state.extend(config.required_state.iter().cloned());
        merged.exclude.extend(config.exclude.iter().cloned());
    }
    let overlap = |(k1, s1): &(String, String), (k2, s2): &(String, String)| {
        (k1 == ANY || k2 == ANY || k1 == k2) && (s1 == ANY || s2 == ANY || s1 == s2)
    };
    merged.exclude.retain(|out| {
        configs
            .clone()
            .into_iter()
            .all(|c| c.exclude.contains(out) || !c.required_state.iter().any(|pair| overlap(pair, out)))
    });
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(limit: u64, pairs: &[(&str, &str)]) -> RoomConfig {
        RoomConfig {
            timeline_limit: limit,
            required_state: pairs.iter().map(|(k, s)| ((*k).to_owned(), (*s).to_owned())).collect(),
            exclude: BTreeSet::new(),
        }
    }

    const ALICE: &str = "@alice:x";

    #[test]
    fn pairs_wildcards_me_and_lazy() {
        // What Element X's room list asks for, in part.
        let list = config(
            1,
            &[
                ("m.room.name", ""),
                ("m.room.member", "$LAZY"),
                ("m.room.member", "$ME"),
                ("m.space.child", "*"),
            ],
        );
        let wanted = Wanted::new(&list, ALICE);
        assert!(wanted.wants("m.room.name", ""));
        assert!(!wanted.wants("m.room.name", "other"));
        assert!(wanted.wants("m.room.member", ALICE) && !wanted.wants("m.room.member", "@bob:x"));
        assert!(wanted.lazy_members);
        assert!(wanted.wants("m.space.child", "!a:x") && wanted.wants("m.space.child", "!b:x"));
        assert!(!wanted.wants("m.room.topic", ""));
        let everything = Wanted::new(&config(1, &[("*", "*")]), ALICE);
        assert!(everything.wants("m.room.topic", "") && everything.wants("m.room.member", "@bob:x"));
        assert!(Wanted::new(&config(1, &[("*", "")]), ALICE).wants("x.y", "z"), "a superset, as Synapse");
    }

    #[test]
    fn exclusions_leave_out_and_hold_only_where_every_configuration_has_them() {
        let mut all_but_create = config(1, &[("*", "*")]);
        all_but_create.exclude.insert(("m.room.create".into(), "*".into()));
        let wanted = Wanted::new(&all_but_create, ALICE);
        assert!(wanted.wants("m.room.name", "") && !wanted.wants("m.room.create", ""));
        let merged = merge([&all_but_create, &config(1, &[("m.room.create", "")])]);
        assert!(Wanted::new(&merged, ALICE).wants("m.room.create", ""));
        assert!(Wanted::new(&merged, ALICE).grew_from(&wanted));
        // Another that does not ask for it: still left out.
        let merged = merge([&all_but_create, &config(1, &[("m.room.name", "")])]);
        assert!(!Wanted::new(&merged, ALICE).wants("m.room.create", ""));
    }

    #[test]
    fn merged_configurations_and_growth() {
        let list = config(1, &[("m.room.name", ""), ("m.room.member", "$LAZY")]);
        let subscription = config(20, &[("m.room.name", ""), ("m.room.pinned_events", "")]);
        let merged = merge([&list, &subscription]);
        assert_eq!(merged.timeline_limit, 20);
        assert_eq!(merged.required_state.len(), 3);
        let (small, big) = (Wanted::new(&list, ALICE), Wanted::new(&merged, ALICE));
        assert!(big.grew_from(&small) && !small.grew_from(&big));
        assert!(!big.grew_from(&big));
        let all = Wanted::new(&config(1, &[("*", "*")]), ALICE);
        assert!(all.grew_from(&big) && !big.grew_from(&Wanted { lazy_members: true, ..all.clone() }));
        let types = Wanted::new(&config(1, &[("m.room.member", "*")]), ALICE);
        let me = Wanted::new(&config(1, &[("m.room.member", "$ME")]), ALICE);
        assert!(types.grew_from(&me) && !me.grew_from(&types));
    }
}
