//! Server-side search: a tantivy index of messages, room names and topics
//! beside the database, kept by a task that follows the stream
//! ([`indexer`]), never by the write path; queries ranked by BM25 or by
//! recency, narrowed by rooms, senders, types, time and attachments.
//!
//! The index records, in each commit, the stream position it holds every
//! event up to, so a restart (or `kill -9`) goes on from there; every
//! change is "derive this event's document from the database again", so
//! doing one twice changes nothing. Who may see a hit is the caller's
//! question ([`Search::find`]'s `accept`), answered from the database.

pub mod indexer;
pub mod query;
pub mod text;

use std::{
    collections::{HashMap, HashSet},
    ops::Bound,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tantivy::{
    DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term,
    collector::{Collector, Count, FilterCollector, TopDocs},
    directory::MmapDirectory,
    query::{
        AllQuery, BooleanQuery, ConstScoreQuery, Occur, PhraseQuery, Query, RangeQuery, TermQuery,
        TermSetQuery,
    },
    schema::{FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions},
    tokenizer::TextAnalyzer,
};
use tokio::sync::{Notify, watch};

use crate::{Error, Result};
use query::{Has, Parsed, Words};

/// The index's layout; a change rebuilds the index.
const SCHEMA_VERSION: u32 = 2;
/// Memory the writer buffers before it writes a segment.
const WRITER_MEMORY: usize = 64 << 20;
/// Most candidate hits one request examines for visibility; a page that
/// fills no further ends there, with a token to go on from.
pub const SCAN_BUDGET: usize = 500;
/// Past index states kept for paging by rank (so pages stay stable while
/// new messages arrive): how many, and for how long after their last use.
const PINNED_SEARCHERS: usize = 8;
const PINNED_FOR: Duration = Duration::from_secs(600);

struct Fields {
    event: Field,
    room: Field,
    recency: Field,
    ts: Field,
    sender: Field,
    kind: Field,
    has: Field,
    edit: Field,
    body: Field,
    name: Field,
    topic: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(text::ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        event: b.add_u64_field("event", INDEXED | FAST),
        room: b.add_u64_field("room", INDEXED | FAST),
        recency: b.add_u64_field("recency", INDEXED | FAST),
        ts: b.add_u64_field("ts", INDEXED | FAST),
        sender: b.add_text_field("sender", STRING),
        kind: b.add_text_field("type", STRING),
        has: b.add_text_field("has", STRING),
        edit: b.add_u64_field("edit", INDEXED),
        body: b.add_text_field("body", words.clone()),
        name: b.add_text_field("name", words.clone()),
        topic: b.add_text_field("topic", words),
    };
    (b.build(), fields)
}

/// What each commit records.
#[derive(Serialize, Deserialize)]
struct Payload {
    position: u64,
    language: String,
    schema: u32,
}

/// One event as the index holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub event: u64,
    pub room: u64,
    /// The stream position; 0 for backfilled history.
    pub stream: u64,
    pub ts: u64,
    pub sender: String,
    pub kind: &'static str,
    pub has: Vec<Has>,
    /// The edit whose text this is (0: the event's own).
    pub edit: u64,
    pub body: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
}

impl Doc {
    /// The order of recency: the stream position, above every event of
    /// backfilled history (which has none and is older than the live
    /// timeline), those by sending time (the low bits, from the event's
    /// short ID, keep two sent in the same millisecond apart).
    fn recency(&self) -> u64 {
        const LIVE: u64 = 1 << 63;
        match self.stream {
            0 => (self.ts.min(LIVE >> 21) << 20) | (self.event & 0xF_FFFF),
            stream => LIVE | stream,
        }
    }
}

/// The event types the index holds, with the key each one's text is under.
pub const TYPES: [(&str, &str); 3] =
    [("m.room.message", "content.body"), ("m.room.name", "content.name"), ("m.room.topic", "content.topic")];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Rank,
    Recent,
}

/// Where the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// By rank: the index state the first page was read from, and how many
    /// hits of it were examined.
    Rank { generation: u64, offset: usize },
    /// By recency: hits less recent than this ([`Doc::recency`]).
    Recent { before: u64 },
}

