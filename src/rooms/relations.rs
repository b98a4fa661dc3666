//! Relations: the index of events that relate to others (`m.relates_to`
//! with a `rel_type`), the checks on new relations, `/relations` pages,
//! the bundled aggregations served in `unsigned.m.relations`, and threads.

use ruma::{OwnedEventId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Rooms;
use crate::{
    Error, Result,
    storage::{Batch, SEP, decode_u64, maps},
};

/// How deep `recurse=true` follows relations of relations.
pub const RECURSION_DEPTH: u64 = 3;
/// The longest annotation key accepted from a local client (as Synapse).
const MAX_ANNOTATION_KEY: usize = 500;

/// (stream position, event short ID).
pub type Positioned = (u64, u64);

/// What `relations` stores per child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Relation {
    pub child: u64,
    pub rel_type: String,
    pub event_type: String,
    pub sender: OwnedUserId,
}

/// The relation an event's content declares: (rel_type, parent, key).
pub fn relation_of(content: &Value) -> Option<(String, OwnedEventId, Option<String>)> {
    let relates = content.get("m.relates_to")?;
    let rel_type = relates.get("rel_type")?.as_str()?.to_owned();
    let parent = OwnedEventId::try_from(relates.get("event_id")?.as_str()?).ok()?;
    let key = relates.get("key").and_then(Value::as_str).map(str::to_owned);
    Some((rel_type, parent, key))
}

fn annotation_key(parent: u64, sender: &UserId, event_type: &str, key: &str) -> Vec<u8> {
    let mut row = parent.to_be_bytes().to_vec();
    for part in [sender.as_str(), event_type, key] {
        row.push(SEP);
        row.extend_from_slice(part.as_bytes());
    }
    row
}

fn thread_key(room_short: u64, root: u64) -> Vec<u8> {
    [room_short.to_be_bytes(), root.to_be_bytes()].concat()
}

