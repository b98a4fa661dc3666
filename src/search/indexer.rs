//! The task that keeps the index: it follows the stream from the position
//! the index last committed, derives each event's document from the
//! database and commits in batches (at most every [`COMMIT_INTERVAL`] under
//! load), so sending never waits for it.
//!
//! Each stream event refreshes the documents it affects: a message, name or
//! topic its own; an edit its original (which takes the newest valid
//! edit's text); a redaction its target (gone once redacted) and the
//! originals whose text was the redacted edit's. A refresh reads the
//! database as it is now, so doing one again (after a crash) changes nothing.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::Value;

use super::{Doc, Search, query::Has};
use crate::{
    Result,
    rooms::{Rooms, pdu::Pdu},
    stream::Topic,
};

/// Stream events read per commit while catching up.
const CHUNK: usize = 20_000;
/// The least time between commits (each makes a segment) unless a search
/// waits, which bounds how long a message takes to become searchable.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// How long the task waits for the stream before looking again anyway.
const IDLE: Duration = Duration::from_secs(30);

/// Follows the stream for as long as the server runs.
pub async fn follow(search: Arc<Search>, rooms: &Rooms) {
    let mut indexer = Indexer::new(&search, rooms);
    loop {
        let visible = rooms.stream.visible();
        match crate::util::heavy(|| indexer.step(visible)) {
            Ok(true) => {
                // A search waiting for what was just sent cuts the pause short.
                tokio::select! {
                    _ = tokio::time::sleep(COMMIT_INTERVAL) => {}
                    _ = search.wake.notified() => {}
                }
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!("search: indexing after stream position {} failed: {e}", search.indexed());
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        }
        let at = search.indexed();
        tokio::select! {
            _ = rooms.stream.wait(at, IDLE, |t| matches!(t, Topic::Room(_))) => {}
            _ = search.wake.notified() => {}
        }
    }
}

/// Indexes everything up to the stream's end now (`hearth search reindex`,
/// on a stopped server's database), calling `progress` with each committed
/// position.
pub fn catch_up(search: &Search, rooms: &Rooms, mut progress: impl FnMut(u64)) -> Result<()> {
    let end = rooms.stream.visible();
    let mut indexer = Indexer::new(search, rooms);
    while indexer.step(end)? {
        progress(search.indexed());
    }
    Ok(())
}

struct Indexer<'a> {
    search: &'a Search,
    rooms: &'a Rooms,
    /// Whether each room has (had) end-to-end encryption, once looked up.
    encrypted: HashMap<u64, bool>,
    /// The stream position of the event being applied.
    position: u64,
}

impl<'a> Indexer<'a> {
    fn new(search: &'a Search, rooms: &'a Rooms) -> Self {
        Self { search, rooms, encrypted: HashMap::new(), position: 0 }
    }

    /// Indexes the next chunk of events up to `upto`, then (once that is
    /// done) of backfilled history, and commits; false when there was
    /// nothing to do.
    fn step(&mut self, upto: u64) -> Result<bool> {
        let rebuilding = self.search.take_rebuild()?;
        if rebuilding {
            tracing::info!("search: rebuilding the index");
            self.encrypted.clear();
            self.rooms.queue_history_for_index()?;
        }
        let from = self.search.indexed();
        let rows = if from < upto { self.rooms.stream_events(from, CHUNK)? } else { Vec::new() };
        let mut last = upto;
        for &(position, event, room) in &rows {
            if position > upto {
                break;
            }
            last = position;
            self.position = position;
            self.apply(event, room)?;
        }
        if rows.len() < CHUNK {
            last = upto;
        }
        // Backfilled events have no stream position: a queue of their own,
        // emptied only after the commit (taking one twice changes nothing).
        let history = if rows.len() < CHUNK { self.rooms.history_to_index(CHUNK)? } else { Vec::new() };
        if from >= upto && history.is_empty() && !rebuilding {
            return Ok(false);
        }
        self.position = last;
        for &event in &history {
            if let Some(meta) = self.rooms.event_meta(event)? {
                self.apply(event, meta.room)?;
            }
        }
        self.search.commit(last)?;
        self.rooms.history_indexed(&history)?;
        Ok(true)
    }

    /// Refreshes the documents one stream event affects.
    fn apply(&mut self, short: u64, room: u64) -> Result<()> {
        if self.rooms.is_purging(room) {
            return Ok(());
        }
        let Some(pdu) = self.rooms.pdu_by_short(short)? else { return Ok(()) };
        let content = pdu.content_value();
        match pdu.kind.to_string().as_str() {
            "m.room.redaction" => {
                let target = pdu
                    .redacts
                    .as_ref()
                    .map(|id| id.to_string())
                    .or_else(|| content["redacts"].as_str().map(str::to_owned));
                let Some(target) = target.and_then(|t| ruma::OwnedEventId::try_from(t).ok()) else {
                    return Ok(());
                };
                let Some(target) = self.rooms.event_short(&target)? else { return Ok(()) };
                self.refresh(target)?;
                for original in self.search.edited_by(target)? {
                    self.refresh(original)?;
                }
            }
            "m.room.encryption" => {
                self.encrypted.insert(room, true);
            }
            _ => match edited(&content) {
                Some(original) => {
                    if let Some(original) = self.rooms.event_short(&original)? {
                        self.refresh(original)?;
                    }
                }
                // The event's own row: no document of it exists yet (see
                // `refresh`), so none is deleted first (deletes cost tantivy
                // a look-up in every segment at the commit).
                None => {
                    if let Some(doc) = self.document_of(short, &pdu, content)? {
                        self.search.add(&doc)?;
                    }
                }
            },
        }
        Ok(())
    }

