//! The stream: one position stamped on every change a client can see
//! (events, receipts, typing, account data, presence, …), and the wake-ups
//! of whoever waits for changes.
//!
//! Positions are handed out in order but writes may finish out of order, so
//! readers only go up to the *visible* position: every position at or below
//! it is written or abandoned. Positions survive restarts by reserving them
//! in blocks in `global/stream_reserved` (a restart skips the rest of a
//! block; gaps are harmless).

use std::{
    collections::{BTreeSet, VecDeque},
    sync::Mutex,
    time::Duration,
};

use ruma::OwnedUserId;
use tokio::sync::watch;

use crate::{
    Result,
    storage::{Batch, Db, decode_u64, maps},
};

const RESERVE_BLOCK: u64 = 1_000;
const RESERVED_KEY: &[u8] = b"stream_reserved";
/// Changes remembered for waiters; one further back sends them to a full check.
const RECENT: usize = 10_000;

/// What a change concerns, so waiters can tell whether it is theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    /// A room's timeline, receipts or typing (room short ID).
    Room(u64),
    /// One user's own data: account data, to-device messages, their invites.
    User(OwnedUserId),
    /// A change about a user (presence, device keys), of interest to them
    /// and to whoever shares a room with them.
    AboutUser(OwnedUserId),
    /// A notification outside this server's rooms (an invite to a room it
    /// is not in): for the pushers only.
    Pushes,
}

struct Inner {
    next: u64,
    reserved: u64,
    in_flight: BTreeSet<u64>,
    recent: VecDeque<(u64, Topic)>,
}

pub struct Stream {
    db: Db,
    inner: Mutex<Inner>,
    visible: watch::Sender<u64>,
}

/// A position being written. Publish it once its batch is written; dropped
/// unpublished (the write failed), it is given up.
#[must_use]
pub struct Position<'a> {
    stream: &'a Stream,
    pos: u64,
    done: bool,
}

impl Position<'_> {
    pub fn get(&self) -> u64 {
        self.pos
    }

    /// Makes the write visible and wakes waiters interested in `topics`.
    pub fn publish(mut self, topics: impl IntoIterator<Item = Topic>) {
        self.done = true;
        self.stream.finish(self.pos, topics);
    }
}

impl Drop for Position<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.stream.finish(self.pos, []);
        }
    }
}

impl Stream {
    /// Opens the stream after the highest position ever reserved, or after
    /// `floor` (the largest position found in storage) if that is higher.
    pub fn open(db: Db, floor: u64) -> Result<Self> {
        let reserved = match db.get(&maps::GLOBAL, RESERVED_KEY)? {
            Some(bytes) => decode_u64(&bytes)?,
            None => 0,
        };
        let next = reserved.max(floor) + 1;
        Ok(Self {
            db,
            inner: Mutex::new(Inner {
                next,
                reserved: next - 1,
                in_flight: BTreeSet::new(),
                recent: VecDeque::new(),
            }),
            visible: watch::channel(next - 1).0,
        })
    }

