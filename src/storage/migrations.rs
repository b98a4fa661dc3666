//! Migrations from older schema versions, run at start in order. Each one
//! may be interrupted and run again: it only writes what it derives.

use serde::Deserialize;

use super::{Batch, Db, Result, decode_u64, maps};

/// Brings a database at schema `from` up to [`super::SCHEMA_VERSION`];
/// `false` when no migration path exists.
pub(super) fn run(db: &Db, from: u64) -> Result<bool> {
    if from < 1 {
        return Ok(false);
    }
    if from < 2 {
        tracing::info!("migrating the database to schema 2: indexing timelines by sending time");
        index_timestamps(db)?;
    }
    Ok(true)
}

/// Schema 2: `room_timestamps`, from `timeline` and each event's
/// `origin_server_ts`.
fn index_timestamps(db: &Db) -> Result<()> {
    #[derive(Deserialize)]
    struct Sent {
        origin_server_ts: u64,
    }
    let mut from: Option<Vec<u8>> = None;
    loop {
        let rows = db.scan_range(&maps::TIMELINE, b"", from.as_deref(), false, 1_000)?;
        let Some((last, _)) = rows.last() else { return Ok(()) };
        let mut next = last.clone();
        next.push(0);
        let mut batch = Batch::new();
        for (k, v) in &rows {
            let Some(sent) = db.get_json::<Sent>(&maps::PDUS, v)? else { continue };
            let (room, position) = (decode_u64(&k[..8])?, decode_u64(&k[8..])?);
            batch.put(
                &maps::ROOM_TIMESTAMPS,
                [room.to_be_bytes(), sent.origin_server_ts.to_be_bytes(), position.to_be_bytes()].concat(),
                v.clone(),
            );
        }
        db.write(batch)?;
        from = Some(next);
    }
}
