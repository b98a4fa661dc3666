//! Migrations from older schema versions, run at start in order. Each one
//! may be interrupted and run again: it only writes what it derives.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{Batch, Db, Result, SEP, decode_u64, maps};

/// Brings a database at schema `from` up to [`super::SCHEMA_VERSION`];
/// `false` when no migration path exists.
pub(super) fn run(db: &Db, from: u64) -> Result<bool> {
    if from < 1 {
        return Ok(false);
    }
    if from < 2 {
        tracing::info!(
            "migrating the database to schema 2: timelines by sending time, relations by type, event status"
        );
        index_timestamps(db)?;
        index_relations(db)?;
        event_status(db)?;
    }
    if from < 3 {
        tracing::info!("migrating the database to schema 3: the servers in each room");
        index_room_servers(db)?;
    }
    if from < 4 {
        tracing::info!("migrating the database to schema 4: each room's last activity for room lists");
        index_room_bumps(db)?;
    }
    Ok(true)
}

/// Runs `each` over every row of `map` in chunks of 1,000, writing what it
/// adds to the batch after each chunk.
fn in_chunks(
    db: &Db,
    map: &super::maps::MapDef,
    mut each: impl FnMut(&[u8], &[u8], &mut Batch) -> Result<()>,
) -> Result<()> {
    let mut from: Option<Vec<u8>> = None;
    loop {
        let rows = db.scan_range(map, b"", from.as_deref(), false, 1_000)?;
        let Some((last, _)) = rows.last() else { return Ok(()) };
        let mut next = last.clone();
        next.push(0);
        let mut batch = Batch::new();
        for (k, v) in &rows {
            each(k, v, &mut batch)?;
        }
        db.write(batch)?;
        from = Some(next);
    }
}

/// Schema 2: `room_timestamps`, from `timeline` and each event's
/// `origin_server_ts`.
fn index_timestamps(db: &Db) -> Result<()> {
    #[derive(Deserialize)]
    struct Sent {
        origin_server_ts: u64,
    }
    in_chunks(db, &maps::TIMELINE, |k, v, batch| {
        let Some(sent) = db.get_json::<Sent>(&maps::PDUS, v)? else { return Ok(()) };
        let (room, position) = (decode_u64(&k[..8])?, decode_u64(&k[8..])?);
        batch.put(
            &maps::ROOM_TIMESTAMPS,
            [room.to_be_bytes(), sent.origin_server_ts.to_be_bytes(), position.to_be_bytes()].concat(),
            v.to_vec(),
        );
        Ok(())
    })
}

/// Schema 2: `relation_types`, thread reply counts in `threads` (and
/// `thread_activity` again), `thread_participants`; relations of redacted
/// events dropped.
fn index_relations(db: &Db) -> Result<()> {
    #[derive(Deserialize)]
    struct Relation {
        child: u64,
        rel_type: String,
        sender: String,
    }
    #[derive(Deserialize)]
    struct Meta {
        room: u64,
        #[serde(default)]
        redacted_by: Option<u64>,
    }
    for map in [&maps::THREADS, &maps::THREAD_ACTIVITY] {
        let mut batch = Batch::new();
        db.delete_prefix(&mut batch, map, b"")?;
        db.write(batch)?;
    }
    // Thread root → (latest reply position, replies, repliers).
    let mut threads: BTreeMap<u64, (u64, u64, BTreeSet<String>)> = BTreeMap::new();
    in_chunks(db, &maps::RELATIONS, |k, v, batch| {
        let relation: Relation = super::decode(&maps::RELATIONS, v)?;
        let child = db.get_json::<Meta>(&maps::EVENT_META, &relation.child.to_be_bytes())?;
        if child.is_none_or(|m| m.redacted_by.is_some()) {
            batch.delete(&maps::RELATIONS, k.to_vec());
            return Ok(());
        }
        let (parent, position) = (decode_u64(&k[..8])?, decode_u64(&k[8..])?);
        let mut typed = parent.to_be_bytes().to_vec();
        typed.extend_from_slice(relation.rel_type.as_bytes());
        typed.push(SEP);
        typed.extend_from_slice(&position.to_be_bytes());
        batch.put(&maps::RELATION_TYPES, typed, relation.child.to_be_bytes());
        if relation.rel_type == "m.thread" {
            let thread = threads.entry(parent).or_default();
            thread.0 = thread.0.max(position);
            thread.1 += 1;
            thread.2.insert(relation.sender);
        }
        Ok(())
    })?;
    let mut batch = Batch::new();
    for (root, (latest, count, repliers)) in threads {
        let Some(meta) = db.get_json::<Meta>(&maps::EVENT_META, &root.to_be_bytes())? else { continue };
        let room = meta.room.to_be_bytes();
        batch.put(
            &maps::THREADS,
            [room, root.to_be_bytes()].concat(),
            [latest.to_be_bytes(), count.to_be_bytes()].concat(),
        );
        batch.put(&maps::THREAD_ACTIVITY, [room, latest.to_be_bytes()].concat(), root.to_be_bytes());
        for user in repliers {
            batch.put(
                &maps::THREAD_PARTICIPANTS,
                [&root.to_be_bytes()[..], user.as_bytes()].concat(),
                Vec::new(),
            );
        }
    }
    db.write(batch)
}

