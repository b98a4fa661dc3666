//! Relations: the index of events that relate to others (`m.relates_to`
//! with a `rel_type`), the checks on new relations, `/relations` pages,
//! the bundled aggregations served in `unsigned.m.relations`, and threads.

use ruma::{OwnedEventId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Rooms, pdu::Pdu, read::SCAN_BUDGET, redaction::Pending};
use crate::{
    Error, Result,
    storage::{Batch, SEP, decode_u64, maps},
};

/// How deep `recurse=true` follows relations of relations.
pub const RECURSION_DEPTH: u64 = 3;
/// The longest annotation key accepted from a local client (as Synapse).
const MAX_ANNOTATION_KEY: usize = 500;
/// The newest edits of an event examined for its latest valid one.
const EDIT_WINDOW: usize = 50;
/// The most references bundled into an event (the newest).
const REFERENCE_LIMIT: usize = 100;
/// The newest replies examined for a thread's latest one the viewer may see.
const LATEST_WINDOW: usize = 50;

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

/// What a `/relations` page asks for.
pub struct RelationsQuery<'a> {
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// Children's children too, to [`RECURSION_DEPTH`] levels.
    pub recurse: bool,
    /// Gap tokens: `p` stands just before position `p`.
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub backwards: bool,
    pub limit: usize,
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

/// The `relation_types` prefix of a parent's children of one type.
fn typed_prefix(parent: u64, rel_type: &str) -> Vec<u8> {
    let mut prefix = parent.to_be_bytes().to_vec();
    prefix.extend_from_slice(rel_type.as_bytes());
    prefix.push(SEP);
    prefix
}