    /// Derives an event's document again (an edit or redaction changed it).
    /// An event whose own row is still ahead is left alone: its row adds
    /// it, so a document only ever exists for events at or behind the
    /// indexer's position (after a crash too: the replay starts after the
    /// last commit, and nothing ahead of it was committed).
    fn refresh(&mut self, short: u64) -> Result<()> {
        let doc = match self.rooms.pdu_by_short(short)? {
            Some(pdu) => {
                let content = pdu.content_value();
                self.document_of(short, &pdu, content)?
            }
            None => None,
        };
        match doc {
            Some(doc) if doc.stream > self.position => Ok(()),
            Some(doc) => self.search.put(&doc),
            None => {
                self.search.remove(short);
                Ok(())
            }
        }
    }

    /// The document an event should have now, if any: an unredacted
    /// message, room name or topic in the timeline (or the backfilled
    /// history) of a room without encryption at the time, with its newest
    /// edit's text.
    fn document_of(&mut self, short: u64, pdu: &Pdu, content: Value) -> Result<Option<Doc>> {
        let rooms = self.rooms;
        let kind = pdu.kind.to_string();
        let Some(&(kind, _)) = super::TYPES.iter().find(|(t, _)| *t == kind) else { return Ok(None) };
        let is_state = kind != "m.room.message";
        let Some(meta) = rooms.event_meta(short)? else { return Ok(None) };
        if !meta.accepted() || meta.redacted_by.is_some() || pdu.state_key.is_some() != is_state {
            return Ok(None);
        }
        if pdu.state_key.as_deref().is_some_and(|k| !k.is_empty()) || edited(&content).is_some() {
            return Ok(None);
        }
        if self.encrypted_at(meta.room, meta.state_after)? {
            return Ok(None);
        }
        let (edit, content) = match rooms.current_edit(short, pdu)? {
            Some((edit, edit_pdu)) => (edit, edit_pdu.content_value()["m.new_content"].clone()),
            None => (0, content),
        };
        let text = |key: &str| content[key].as_str().filter(|s| !s.trim().is_empty()).map(str::to_owned);
        let mut doc = Doc {
            event: short,
            room: meta.room,
            stream: meta.stream,
            ts: pdu.origin_server_ts.get().into(),
            sender: pdu.sender.to_string(),
            kind,
            has: Vec::new(),
            edit,
            body: None,
            name: None,
            topic: None,
        };
        match kind {
            "m.room.message" => {
                doc.body = text("body");
                doc.has = has(&content);
            }
            "m.room.name" => doc.name = text("name"),
            _ => doc.topic = topic(&content),
        }
        Ok((doc.body.is_some() || doc.name.is_some() || doc.topic.is_some()).then_some(doc))
    }

    /// Whether the room had encryption in the state after an event.
    fn encrypted_at(&mut self, room: u64, state_after: Option<u64>) -> Result<bool> {
        let rooms = self.rooms;
        let now = match self.encrypted.get(&room) {
            Some(&now) => now,
            None => {
                let now = rooms.current_state_event(room, "m.room.encryption", "")?.is_some();
                self.encrypted.insert(room, now);
                now
            }
        };
        // Encryption, once on, stays on: a room without it now never had it.
        Ok(now && rooms.state_event_at(state_after, "m.room.encryption", "")?.is_some())
    }
}

/// The event an edit replaces, if `content` is an edit's.
fn edited(content: &Value) -> Option<ruma::OwnedEventId> {
    let relates = &content["m.relates_to"];
    if relates["rel_type"] != "m.replace" {
        return None;
    }
    relates["event_id"].as_str().and_then(|id| id.try_into().ok())
}

/// A topic's text: `topic`, and the `text/plain` representations of
/// `m.topic` that differ from it.
pub fn topic(content: &Value) -> Option<String> {
    let mut parts: Vec<&str> = content["topic"].as_str().into_iter().collect();
    for repr in content["m.topic"]["m.text"].as_array().into_iter().flatten() {
        let plain = repr["mimetype"].as_str().is_none_or(|m| m == "text/plain");
        if let Some(body) = repr["body"].as_str().filter(|b| plain && !parts.contains(b)) {
            parts.push(body);
        }
    }
    let text = parts.join("\n");
    (!text.trim().is_empty()).then_some(text)
}

/// What a message carries: a `url`, an attachment, an image, a link.
fn has(content: &Value) -> Vec<Has> {
    let mut out = Vec::new();
    let msgtype = content["msgtype"].as_str().unwrap_or_default();
    let url = content.get("url").is_some() || content.get("file").is_some();
    if content.get("url").is_some() {
        out.push(Has::Url);
    }
    if url || matches!(msgtype, "m.file" | "m.image" | "m.video" | "m.audio") {
        out.push(Has::Attachment);
    }
    if msgtype == "m.image" {
        out.push(Has::Image);
    }
    let body = content["body"].as_str().unwrap_or_default().to_ascii_lowercase();
    if body.contains("http://") || body.contains("https://") || body.contains("www.") {
        out.push(Has::Link);
    }
    out
}