impl Rooms {
    /// Indexes an accepted event's relation (in the event's own batch).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn index_relation(
        &self,
        batch: &mut Batch,
        event_type: &str,
        sender: &UserId,
        content: &Value,
        event_short: u64,
        room_short: u64,
        position: u64,
    ) -> Result<()> {
        let Some((rel_type, parent, key)) = relation_of(content) else { return Ok(()) };
        let Some(parent_short) = self.event_short(&parent)? else { return Ok(()) };
        if self.event_meta(parent_short)?.is_none_or(|m| m.room != room_short) {
            return Ok(());
        }
        let relation = Relation {
            child: event_short,
            rel_type: rel_type.clone(),
            event_type: event_type.to_owned(),
            sender: sender.to_owned(),
        };
        batch.put_json(
            &maps::RELATIONS,
            [parent_short.to_be_bytes(), position.to_be_bytes()].concat(),
            &relation,
        );
        if rel_type == "m.annotation"
            && let Some(key) = key
        {
            batch.put(
                &maps::ANNOTATIONS,
                annotation_key(parent_short, sender, event_type, &key),
                event_short.to_be_bytes(),
            );
        }
        if rel_type == "m.thread" {
            let row = thread_key(room_short, parent_short);
            if let Some(old) = self.db.get(&maps::THREADS, &row)? {
                batch.delete(
                    &maps::THREAD_ACTIVITY,
                    [room_short.to_be_bytes(), decode_u64(&old)?.to_be_bytes()].concat(),
                );
            }
            batch.put(&maps::THREADS, row, position.to_be_bytes());
            batch.put(
                &maps::THREAD_ACTIVITY,
                [room_short.to_be_bytes(), position.to_be_bytes()].concat(),
                parent_short.to_be_bytes(),
            );
        }
        Ok(())
    }

    /// Checks a relation a local client is about to send, as Synapse does:
    /// the parent exists in this room; annotations have a key and are not
    /// repeated; threads do not start from events that relate to others.
    pub fn check_new_relation(
        &self,
        room_short: u64,
        sender: &UserId,
        event_type: &str,
        content: &Value,
    ) -> Result<()> {
        let Some((rel_type, parent, key)) = relation_of(content) else { return Ok(()) };
        let parent_short = self
            .event_short(&parent)?
            .ok_or_else(|| Error::invalid_param("Can't send relation to unknown event"))?;
        let meta = self.event_meta(parent_short)?.ok_or_else(|| Error::internal("event without meta"))?;
        if meta.room != room_short {
            return Err(Error::invalid_param("Relations must be in the same room"));
        }
        match rel_type.as_str() {
            "m.annotation" => {
                let key = key.ok_or_else(|| Error::invalid_param("Annotations need a key"))?;
                if key.len() > MAX_ANNOTATION_KEY {
                    return Err(Error::invalid_param("Annotation key too long"));
                }
                if let Some(existing) = self
                    .db
                    .get(&maps::ANNOTATIONS, &annotation_key(parent_short, sender, event_type, &key))?
                    && self.event_meta(decode_u64(&existing)?)?.is_some_and(|m| m.redacted_by.is_none())
                {
                    return Err(Error::new(
                        http::StatusCode::BAD_REQUEST,
                        ruma::api::error::ErrorKind::DuplicateAnnotation,
                        "Can't send same reaction twice",
                    ));
                }
            }
            "m.thread" => {
                let parent_pdu =
                    self.pdu_by_short(parent_short)?.ok_or_else(|| Error::internal("event without JSON"))?;
                if relation_of(&parent_pdu.content_value()).is_some() {
                    return Err(Error::new(
                        http::StatusCode::BAD_REQUEST,
                        ruma::api::error::ErrorKind::Unknown,
                        "Cannot start threads from an event with a relation",
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Children of `parent` visible to `viewer`, matching the filters, as
    /// (stream position, event short ID), oldest first; with `recurse`,
    /// their own children too, to [`RECURSION_DEPTH`] levels.
    pub fn children(
        &self,
        parent: u64,
        viewer: &UserId,
        rel_type: Option<&str>,
        event_type: Option<&str>,
        recurse: bool,
    ) -> Result<Vec<(u64, u64)>> {
        let ignored = self.users.ignored_users(viewer)?;
        let mut found = Vec::new();
        let mut level = vec![parent];
        let depth = if recurse { RECURSION_DEPTH } else { 1 };
        for _ in 0..depth {
            let mut next = Vec::new();
            for parent in level {
                for (k, v) in self.db.scan_prefix(&maps::RELATIONS, &parent.to_be_bytes())? {
                    let relation: Relation = serde_json::from_slice(&v).map_err(Error::internal)?;
                    if rel_type.is_some_and(|r| r != relation.rel_type)
                        || event_type.is_some_and(|t| t != relation.event_type)
                    {
                        continue;
                    }
                    let (Some(pdu), Some(meta)) =
                        (self.pdu_by_short(relation.child)?, self.event_meta(relation.child)?)
                    else {
                        continue;
                    };
                    // A redacted child no longer relates.
                    if meta.redacted_by.is_some()
                        || ignored.contains(&pdu.sender)
                        || !self.can_see(viewer, &pdu, &meta)?
                    {
                        continue;
                    }
                    found.push((decode_u64(&k[8..])?, relation.child));
                    next.push(relation.child);
                }
            }
            level = next;
        }
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// Adds `unsigned.m.relations` to a served event: the latest valid edit,
    /// the thread summary, references. State events get none.
    pub fn bundle(
        &self,
        short: u64,
        viewer: &UserId,
        viewer_device: Option<&ruma::DeviceId>,
        event: &mut Value,
    ) -> Result<()> {
        if event.get("state_key").is_some()
            || !self.db.contains_prefix(&maps::RELATIONS, &short.to_be_bytes())?
        {
            return Ok(());
        }
        let mut relations = Map::new();
        if let Some(edit) = self.latest_edit(short, viewer, viewer_device, event)? {
            relations.insert("m.replace".into(), edit);
        }
        let thread = self.children(short, viewer, Some("m.thread"), None, false)?;
        if let Some(&(_, latest)) = thread.last() {
            let mut latest_event = self.client_event(latest, viewer_device, viewer)?;
            if let Some(edit) = self.latest_edit(latest, viewer, viewer_device, &latest_event)? {
                latest_event["unsigned"]["m.relations"] = json!({"m.replace": edit});
            }
            let participated = event["sender"] == viewer.as_str()
                || thread.iter().any(|(_, child)| {
                    self.pdu_by_short(*child).ok().flatten().is_some_and(|p| p.sender == viewer)
                });
            relations.insert(
                "m.thread".into(),
                json!({"latest_event": latest_event, "count": thread.len(), "current_user_participated": participated}),
            );
        }
        let references = self.children(short, viewer, Some("m.reference"), None, false)?;
        if !references.is_empty() {
            let mut chunk = Vec::new();
            for (_, child) in references {
                chunk.push(json!({"event_id": self.short.name(child)?}));
            }
            relations.insert("m.reference".into(), json!({"chunk": chunk}));
        }
        if !relations.is_empty() {
            event["unsigned"]["m.relations"] = Value::Object(relations);
        }
        Ok(())
    }

    /// Bundles aggregations into each event of a page (`events[i]` is `shorts[i]`).
    pub fn bundle_all(
        &self,
        events: &mut [Value],
        shorts: &[u64],
        viewer: &UserId,
        viewer_device: Option<&ruma::DeviceId>,
    ) -> Result<()> {
        for (event, short) in events.iter_mut().zip(shorts) {
            self.bundle(*short, viewer, viewer_device, event)?;
        }
        Ok(())
    }

    /// The most recent valid edit of an event (same sender and type, no
    /// state keys, `m.new_content` present), by timestamp then event ID.
    fn latest_edit(
        &self,
        short: u64,
        viewer: &UserId,
        viewer_device: Option<&ruma::DeviceId>,
        original: &Value,
    ) -> Result<Option<Value>> {
        if original["unsigned"].get("redacted_because").is_some()
            || original["content"]["m.relates_to"]["rel_type"] == "m.replace"
        {
            return Ok(None);
        }
        let mut best: Option<(i64, String, u64)> = None;
        for (_, child) in self.children(short, viewer, Some("m.replace"), None, false)? {
            let Some(edit) = self.pdu_by_short(child)? else { continue };
            let content = edit.content_value();
            if edit.sender.as_str() != original["sender"].as_str().unwrap_or_default()
                || edit.kind.to_string() != original["type"].as_str().unwrap_or_default()
                || edit.state_key.is_some()
                // (An encrypted edit carries it inside the ciphertext.)
                || (edit.kind.to_string() != "m.room.encrypted"
                    && !content.get("m.new_content").is_some_and(Value::is_object))
            {
                continue;
            }
            let candidate = (i64::from(edit.origin_server_ts.get()), edit.event_id.to_string(), child);
            if best.as_ref().is_none_or(|b| (candidate.0, &candidate.1) > (b.0, &b.1)) {
                best = Some(candidate);
            }
        }
        best.map(|(_, _, child)| self.client_event(child, viewer_device, viewer)).transpose()
    }

    /// Thread roots of a room by latest activity, newest first, before the
    /// activity position `from`; with `participated`, only threads the
    /// viewer sent the root of or replied in.
    pub fn threads(
        &self,
        room_short: u64,
        viewer: &UserId,
        participated: bool,
        from: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Positioned>, Option<u64>)> {
        let prefix = room_short.to_be_bytes();
        let start = [prefix, from.unwrap_or(u64::MAX).saturating_sub(1).to_be_bytes()].concat();
        let mut out = Vec::new();
        for (k, v) in self.db.scan_range(&maps::THREAD_ACTIVITY, &prefix, Some(&start), true, usize::MAX)? {
            let position = decode_u64(&k[8..])?;
            if from.is_some_and(|f| position >= f) {
                continue;
            }
            if out.len() >= limit {
                let next = out.last().map_or(position, |(p, _)| *p);
                return Ok((out, Some(next)));
            }
            let root = decode_u64(&v)?;
            let (Some(pdu), Some(meta)) = (self.pdu_by_short(root)?, self.event_meta(root)?) else {
                continue;
            };
            if !self.can_see(viewer, &pdu, &meta)? {
                continue;
            }
            if participated
                && pdu.sender != viewer
                && !self
                    .children(root, viewer, Some("m.thread"), None, false)?
                    .iter()
                    .any(|(_, c)| self.pdu_by_short(*c).ok().flatten().is_some_and(|p| p.sender == viewer))
            {
                continue;
            }
            out.push((position, root));
        }
        Ok((out, None))
    }
}