/// What `threads` stores per root: the latest reply's position and the
/// number of replies.
fn thread_value(latest: u64, count: u64) -> Vec<u8> {
    [latest.to_be_bytes(), count.to_be_bytes()].concat()
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
        let Some(parent_short) = self.event_short(&parent)? else {
            // The parent has not arrived: the relation waits for it.
            self.await_target(batch, &parent, event_short, Pending::Relation);
            return Ok(());
        };
        if self.event_meta(parent_short)?.is_none_or(|m| m.room != room_short) {
            return Ok(());
        }
        self.relate(
            batch,
            parent_short,
            (&rel_type, key),
            event_type,
            sender,
            event_short,
            room_short,
            position,
        )
    }

    /// Indexes a relation to a stored parent.
    #[allow(clippy::too_many_arguments)]
    fn relate(
        &self,
        batch: &mut Batch,
        parent_short: u64,
        (rel_type, key): (&str, Option<String>),
        event_type: &str,
        sender: &UserId,
        event_short: u64,
        room_short: u64,
        position: u64,
    ) -> Result<()> {
        let rel_type = rel_type.to_owned();
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
        batch.put(
            &maps::RELATION_TYPES,
            [typed_prefix(parent_short, &rel_type), position.to_be_bytes().to_vec()].concat(),
            event_short.to_be_bytes(),
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
            // (A reply that waited for its root may be older than the latest.)
            let (latest, count) = match self.thread_summary(room_short, parent_short)? {
                Some((latest, count)) => {
                    batch.delete(
                        &maps::THREAD_ACTIVITY,
                        [room_short.to_be_bytes(), latest.to_be_bytes()].concat(),
                    );
                    (latest.max(position), count)
                }
                None => (position, 0),
            };
            batch.put(&maps::THREADS, thread_key(room_short, parent_short), thread_value(latest, count + 1));
            batch.put(
                &maps::THREAD_ACTIVITY,
                [room_short.to_be_bytes(), latest.to_be_bytes()].concat(),
                parent_short.to_be_bytes(),
            );
            batch.put(
                &maps::THREAD_PARTICIPANTS,
                [&parent_short.to_be_bytes()[..], sender.as_bytes()].concat(),
                Vec::new(),
            );
        }
        Ok(())
    }

    /// Indexes the relations that arrived before `parent` (now being
    /// appended at its short ID), in its batch.
    pub(super) fn relate_waiting(
        &self,
        batch: &mut Batch,
        parent: &ruma::EventId,
        parent_short: u64,
        room_short: u64,
    ) -> Result<()> {
        for child in self.waiting_for(parent, Pending::Relation)? {
            let (Some(pdu), Some(meta)) = (self.pdu_by_short(child)?, self.event_meta(child)?) else {
                continue;
            };
            if meta.room != room_short || !meta.accepted() || meta.redacted_by.is_some() {
                continue;
            }
            let content = pdu.content_value();
            let Some((rel_type, _, key)) = relation_of(&content) else { continue };
            let kind = pdu.kind.to_string();
            self.relate(
                batch,
                parent_short,
                (&rel_type, key),
                &kind,
                &pdu.sender,
                child,
                room_short,
                meta.stream,
            )?;
        }
        Ok(())
    }

    /// Removes a redacted event's relation (in the redaction's batch): a
    /// redacted event no longer relates to anything.
    pub(super) fn unindex_relation(
        &self,
        batch: &mut Batch,
        target: &Pdu,
        target_short: u64,
        position: u64,
        room_short: u64,
    ) -> Result<()> {
        let Some((rel_type, parent, key)) = relation_of(&target.content_value()) else { return Ok(()) };
        let Some(parent_short) = self.event_short(&parent)? else { return Ok(()) };
        let row = [parent_short.to_be_bytes(), position.to_be_bytes()].concat();
        if !self.db.contains(&maps::RELATIONS, &row)? {
            return Ok(());
        }
        batch.delete(&maps::RELATIONS, row);
        let typed = typed_prefix(parent_short, &rel_type);
        batch.delete(&maps::RELATION_TYPES, [typed.clone(), position.to_be_bytes().to_vec()].concat());
        if let Some(key) = key {
            let annotation = annotation_key(parent_short, &target.sender, &target.kind.to_string(), &key);
            if self.db.get(&maps::ANNOTATIONS, &annotation)?.is_some_and(|a| a == target_short.to_be_bytes())
            {
                batch.delete(&maps::ANNOTATIONS, annotation);
            }
        }
        if rel_type == "m.thread"
            && let Some((latest, count)) = self.thread_summary(room_short, parent_short)?
        {
            let activity = |position: u64| [room_short.to_be_bytes(), position.to_be_bytes()].concat();
            let thread = thread_key(room_short, parent_short);
            if latest != position {
                batch.put(&maps::THREADS, thread, thread_value(latest, count.saturating_sub(1)));
                return Ok(());
            }
            // The latest reply goes: the one before it is the latest now.
            batch.delete(&maps::THREAD_ACTIVITY, activity(latest));
            let earlier = self.db.scan_range(
                &maps::RELATION_TYPES,
                &typed,
                Some(&[typed.clone(), (position - 1).to_be_bytes().to_vec()].concat()),
                true,
                1,
            )?;
            match earlier.first() {
                Some((k, _)) if count > 1 => {
                    let previous = decode_u64(&k[k.len() - 8..])?;
                    batch.put(&maps::THREADS, thread, thread_value(previous, count - 1));
                    batch.put(&maps::THREAD_ACTIVITY, activity(previous), parent_short.to_be_bytes());
                }
                _ => batch.delete(&maps::THREADS, thread),
            }
        }
        Ok(())
    }

    /// A thread's latest reply position and reply count.
    pub fn thread_summary(&self, room_short: u64, root: u64) -> Result<Option<(u64, u64)>> {
        let Some(value) = self.db.get(&maps::THREADS, &thread_key(room_short, root))? else {
            return Ok(None);
        };
        Ok(Some((decode_u64(&value[..8])?, decode_u64(&value[8..])?)))
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

    /// One page of the children of `parent` that `viewer` may see and that
    /// match the query, as (stream position, event short ID) in the page's
    /// order, and the gap the next page starts from. At most
    /// [`SCAN_BUDGET`] relations are examined (review §2.4).
    pub fn relations_page(
        &self,
        parent: u64,
        viewer: &UserId,
        query: &RelationsQuery<'_>,
    ) -> Result<(Vec<Positioned>, Option<u64>)> {
        if query.recurse {
            return self.recursive_relations_page(parent, viewer, query);
        }
        let ignored = self.users.ignored_users(viewer)?;
        let prefix = match query.rel_type {
            Some(rel_type) => typed_prefix(parent, rel_type),
            None => parent.to_be_bytes().to_vec(),
        };
        let map = if query.rel_type.is_some() { &maps::RELATION_TYPES } else { &maps::RELATIONS };
        let backwards = query.backwards;
        let mut cursor = query.from;
        let mut found = Vec::new();
        let mut scanned = 0;
        loop {
            let start = match (backwards, cursor) {
                (true, Some(0)) => return Ok((found, None)),
                (true, Some(c)) => Some([&prefix[..], &(c - 1).to_be_bytes()].concat()),
                (false, Some(c)) => Some([&prefix[..], &c.to_be_bytes()].concat()),
                (_, None) => None,
            };
            let slice = self.db.scan_range(map, &prefix, start.as_deref(), backwards, 100)?;
            let exhausted = slice.len() < 100;
            for (k, v) in slice {
                let position = decode_u64(&k[k.len() - 8..])?;
                let beyond_to =
                    query.to.is_some_and(|to| if backwards { position < to } else { position >= to });
                if beyond_to {
                    return Ok((found, None));
                }
                if found.len() == query.limit {
                    // Another relation lies within the range: there may be a next page.
                    return Ok((found, cursor));
                }
                if scanned == SCAN_BUDGET {
                    return Ok((found, cursor));
                }
                scanned += 1;
                cursor = Some(if backwards { position } else { position + 1 });
                let child = match query.rel_type {
                    Some(_) => decode_u64(&v)?,
                    None => serde_json::from_slice::<Relation>(&v).map_err(Error::internal)?.child,
                };
                if self.shows_child(child, viewer, &ignored, query.event_type)? {
                    found.push((position, child));
                }
            }
            if exhausted {
                return Ok((found, None));
            }
        }
    }

    /// `recurse=true`: children, theirs and so on to [`RECURSION_DEPTH`]
    /// levels, from at most [`SCAN_BUDGET`] relations, then paged.
    fn recursive_relations_page(
        &self,
        parent: u64,
        viewer: &UserId,
        query: &RelationsQuery<'_>,
    ) -> Result<(Vec<Positioned>, Option<u64>)> {
        let ignored = self.users.ignored_users(viewer)?;
        let mut found = Vec::new();
        let mut level = vec![parent];
        let mut budget = SCAN_BUDGET;
        for _ in 0..RECURSION_DEPTH {
            let mut next = Vec::new();
            for parent in level {
                let prefix = match query.rel_type {
                    Some(rel_type) => typed_prefix(parent, rel_type),
                    None => parent.to_be_bytes().to_vec(),
                };
                let map = if query.rel_type.is_some() { &maps::RELATION_TYPES } else { &maps::RELATIONS };
                let rows = self.db.scan_range(map, &prefix, None, false, budget)?;
                budget -= rows.len();
                for (k, v) in rows {
                    let child = match query.rel_type {
                        Some(_) => decode_u64(&v)?,
                        None => serde_json::from_slice::<Relation>(&v).map_err(Error::internal)?.child,
                    };
                    if self.shows_child(child, viewer, &ignored, query.event_type)? {
                        found.push((decode_u64(&k[k.len() - 8..])?, child));
                        next.push(child);
                    }
                }
            }
            level = next;
        }
        found.sort_unstable();
        found.dedup();
        let backwards = query.backwards;
        found.retain(|(position, _)| {
            let after_from = match query.from {
                Some(f) if backwards => *position < f,
                Some(f) => *position >= f,
                None => true,
            };
            let before_to = match query.to {
                Some(t) if backwards => *position >= t,
                Some(t) => *position < t,
                None => true,
            };
            after_from && before_to
        });
        if backwards {
            found.reverse();
        }
        let more = found.len() > query.limit;
        found.truncate(query.limit);
        let next = match found.last() {
            Some((position, _)) if more => Some(if backwards { *position } else { position + 1 }),
            _ => None,
        };
        Ok((found, next))
    }

    /// Whether a child relation is shown to `viewer`: not redacted (a
    /// redacted event no longer relates), not from an ignored user, of the
    /// event type asked for, and visible.
    fn shows_child(
        &self,
        child: u64,
        viewer: &UserId,
        ignored: &std::collections::HashSet<OwnedUserId>,
        event_type: Option<&str>,
    ) -> Result<bool> {
        let (Some(pdu), Some(meta)) = (self.pdu_by_short(child)?, self.event_meta(child)?) else {
            return Ok(false);
        };
        Ok(meta.redacted_by.is_none()
            && !ignored.contains(&pdu.sender)
            && event_type.is_none_or(|t| pdu.kind.to_string() == t)
            && self.can_see(viewer, &pdu, &meta)?)
    }

    /// The newest children of one relation type, newest first, at most
    /// `window` of them, that `viewer` is shown.
    fn newest_children(
        &self,
        parent: u64,
        rel_type: &str,
        viewer: &UserId,
        window: usize,
    ) -> Result<Vec<u64>> {
        let ignored = self.users.ignored_users(viewer)?;
        let prefix = typed_prefix(parent, rel_type);
        let mut out = Vec::new();
        for (_, v) in self.db.scan_range(&maps::RELATION_TYPES, &prefix, None, true, window)? {
            let child = decode_u64(&v)?;
            if self.shows_child(child, viewer, &ignored, None)? {
                out.push(child);
            }
        }
        Ok(out)
    }

    /// Adds `unsigned.m.relations` to a served event: the latest valid edit,
    /// the thread summary, references. State events get none. Each part
    /// costs a bounded number of reads, however many children the event has.
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
        if let Some(thread) = self.thread_aggregation(short, viewer, viewer_device, event)? {
            relations.insert("m.thread".into(), thread);
        }
        let references = self.newest_children(short, "m.reference", viewer, REFERENCE_LIMIT)?;
        if !references.is_empty() {
            let mut chunk = Vec::with_capacity(references.len());
            for child in references.into_iter().rev() {
                chunk.push(json!({"event_id": self.short.name(child)?}));
            }
            relations.insert("m.reference".into(), json!({"chunk": chunk}));
        }
        if !relations.is_empty() {
            event["unsigned"]["m.relations"] = Value::Object(relations);
        }
        Ok(())
    }

    /// A thread root's `m.thread` aggregation: the number of replies (those
    /// of users the viewer ignores left out), the latest reply the viewer
    /// may see with its own latest edit, and whether the viewer took part.
    fn thread_aggregation(
        &self,
        root: u64,
        viewer: &UserId,
        viewer_device: Option<&ruma::DeviceId>,
        event: &Value,
    ) -> Result<Option<Value>> {
        let Some(meta) = self.event_meta(root)? else { return Ok(None) };
        let Some((_, mut count)) = self.thread_summary(meta.room, root)? else { return Ok(None) };
        let Some(&latest) = self.newest_children(root, "m.thread", viewer, LATEST_WINDOW)?.first() else {
            return Ok(None);
        };
        let participants = |user: &UserId| {
            self.db.contains(&maps::THREAD_PARTICIPANTS, &[&root.to_be_bytes()[..], user.as_bytes()].concat())
        };
        let ignored = self.users.ignored_users(viewer)?;
        let mut ignored_took_part = false;
        for user in ignored.iter() {
            ignored_took_part |= participants(user)?;
        }
        if ignored_took_part {
            // Rare: count the replies one by one, within the scan budget.
            let prefix = typed_prefix(root, "m.thread");
            count = 0;
            for (_, v) in self.db.scan_range(&maps::RELATION_TYPES, &prefix, None, false, SCAN_BUDGET)? {
                let sender = self.pdu_by_short(decode_u64(&v)?)?.map(|p| p.sender);
                count += u64::from(sender.is_some_and(|s| !ignored.contains(&s)));
            }
        }
        let mut latest_event = self.client_event(latest, viewer_device, viewer)?;
        if let Some(edit) = self.latest_edit(latest, viewer, viewer_device, &latest_event)? {
            latest_event["unsigned"]["m.relations"] = json!({"m.replace": edit});
        }
        let participated = event["sender"] == viewer.as_str() || participants(viewer)?;
        Ok(Some(
            json!({"latest_event": latest_event, "count": count, "current_user_participated": participated}),
        ))
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

    /// The most recent valid edit of an event that `viewer` is shown, in
    /// the client format.
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
        let sender = original["sender"].as_str().unwrap_or_default();
        let kind = original["type"].as_str().unwrap_or_default();
        // Edits are few; an event edited thousands of times costs the newest
        // [`EDIT_WINDOW`] of them.
        let children = self.newest_children(short, "m.replace", viewer, EDIT_WINDOW)?;
        self.newest_valid_edit(children, sender, kind)?
            .map(|(child, _)| self.client_event(child, viewer_device, viewer))
            .transpose()
    }

    /// The edit that gives an (unredacted) event its current content, as
    /// everyone sees it: the newest valid one, with the edit event.
    pub fn current_edit(&self, short: u64, original: &Pdu) -> Result<Option<(u64, Pdu)>> {
        let prefix = typed_prefix(short, "m.replace");
        let rows = self.db.scan_range(&maps::RELATION_TYPES, &prefix, None, true, EDIT_WINDOW)?;
        let children = rows.iter().map(|(_, v)| decode_u64(v)).collect::<Result<Vec<_>, _>>()?;
        self.newest_valid_edit(children, original.sender.as_str(), &original.kind.to_string())
    }

    /// Of `children`, the most recent valid edit of an event by `sender` of
    /// type `kind` (same sender and type, no state key, `m.new_content`
    /// present), by timestamp then event ID.
    fn newest_valid_edit(&self, children: Vec<u64>, sender: &str, kind: &str) -> Result<Option<(u64, Pdu)>> {
        let mut best: Option<(i64, String, u64, Pdu)> = None;
        for child in children {
            let Some(edit) = self.pdu_by_short(child)? else { continue };
            let edit_kind = edit.kind.to_string();
            if edit.sender.as_str() != sender
                || edit_kind != kind
                || edit.state_key.is_some()
                // (An encrypted edit carries it inside the ciphertext.)
                || (edit_kind != "m.room.encrypted"
                    && !edit.content_value().get("m.new_content").is_some_and(Value::is_object))
            {
                continue;
            }
            let candidate = (i64::from(edit.origin_server_ts.get()), edit.event_id.to_string());
            if best.as_ref().is_none_or(|b| (candidate.0, &candidate.1) > (b.0, &b.1)) {
                best = Some((candidate.0, candidate.1, child, edit));
            }
        }
        Ok(best.map(|(_, _, child, edit)| (child, edit)))
    }

    /// Thread roots of a room by latest activity, newest first, before the
    /// activity position `from`; with `participated`, only threads the
    /// viewer sent the root of or replied in. At most [`SCAN_BUDGET`]
    /// threads are examined; the token then goes on from there.
    pub fn threads(
        &self,
        room_short: u64,
        viewer: &UserId,
        participated: bool,
        from: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Positioned>, Option<u64>)> {
        let prefix = room_short.to_be_bytes();
        if from == Some(0) {
            return Ok((Vec::new(), None));
        }
        let start = [prefix, from.map_or(u64::MAX, |f| f - 1).to_be_bytes()].concat();
        let rows =
            self.db.scan_range(&maps::THREAD_ACTIVITY, &prefix, Some(&start), true, SCAN_BUDGET + 1)?;
        let mut out = Vec::new();
        for (scanned, (k, v)) in rows.into_iter().enumerate() {
            let position = decode_u64(&k[8..])?;
            if out.len() >= limit || scanned == SCAN_BUDGET {
                return Ok((out, Some(position + 1)));
            }
            let root = decode_u64(&v)?;
            let (Some(pdu), Some(meta)) = (self.pdu_by_short(root)?, self.event_meta(root)?) else {
                continue;
            };
            if !self.can_see(viewer, &pdu, &meta)? {
                continue;
            }
            let took_part = || {
                self.db.contains(
                    &maps::THREAD_PARTICIPANTS,
                    &[&root.to_be_bytes()[..], viewer.as_bytes()].concat(),
                )
            };
            if participated && pdu.sender != viewer && !took_part()? {
                continue;
            }
            out.push((position, root));
        }
        Ok((out, None))
    }
}