/// Schema 2: `event_meta` says `status` instead of the `rejected` and
/// `soft_failed` flags.
fn event_status(db: &Db) -> Result<()> {
    in_chunks(db, &maps::EVENT_META, |k, v, batch| {
        let mut meta: serde_json::Map<String, serde_json::Value> = super::decode(&maps::EVENT_META, v)?;
        let flag =
            |meta: &mut serde_json::Map<_, _>, name: &str| meta.remove(name).is_some_and(|v| v == true);
        let (rejected, soft_failed) = (flag(&mut meta, "rejected"), flag(&mut meta, "soft_failed"));
        if rejected || soft_failed {
            meta.insert("status".into(), if rejected { "rejected" } else { "soft_failed" }.into());
            batch.put_json(&maps::EVENT_META, k.to_vec(), &meta);
        }
        Ok(())
    })
}

/// Schema 3: `room_servers`, from the joined members in `room_members`.
/// Schema 4: `room_bump`, each room's newest timeline event of a type that
/// bumps it, found by reading its timeline back from the end.
fn index_room_bumps(db: &Db) -> Result<()> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    const CHUNK: usize = 100;
    in_chunks(db, &maps::ROOMS, |room, _, batch| {
        let mut from: Option<Vec<u8>> = None;
        loop {
            let rows = db.scan_range(&maps::TIMELINE, room, from.as_deref(), true, CHUNK)?;
            for (key, event) in &rows {
                let Some(typed) = db.get_json::<Typed>(&maps::PDUS, event)? else { continue };
                if maps::BUMP_TYPES.contains(&typed.kind.as_str()) {
                    batch.put(&maps::ROOM_BUMP, room.to_vec(), key[8..].to_vec());
                    return Ok(());
                }
            }
            match rows.last() {
                Some((key, _)) if rows.len() == CHUNK && decode_u64(&key[8..])? > 0 => {
                    from = Some([&key[..8], &(decode_u64(&key[8..])? - 1).to_be_bytes()].concat());
                }
                _ => return Ok(()),
            }
        }
    })
}

fn index_room_servers(db: &Db) -> Result<()> {
    in_chunks(db, &maps::ROOM_MEMBERS, |k, v, batch| {
        if v != b"join" || k.len() < 8 {
            return Ok(());
        }
        let user = String::from_utf8_lossy(&k[8..]).into_owned();
        if let Some((_, server)) = user.split_once(':') {
            batch.put(
                &maps::ROOM_SERVERS,
                [&k[..8], server.as_bytes(), &[SEP], user.as_bytes()].concat(),
                Vec::new(),
            );
        }
        Ok(())
    })
}