impl Cursor {
    pub fn parse(token: &str) -> Option<Self> {
        if let Some(rest) = token.strip_prefix('r') {
            let (generation, offset) = rest.split_once('_')?;
            Some(Cursor::Rank { generation: generation.parse().ok()?, offset: offset.parse().ok()? })
        } else {
            Some(Cursor::Recent { before: token.strip_prefix('t')?.parse().ok()? })
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cursor::Rank { generation, offset } => write!(f, "r{generation}_{offset}"),
            Cursor::Recent { before } => write!(f, "t{before}"),
        }
    }
}

/// What to look for, already resolved to the index's terms.
pub struct Criteria<'a> {
    pub parsed: &'a Parsed,
    /// The text fields searched (`content.body`, `content.name`, `content.topic`).
    pub keys: Vec<&'a str>,
    /// The rooms searched (room short IDs); empty: none.
    pub rooms: Vec<u64>,
    /// Sent by one of these (when given); by none of `not_senders`.
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    /// Of these types (when given).
    pub types: Option<Vec<&'static str>>,
    pub contains_url: Option<bool>,
    pub order: Order,
}

#[derive(Debug, Clone, Copy)]
pub struct Hit {
    pub event: u64,
    pub room: u64,
    pub recency: u64,
    pub score: f32,
}

pub struct Found {
    pub hits: Vec<Hit>,
    /// Matches before visibility is checked (the spec's approximate count).
    pub count: usize,
    pub next: Option<Cursor>,
}

pub struct Search {
    reader: IndexReader,
    writer: Mutex<IndexWriter<TantivyDocument>>,
    fields: Fields,
    analyzer: TextAnalyzer,
    language: String,
    path: PathBuf,
    /// The stream position every event up to is committed for.
    indexed: watch::Sender<u64>,
    /// Edits put in documents since the last commit (edit → original),
    /// which the committed index cannot answer for yet.
    uncommitted_edits: Mutex<HashMap<u64, u64>>,
    /// Whether anything was put or removed since the last commit.
    dirty: AtomicBool,
    rebuild: AtomicBool,
    wake: Notify,
    pinned: Mutex<Vec<(Instant, Searcher)>>,
}

/// `collector`, given only documents of `rooms`.
fn within<C: Collector + Send + Sync>(
    rooms: &Arc<HashSet<u64>>,
    collector: C,
) -> FilterCollector<C, impl Fn(u64) -> bool + Send + Sync + Clone + 'static, u64> {
    let rooms = rooms.clone();
    FilterCollector::new("room".to_owned(), move |room: u64| rooms.contains(&room), collector)
}

/// The fruit of `top` over `query` within `rooms`, and with `count` the
/// number of matches too, in the same pass.
fn top_and_count<C: Collector + Send + Sync>(
    searcher: &Searcher,
    query: &dyn Query,
    rooms: &Arc<HashSet<u64>>,
    count: bool,
    top: C,
) -> Result<(Option<usize>, C::Fruit)> {
    if count {
        let (n, fruit) = searcher.search(query, &within(rooms, (Count, top))).map_err(index_error)?;
        Ok((Some(n), fruit))
    } else {
        Ok((None, searcher.search(query, &within(rooms, top)).map_err(index_error)?))
    }
}

fn index_error(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("search index: {e}"))
}

