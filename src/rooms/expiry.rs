//! Self-destructing messages (MSC2228; experimental, off unless
//! `experimental.ephemeral_messages`, as Synapse's
//! `enable_ephemeral_messages`): a message whose content names a time in
//! `org.matrix.self_destruct_after` is pruned at that time, by the room
//! version's redaction algorithm, with no redaction event. Local and
//! remote messages alike; the expiry is written with the message.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use ruma::canonical_json::redact;

use super::{Rooms, pdu::Pdu};
use crate::{
    Error, Result,
    storage::{Batch, decode_u64, maps},
    util,
};

/// The content field that asks for it.
pub const SELF_DESTRUCT_AFTER: &str = "org.matrix.self_destruct_after";

#[derive(Default)]
pub struct Expiry {
    enabled: AtomicBool,
    /// Wakes the expiring task when a message with an expiry is written.
    wake: tokio::sync::Notify,
}

impl Rooms {
    pub fn enable_ephemeral_messages(&self) {
        self.expiry.enabled.store(true, Ordering::Relaxed);
    }

    /// In an accepted message's batch: its expiry, if it asks for one.
    /// True when it did (the caller wakes the task once it is written).
    pub(super) fn note_expiry(&self, batch: &mut Batch, pdu: &Pdu, event_short: u64) -> bool {
        if !self.expiry.enabled.load(Ordering::Relaxed) || pdu.state_key.is_some() {
            return false;
        }
        let Some(at) = pdu.content_value()[SELF_DESTRUCT_AFTER].as_u64() else { return false };
        batch.put(&maps::EVENT_EXPIRY, [at.to_be_bytes(), event_short.to_be_bytes()].concat(), Vec::new());
        true
    }

    pub(super) fn expiry_noted(&self) {
        self.expiry.wake.notify_one();
    }

    /// Prunes every message due by `now`; the time of the next expiry.
    pub fn expire_due(&self, now: u64) -> Result<Option<u64>> {
        loop {
            let Some((key, _)) = self.db.scan_range(&maps::EVENT_EXPIRY, b"", None, false, 1)?.pop() else {
                return Ok(None);
            };
            let (at, short) = (decode_u64(&key[..8])?, decode_u64(&key[8..])?);
            if at > now {
                return Ok(Some(at));
            }
            let mut batch = Batch::new();
            batch.delete(&maps::EVENT_EXPIRY, key);
            if let (Some(meta), Some(json)) = (self.event_meta(short)?, self.pdu_json(short)?)
                && let Ok(record) = self.room_by_short(meta.room)
            {
                let rules = record.rules()?;
                let pruned = redact(json, &rules.redaction, None).map_err(Error::internal)?;
                batch.put_json(&maps::PDUS, short.to_be_bytes(), &pruned);
            }
            self.db.write(batch)?;
        }
    }

    /// Runs for the server's life: prunes messages as they fall due.
    pub async fn expire_messages(&self) {
        loop {
            let next = match self.expire_due(util::now_ms()) {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!("expiring messages: {e}");
                    Some(util::now_ms() + 60_000)
                }
            };
            let wait = next.map(|at| Duration::from_millis(at.saturating_sub(util::now_ms())));
            match wait {
                Some(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.expiry.wake.notified() => {}
                    }
                }
                None => self.expiry.wake.notified().await,
            }
        }
    }
}