    /// The next position, for a write about to happen.
    pub fn allocate(&self) -> Result<Position<'_>> {
        let mut inner = self.inner.lock().expect("stream");
        let pos = inner.next;
        if pos > inner.reserved {
            let reserved = pos + RESERVE_BLOCK;
            let mut batch = Batch::new();
            batch.put(&maps::GLOBAL, RESERVED_KEY, reserved.to_be_bytes());
            self.db.write(batch)?;
            inner.reserved = reserved;
        }
        inner.next += 1;
        inner.in_flight.insert(pos);
        Ok(Position { stream: self, pos, done: false })
    }

    fn finish(&self, pos: u64, topics: impl IntoIterator<Item = Topic>) {
        let mut inner = self.inner.lock().expect("stream");
        inner.in_flight.remove(&pos);
        for topic in topics {
            if inner.recent.len() >= RECENT {
                inner.recent.pop_front();
            }
            // Kept in position order (publishes may come out of order).
            let at = inner.recent.partition_point(|(p, _)| *p <= pos);
            inner.recent.insert(at, (pos, topic));
        }
        let visible = match inner.in_flight.first() {
            Some(first) => first - 1,
            None => inner.next - 1,
        };
        drop(inner);
        self.visible.send_if_modified(|v| {
            let changed = *v < visible;
            *v = (*v).max(visible);
            changed
        });
    }

    /// How many waits are under way (tests wait for a long poll to be
    /// waiting before they act).
    pub fn waiters(&self) -> usize {
        self.visible.receiver_count()
    }

    /// Every position at or below this one is written (or abandoned).
    pub fn visible(&self) -> u64 {
        *self.visible.borrow()
    }

    /// Waits until a change after `since` matches `interest`, or `timeout`
    /// passes. Returns the visible position then. A change too old to be
    /// remembered counts as a match (the caller checks everything).
    pub async fn wait(&self, since: u64, timeout: Duration, interest: impl Fn(&Topic) -> bool) -> u64 {
        let mut rx = self.visible.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut checked = since;
        loop {
            let visible = *rx.borrow_and_update();
            if visible > checked {
                // Copied out, so `interest` (which may read storage) runs
                // without holding the lock.
                let topics: Option<Vec<Topic>> = {
                    let inner = self.inner.lock().expect("stream");
                    let remembered_from = inner.recent.front().map_or(u64::MAX, |(p, _)| *p);
                    if remembered_from > checked + 1 && inner.recent.len() >= RECENT {
                        None
                    } else {
                        let start = inner.recent.partition_point(|(p, _)| *p <= checked);
                        let recent = inner.recent.range(start..).take_while(|(p, _)| *p <= visible);
                        Some(recent.map(|(_, t)| t.clone()).collect())
                    }
                };
                match topics {
                    Some(topics) if !topics.iter().any(&interest) => checked = visible,
                    _ => return visible,
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.visible(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> (tempfile::TempDir, Stream) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 8, false).unwrap();
        (dir, Stream::open(db, 0).unwrap())
    }

    #[test]
    fn visibility_waits_for_earlier_writes() {
        let (_dir, stream) = stream();
        let start = stream.visible();
        let a = stream.allocate().unwrap();
        let b = stream.allocate().unwrap();
        b.publish([]);
        assert_eq!(stream.visible(), start, "b is written but a is not: nothing new is visible");
        a.publish([]);
        assert_eq!(stream.visible(), start + 2);
        // An abandoned write releases its position.
        drop(stream.allocate().unwrap());
        assert_eq!(stream.visible(), start + 3);
    }

    #[test]
    fn positions_are_never_reused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 8, false).unwrap();
        let first = Stream::open(db.clone(), 0).unwrap();
        let used = first.allocate().unwrap().get();
        let again = Stream::open(db, 0).unwrap();
        assert!(again.allocate().unwrap().get() > used);
    }

    #[tokio::test]
    async fn waiters_wake_for_their_topics_only() {
        let (_dir, stream) = stream();
        let stream = std::sync::Arc::new(stream);
        let since = stream.visible();
        let waiter = {
            let stream = stream.clone();
            tokio::spawn(async move {
                stream.wait(since, Duration::from_secs(30), |t| *t == Topic::Room(7)).await
            })
        };
        let mut waiter = waiter;
        stream.allocate().unwrap().publish([Topic::Room(1)]);
        // (A negative needs a wait: a waiter woken wrongly returns at once.)
        let early = tokio::time::timeout(Duration::from_millis(200), &mut waiter).await;
        assert!(early.is_err(), "another room's change does not wake it");
        stream.allocate().unwrap().publish([Topic::Room(7)]);
        let woke_at = tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap();
        assert_eq!(woke_at, since + 2);
        // Nothing of interest: returns at the timeout.
        let at = stream.wait(stream.visible(), Duration::from_millis(10), |_| false).await;
        assert_eq!(at, stream.visible());
    }
}