impl Search {
    /// Opens the index at `path` (created if missing). An index of another
    /// layout or language is emptied, to be rebuilt from the stream.
    pub fn open(path: &Path, language: &str) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(index_error)?;
        let (schema, fields) = schema();
        let analyzer = text::analyzer(language);
        let dir = MmapDirectory::open(path).map_err(index_error)?;
        let index = match Index::open_or_create(dir, schema.clone()) {
            Ok(index) => index,
            Err(e) => {
                tracing::warn!("search: the index at {} is unusable ({e}); building it anew", path.display());
                std::fs::remove_dir_all(path).map_err(index_error)?;
                std::fs::create_dir_all(path).map_err(index_error)?;
                Index::create_in_dir(path, schema).map_err(index_error)?
            }
        };
        index.tokenizers().register(text::ANALYZER, analyzer.clone());
        let payload = index
            .load_metas()
            .map_err(index_error)?
            .payload
            .and_then(|p| serde_json::from_str::<Payload>(&p).ok());
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY).map_err(|e| match e {
            tantivy::TantivyError::LockFailure(..) => Error::internal(format!(
                "search: the index at {} is in use by another process",
                path.display()
            )),
            e => index_error(e),
        })?;
        let position = match payload {
            Some(p) if p.language == language && p.schema == SCHEMA_VERSION => p.position,
            Some(_) => {
                tracing::info!("search: the index was built differently; rebuilding it");
                0
            }
            None => 0,
        };
        let reader =
            index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(index_error)?;
        Ok(Self {
            reader,
            writer: Mutex::new(writer),
            fields,
            analyzer,
            language: language.to_owned(),
            path: path.to_owned(),
            indexed: watch::channel(position).0,
            uncommitted_edits: Mutex::default(),
            dirty: AtomicBool::new(false),
            // An index of nothing yet is built as a rebuild: emptied, and
            // with the backfilled history queued.
            rebuild: AtomicBool::new(position == 0),
            wake: Notify::new(),
            pinned: Mutex::default(),
        })
    }

    /// The stream position the index holds every event up to.
    pub fn indexed(&self) -> u64 {
        *self.indexed.borrow()
    }

    /// Waits until the index holds every event up to `position`, or
    /// `timeout`, asking the indexer to commit without its usual pause.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        if self.indexed() < position {
            self.wake.notify_one();
        }
        let mut rx = self.indexed.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position)).await.is_ok_and(|r| r.is_ok())
    }

    /// A fresh analyzer (they are cheap to clone, and tokenizing needs one's own).
    pub fn analyzer(&self) -> TextAnalyzer {
        self.analyzer.clone()
    }

    /// Documents held and bytes on disk.
    pub fn size(&self) -> Result<(u64, u64)> {
        let docs = self.reader.searcher().num_docs();
        let bytes = crate::util::directory_size(&self.path).map_err(index_error)?;
        Ok((docs, bytes))
    }

    /// Asks the indexer to empty the index and build it again from the
    /// start of the stream (searches meanwhile see what is rebuilt so far).
    pub fn request_rebuild(&self) {
        self.rebuild.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Tells the indexer that backfilled events wait for it (they are not
    /// on the stream it follows).
    pub fn history_added(&self) {
        self.wake.notify_one();
    }

    /// Whether a rebuild was asked for and has not begun.
    pub fn rebuild_pending(&self) -> bool {
        self.rebuild.load(Ordering::SeqCst)
    }

    /// Begins a rebuild if one was asked for: the index emptied, its
    /// position back to the stream's start.
    fn take_rebuild(&self) -> Result<bool> {
        if !self.rebuild_pending() {
            return Ok(false);
        }
        self.writer.lock().expect("search writer").delete_all_documents().map_err(index_error)?;
        self.dirty.store(true, Ordering::SeqCst);
        self.uncommitted_edits.lock().expect("search edits").clear();
        self.indexed.send_replace(0);
        self.rebuild.store(false, Ordering::SeqCst);
        Ok(true)
    }

    fn event_term(&self, event: u64) -> Term {
        Term::from_field_u64(self.fields.event, event)
    }

    /// Replaces an event's document (or adds it).
    pub fn put(&self, doc: &Doc) -> Result<()> {
        self.writer.lock().expect("search writer").delete_term(self.event_term(doc.event));
        self.add(doc)
    }

    /// Adds the document of an event that has none.
    pub fn add(&self, doc: &Doc) -> Result<()> {
        let f = &self.fields;
        let mut d = TantivyDocument::default();
        d.add_u64(f.event, doc.event);
        d.add_u64(f.room, doc.room);
        d.add_u64(f.recency, doc.recency());
        d.add_u64(f.ts, doc.ts);
        d.add_text(f.sender, &doc.sender);
        d.add_text(f.kind, doc.kind);
        for has in &doc.has {
            d.add_text(f.has, has.term());
        }
        d.add_u64(f.edit, doc.edit);
        for (field, text) in [(f.body, &doc.body), (f.name, &doc.name), (f.topic, &doc.topic)] {
            if let Some(text) = text {
                d.add_text(field, text);
            }
        }
        self.writer.lock().expect("search writer").add_document(d).map_err(index_error)?;
        self.dirty.store(true, Ordering::SeqCst);
        if doc.edit != 0 {
            self.uncommitted_edits.lock().expect("search edits").insert(doc.edit, doc.event);
        }
        Ok(())
    }

    /// Removes an event's document, if there is one.
    pub fn remove(&self, event: u64) {
        self.writer.lock().expect("search writer").delete_term(self.event_term(event));
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// Removes every document of a room (a purged room); searchable at
    /// the next commit.
    pub fn remove_room(&self, room: u64) {
        self.writer.lock().expect("search writer").delete_term(Term::from_field_u64(self.fields.room, room));
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// The events whose documents hold the text of edit `edit`.
    pub fn edited_by(&self, edit: u64) -> Result<Vec<u64>> {
        let mut out: Vec<u64> =
            self.uncommitted_edits.lock().expect("search edits").get(&edit).copied().into_iter().collect();
        let searcher = self.reader.searcher();
        let query = TermQuery::new(Term::from_field_u64(self.fields.edit, edit), IndexRecordOption::Basic);
        for (_, address) in
            searcher.search(&query, &TopDocs::with_limit(16).order_by_score()).map_err(index_error)?
        {
            let column = searcher.segment_reader(address.segment_ord).fast_fields().u64("event");
            if let Some(event) = column.map_err(index_error)?.first(address.doc_id) {
                out.push(event);
            }
        }
        Ok(out)
    }

    /// Makes everything put so far searchable and records that the index
    /// holds every event up to `position`, atomically. With nothing put or
    /// removed, only the position moves (in memory: a restart reads those
    /// events again, to no effect).
    pub fn commit(&self, position: u64) -> Result<()> {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            self.indexed.send_replace(position);
            return Ok(());
        }
        let payload = serde_json::to_string(&Payload {
            position,
            language: self.language.clone(),
            schema: SCHEMA_VERSION,
        })
        .map_err(index_error)?;
        {
            let mut writer = self.writer.lock().expect("search writer");
            let mut prepared = writer.prepare_commit().map_err(index_error)?;
            prepared.set_payload(&payload);
            prepared.commit().map_err(index_error)?;
        }
        self.uncommitted_edits.lock().expect("search edits").clear();
        self.reader.reload().map_err(index_error)?;
        self.indexed.send_replace(position);
        Ok(())
    }

    /// The index state a rank cursor was read from, while kept; else the current one.
    fn searcher(&self, generation: Option<u64>) -> Searcher {
        let mut pinned = self.pinned.lock().expect("pinned searchers");
        let now = Instant::now();
        pinned.retain(|(used, _)| now.duration_since(*used) < PINNED_FOR);
        if let Some(generation) = generation
            && let Some((used, searcher)) =
                pinned.iter_mut().find(|(_, s)| s.generation().generation_id() == generation)
        {
            *used = now;
            return searcher.clone();
        }
        let searcher = self.reader.searcher();
        let id = searcher.generation().generation_id();
        if !pinned.iter().any(|(_, s)| s.generation().generation_id() == id) {
            if pinned.len() >= PINNED_SEARCHERS {
                pinned.remove(0);
            }
            pinned.push((now, searcher.clone()));
        }
        searcher
    }

    fn words_query(&self, fields: &[Field], words: &Words) -> Box<dyn Query> {
        let per_field = fields.iter().map(|&field| -> (Occur, Box<dyn Query>) {
            let terms: Vec<Term> = words.0.iter().map(|w| Term::from_field_text(field, w)).collect();
            let query: Box<dyn Query> = if terms.len() == 1 {
                Box::new(TermQuery::new(terms.into_iter().next().expect("one"), IndexRecordOption::WithFreqs))
            } else {
                Box::new(PhraseQuery::new(terms))
            };
            (Occur::Should, query)
        });
        Box::new(BooleanQuery::new(per_field.collect()))
    }

    fn build_query(&self, c: &Criteria, before: Option<u64>) -> Box<dyn Query> {
        let f = &self.fields;
        let fields: Vec<Field> = c
            .keys
            .iter()
            .filter_map(|k| match *k {
                "content.body" => Some(f.body),
                "content.name" => Some(f.name),
                "content.topic" => Some(f.topic),
                _ => None,
            })
            .collect();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for group in &c.parsed.groups {
            let alternatives = group.iter().map(|w| (Occur::Should, self.words_query(&fields, w))).collect();
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(alternatives))));
        }
        // Filters: constant score, so they narrow without changing the rank.
        let filter = |q: Box<dyn Query>| -> Box<dyn Query> { Box::new(ConstScoreQuery::new(q, 0.0)) };
        let text_set = |field: Field, values: &mut dyn Iterator<Item = &str>| -> Box<dyn Query> {
            Box::new(TermSetQuery::new(values.map(|v| Term::from_field_text(field, v)).collect::<Vec<_>>()))
        };
        let range = |field: Field, from: Option<u64>, to: Option<u64>| -> Box<dyn Query> {
            let bound = |v: Option<u64>, incl: bool| match v {
                Some(v) if incl => Bound::Included(Term::from_field_u64(field, v)),
                Some(v) => Bound::Excluded(Term::from_field_u64(field, v)),
                None => Bound::Unbounded,
            };
            Box::new(RangeQuery::new(bound(from, true), bound(to, false)))
        };
        if let Some(senders) = &c.senders {
            clauses.push((Occur::Must, filter(text_set(f.sender, &mut senders.iter().map(String::as_str)))));
        }
        for sender in &c.not_senders {
            clauses.push((
                Occur::MustNot,
                Box::new(TermQuery::new(Term::from_field_text(f.sender, sender), IndexRecordOption::Basic)),
            ));
        }
        if let Some(types) = &c.types {
            clauses.push((Occur::Must, filter(text_set(f.kind, &mut types.iter().copied()))));
        }
        let has_term = |has: Has| -> Box<dyn Query> {
            Box::new(TermQuery::new(Term::from_field_text(f.has, has.term()), IndexRecordOption::Basic))
        };
        match c.contains_url {
            Some(true) => clauses.push((Occur::Must, filter(has_term(Has::Url)))),
            Some(false) => clauses.push((Occur::MustNot, has_term(Has::Url))),
            None => {}
        }
        for has in &c.parsed.has {
            clauses.push((Occur::Must, filter(has_term(*has))));
        }
        if c.parsed.before.is_some() || c.parsed.after.is_some() {
            clauses.push((Occur::Must, filter(range(f.ts, c.parsed.after, c.parsed.before))));
        }
        if let Some(before) = before {
            clauses.push((Occur::Must, filter(range(f.recency, None, Some(before)))));
        }
        for words in &c.parsed.excluded {
            clauses.push((Occur::MustNot, self.words_query(&fields, words)));
        }
        if c.parsed.groups.is_empty() {
            clauses.push((Occur::Must, filter(Box::new(AllQuery))));
        }
        Box::new(BooleanQuery::new(clauses))
    }

    /// One page of hits, best (or newest) first: up to `limit` that
    /// `accept` takes, examining at most [`SCAN_BUDGET`] candidates.
    pub fn find(
        &self,
        c: &Criteria,
        cursor: Option<Cursor>,
        limit: usize,
        mut accept: impl FnMut(&Hit) -> Result<bool>,
    ) -> Result<Found> {
        let limit = limit.max(1);
        let (generation, mut offset, mut before) = match cursor {
            Some(Cursor::Rank { generation, offset }) => (Some(generation), offset, None),
            Some(Cursor::Recent { before }) => (None, 0, Some(before)),
            None => (None, 0, None),
        };
        let searcher = self.searcher(generation.filter(|_| c.order == Order::Rank));
        let generation = searcher.generation().generation_id();
        // Rooms are checked on each match (a fast field read), so the cost
        // follows the matches, not how much the user's rooms hold.
        let rooms: Arc<HashSet<u64>> = Arc::new(c.rooms.iter().copied().collect());
        // The count comes with the first window when that window's query is
        // the whole search (one pass over the matches, not two).
        let count = match (c.order, before) {
            (Order::Recent, Some(_)) => Some(
                searcher.search(&*self.build_query(c, None), &within(&rooms, Count)).map_err(index_error)?,
            ),
            _ => None,
        };
        let mut found = Found { hits: Vec::new(), count: count.unwrap_or_default(), next: None };
        let mut count_wanted = count.is_none();
        if c.rooms.is_empty() {
            return Ok(found);
        }
        let mut columns = HashMap::new();
        let mut read = |address: DocAddress, score: f32| -> Result<Hit> {
            let (event, room, recency) = match columns.entry(address.segment_ord) {
                std::collections::hash_map::Entry::Occupied(held) => held.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let fast = searcher.segment_reader(address.segment_ord).fast_fields();
                    let column = |name| fast.u64(name).map_err(index_error);
                    slot.insert((column("event")?, column("room")?, column("recency")?))
                }
            };
            let get = |c: &tantivy::columnar::Column<u64>| c.first(address.doc_id).unwrap_or_default();
            Ok(Hit { event: get(event), room: get(room), recency: get(recency), score })
        };
        let mut examined = 0;
        let mut window = (limit * 2).max(20);
        'windows: loop {
            let raw: Vec<(f32, DocAddress)> = match c.order {
                Order::Rank => {
                    let top = TopDocs::with_limit(window).and_offset(offset).order_by_score();
                    let (n, raw) =
                        top_and_count(&searcher, &*self.build_query(c, None), &rooms, count_wanted, top)?;
                    found.count = n.unwrap_or(found.count);
                    raw
                }
                Order::Recent => {
                    let top = TopDocs::with_limit(window)
                        .order_by_fast_field::<u64>("recency", tantivy::Order::Desc);
                    let query = self.build_query(c, before);
                    let (n, raw) = top_and_count(&searcher, &*query, &rooms, count_wanted, top)?;
                    found.count = n.unwrap_or(found.count);
                    raw.into_iter().map(|(_, address)| (0.0, address)).collect()
                }
            };
            count_wanted = false;
            let exhausted = raw.len() < window;
            for (i, (score, address)) in raw.iter().enumerate() {
                let hit = read(*address, *score)?;
                examined += 1;
                offset += 1;
                before = Some(hit.recency);
                if accept(&hit)? {
                    found.hits.push(hit);
                }
                // A full page always names the next (possibly empty), as
                // Synapse; one cut short by the budget only if more remain.
                let more = i + 1 < raw.len() || !exhausted;
                let full = found.hits.len() == limit;
                if full || (examined >= SCAN_BUDGET && more) {
                    found.next = Some(match c.order {
                        Order::Rank => Cursor::Rank { generation, offset },
                        Order::Recent => Cursor::Recent { before: hit.recency },
                    });
                }
                if full || examined >= SCAN_BUDGET {
                    break 'windows;
                }
            }
            if exhausted {
                break;
            }
            window = (window * 2).min(SCAN_BUDGET);
        }
        if c.order == Order::Recent && !c.parsed.groups.is_empty() && !found.hits.is_empty() {
            self.score(&searcher, c, &mut found.hits)?;
        }
        Ok(found)
    }

    /// Fills in the rank of hits found by recency.
    fn score(&self, searcher: &Searcher, c: &Criteria, hits: &mut [Hit]) -> Result<()> {
        let events: Vec<Term> = hits.iter().map(|h| self.event_term(h.event)).collect();
        let query = BooleanQuery::new(vec![
            (Occur::Must, self.build_query(c, None)),
            (Occur::Must, Box::new(ConstScoreQuery::new(Box::new(TermSetQuery::new(events)), 0.0))),
        ]);
        let scored = searcher
            .search(&query, &TopDocs::with_limit(hits.len()).order_by_score())
            .map_err(index_error)?;
        let mut scores = HashMap::new();
        for (score, address) in scored {
            let column = searcher.segment_reader(address.segment_ord).fast_fields().u64("event");
            if let Some(event) = column.map_err(index_error)?.first(address.doc_id) {
                scores.insert(event, score);
            }
        }
        for hit in hits {
            hit.score = scores.get(&hit.event).copied().unwrap_or_default();
        }
        Ok(())
    }

    /// The highlights of one hit's texts: the written forms of the words the
    /// search looked for.
    pub fn highlights<'t>(
        &self,
        parsed: &Parsed,
        texts: impl IntoIterator<Item = &'t str>,
        out: &mut std::collections::BTreeSet<String>,
    ) {
        let wanted: HashSet<String> = parsed.wanted().cloned().collect();
        if wanted.is_empty() {
            return;
        }
        let mut analyzer = self.analyzer();
        for t in texts {
            text::highlights(&mut analyzer, t, &wanted, out);
        }
    }
}
