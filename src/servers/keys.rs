//! Other servers' signing keys: fetched from the server itself, else
//! through the configured notaries; checked (self-signed, and signed by the
//! notary that relayed them); kept in RocksDB with their validity; and
//! served again as a notary. This server's own key document is built here too.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
    api::federation::discovery::{
        ServerSigningKeys, get_remote_server_keys_batch::v2 as batch, get_server_keys::v2 as server_keys,
    },
    serde::{Base64, Raw},
    signatures::PublicKeySet,
};
use serde::{Deserialize, Serialize};

use super::client::Client;
use crate::{
    Error, Result, config,
    keys::ServerKeys,
    storage::{Db, maps::SERVER_KEYS},
    util::now_ms,
};

/// How long this server's key document says it is valid (Synapse's default).
const OWN_VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// A server whose keys could not be had is not asked again within this time.
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// Room versions with enforced key validity use at most this far ahead.
const MAX_VALIDITY_AHEAD: u64 = 7 * 24 * 3600 * 1000;

/// One server's keys as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    /// Key ID → key and until when it may be used.
    keys: BTreeMap<String, StoredKey>,
    /// The last document the server signed, as received, for the notary.
    document: String,
    /// Key ID → the last document that listed it as current: a key the
    /// server no longer lists is still served by the notary.
    #[serde(default)]
    documents: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    /// Unpadded standard base64.
    key: String,
    /// `valid_until_ts` of a current key, `expired_ts` of an old one.
    until: u64,
}

pub struct KeyStore {
    db: Db,
    server_name: OwnedServerName,
    signing: Arc<ServerKeys>,
    notaries: Vec<config::TrustedKeyServer>,
    /// When each server was last asked, so a flood of unknown key IDs
    /// cannot make this server ask again and again.
    failed: Mutex<HashMap<OwnedServerName, Instant>>,
    /// One fetch per server at a time.
    fetching: tokio::sync::Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyStore {
    pub fn new(
        db: Db,
        server_name: OwnedServerName,
        signing: Arc<ServerKeys>,
        config: &config::Federation,
    ) -> Self {
        Self {
            db,
            server_name,
            signing,
            notaries: config.trusted_key_servers.clone(),
            failed: Mutex::default(),
            fetching: tokio::sync::Mutex::default(),
        }
    }

    /// This server's key document, signed: the current key, the old ones,
    /// valid for a day.
    pub fn own_document(&self) -> Result<CanonicalJsonObject> {
        let mut verify_keys = CanonicalJsonObject::new();
        verify_keys.insert(
            self.signing.key_id.to_string(),
            object([("key", self.signing.public_key().into())]).into(),
        );
        let mut old_verify_keys = CanonicalJsonObject::new();
        for (key_id, old) in &self.signing.old {
            old_verify_keys.insert(
                key_id.to_string(),
                object([("key", old.key.clone().into()), ("expired_ts", int(old.expired_ts))]).into(),
            );
        }
        let valid_until = now_ms() + OWN_VALIDITY.as_millis() as u64;
        let mut document = object([
            ("server_name", self.server_name.as_str().into()),
            ("verify_keys", verify_keys.into()),
            ("old_verify_keys", old_verify_keys.into()),
            ("valid_until_ts", int(valid_until)),
        ]);
        self.signing.sign(self.server_name.as_str(), &mut document)?;
        Ok(document)
    }

    /// The keys of `server` valid at `valid_at` (ms; 0 for room versions
    /// that do not enforce validity), fetching when any of `wanted` is
    /// missing or expired. Key IDs still unknown after that are left out.
    pub async fn keys_for(
        &self,
        client: &Client,
        server: &ServerName,
        wanted: &[&str],
        valid_at: u64,
    ) -> Result<PublicKeySet> {
        if server == self.server_name {
            return Ok(self.own_keys(valid_at));
        }
        let have = self.stored_keys(server, valid_at)?;
        if wanted.iter().all(|id| have.contains_key(*id)) {
            return Ok(have);
        }
        let lock = self.fetching.lock().await.entry(server.to_owned()).or_default().clone();
        let _one_at_a_time = lock.lock().await;
        // Another request may have fetched them meanwhile.
        let have = self.stored_keys(server, valid_at)?;
        if wanted.iter().all(|id| have.contains_key(*id)) {
            return Ok(have);
        }
        if self.failed_recently(server) {
            return Ok(have);
        }
        self.fetch(client, server, wanted, valid_at).await;
        self.fetching.lock().await.remove(server);
        let have = self.stored_keys(server, valid_at)?;
        self.note_fetch(server, wanted.iter().all(|id| have.contains_key(*id)));
        Ok(have)
    }

    /// Asks `server` itself, then each notary, until the wanted keys are in.
    async fn fetch(&self, client: &Client, server: &ServerName, wanted: &[&str], valid_at: u64) {
        match self.fetch_direct(client, server).await {
            Ok(()) => {}
            Err(why) => tracing::info!("cannot fetch the keys of {server} from it: {why}"),
        }
        for notary in &self.notaries {
            let have = self.stored_keys(server, valid_at).unwrap_or_default();
            if wanted.iter().all(|id| have.contains_key(*id)) {
                return;
            }
            if let Err(why) = self.fetch_through(client, notary, server).await {
                tracing::info!("cannot fetch the keys of {server} through {}: {why}", notary.server_name);
            }
        }
    }

    /// `GET /_matrix/key/v2/server` from the server itself.
    async fn fetch_direct(&self, client: &Client, server: &ServerName) -> Result<(), String> {
        let response =
            client.send_unsigned(server, server_keys::Request::new()).await.map_err(|e| e.to_string())?;
        self.accept(server, &response.server_key, None)
    }

    /// `POST /_matrix/key/v2/query` to a notary.
    async fn fetch_through(
        &self,
        client: &Client,
        notary: &config::TrustedKeyServer,
        server: &ServerName,
    ) -> Result<(), String> {
        let notary_keys = if notary.verify_keys.is_empty() {
            // Unpinned: the notary's own keys, fetched from it over TLS.
            self.fetch_direct(client, &notary.server_name).await?;
            self.stored_keys(&notary.server_name, 0).map_err(|e| e.to_string())?
        } else {
            notary
                .verify_keys
                .iter()
                .filter_map(|(id, key)| Some((id.clone(), Base64::parse(key).ok()?)))
                .collect()
        };
        // No key IDs: every key the notary has for the server.
        let request = batch::Request::new(BTreeMap::from([(server.to_owned(), BTreeMap::new())]));
        let response = client.send_unsigned(&notary.server_name, request).await.map_err(|e| e.to_string())?;
        let mut accepted = false;
        for document in response.server_keys {
            if self.accept(server, &document, Some((&notary.server_name, &notary_keys))).is_ok() {
                accepted = true;
            }
        }
        if accepted { Ok(()) } else { Err("no valid key document in the answer".into()) }
    }

    /// Checks a key document for `server` (signed by itself with a key it
    /// lists, and by `notary` when relayed) and stores its keys.
    fn accept(
        &self,
        server: &ServerName,
        document: &Raw<ServerSigningKeys>,
        notary: Option<(&OwnedServerName, &PublicKeySet)>,
    ) -> Result<(), String> {
        let object: CanonicalJsonObject =
            serde_json::from_str(document.json().get()).map_err(|e| format!("not canonical JSON: {e}"))?;
        let parsed: ServerSigningKeys =
            document.deserialize().map_err(|e| format!("not a key document: {e}"))?;
        if parsed.server_name != server {
            return Err(format!("a key document for {} instead", parsed.server_name));
        }
        let own: PublicKeySet =
            parsed.verify_keys.iter().map(|(id, key)| (id.to_string(), key.key.clone())).collect();
        verify_signed_by(&object, server, &own)?;
        if let Some((notary, keys)) = notary {
            verify_signed_by(&object, notary, keys)?;
        }
        let valid_until = parsed.valid_until_ts.get().into();
        let mut stored = self.stored(server).map_err(|e| e.to_string())?.unwrap_or_else(|| Stored {
            keys: BTreeMap::new(),
            document: String::new(),
            documents: BTreeMap::new(),
        });
        for (id, key) in &parsed.verify_keys {
            let entry =
                stored.keys.entry(id.to_string()).or_insert(StoredKey { key: key.key.encode(), until: 0 });
            entry.key = key.key.encode();
            entry.until = entry.until.max(valid_until);
        }
        for (id, old) in &parsed.old_verify_keys {
            // An old key never extends a validity the server gave it before.
            stored
                .keys
                .entry(id.to_string())
                .or_insert(StoredKey { key: old.key.encode(), until: old.expired_ts.get().into() });
        }
        // Keep the newest document, and the newest listing each key, for
        // serving as a notary.
        let newer = |previous: Option<&String>| {
            previous.and_then(|p| document_until(p)).is_none_or(|until| until <= valid_until)
        };
        let json = document.json().get();
        if newer(Some(&stored.document)) {
            stored.document = json.to_owned();
        }
        for id in parsed.verify_keys.keys() {
            if newer(stored.documents.get(id.as_str())) {
                stored.documents.insert(id.to_string(), json.to_owned());
            }
        }
        self.db.put_json(&SERVER_KEYS, server.as_bytes(), &stored).map_err(|e| e.to_string())
    }

    /// Key documents to serve as a notary for `server`, signed by this
    /// server too: for each of `key_ids` the last document that listed it
    /// (the newest for an unknown ID), or for none all of them. Fetched
    /// again first when an asked-for key (or, for none, the newest
    /// document) is unknown or not valid until `minimum_valid_until`
    /// (when 0: until now). An unreachable server's last documents
    /// are still served, so old signatures stay checkable.
    pub async fn notarise(
        &self,
        client: &Client,
        server: &ServerName,
        key_ids: &[String],
        minimum_valid_until: u64,
    ) -> Result<Vec<CanonicalJsonObject>> {
        if server == self.server_name {
            return Ok(vec![self.own_document()?]);
        }
        // Good enough: valid until the asked minimum (or, with none, now).
        let threshold = if minimum_valid_until > 0 { minimum_valid_until } else { now_ms() };
        let stale = |stored: &Option<Stored>| match stored {
            None => true,
            Some(stored) if key_ids.is_empty() => {
                document_until(&stored.document).is_none_or(|until| until < threshold)
            }
            Some(stored) => key_ids.iter().any(|id| {
                stored.documents.get(id).and_then(|d| document_until(d)).is_none_or(|until| until < threshold)
            }),
        };
        if stale(&self.stored(server)?) {
            let lock = self.fetching.lock().await.entry(server.to_owned()).or_default().clone();
            let _one_at_a_time = lock.lock().await;
            // (Not held back by a recent failure, unlike `keys_for`: the
            // asker wants what the server says now, one fetch at a time.)
            if stale(&self.stored(server)?) {
                let fetched = self.fetch_direct(client, server).await;
                if let Err(why) = &fetched {
                    tracing::info!("notary: cannot fetch the keys of {server}: {why}");
                }
                self.note_fetch(server, fetched.is_ok());
            }
        }
        let Some(stored) = self.stored(server)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for json in chosen_documents(&stored, key_ids) {
            let mut document: CanonicalJsonObject = serde_json::from_str(json).map_err(Error::internal)?;
            self.signing.sign(self.server_name.as_str(), &mut document)?;
            out.push(document);
        }
        Ok(out)
    }

    /// Whether fetching `server`'s keys failed within `REFETCH_AFTER`.
    fn failed_recently(&self, server: &ServerName) -> bool {
        self.failed
            .lock()
            .expect("key fetch failures")
            .get(server)
            .is_some_and(|at| at.elapsed() < REFETCH_AFTER)
    }

    /// Remembers how fetching `server`'s keys went.
    fn note_fetch(&self, server: &ServerName, ok: bool) {
        let mut failed = self.failed.lock().expect("key fetch failures");
        match ok {
            true => failed.remove(server),
            false => failed.insert(server.to_owned(), Instant::now()),
        };
    }

    fn stored(&self, server: &ServerName) -> Result<Option<Stored>> {
        Ok(self.db.get_json(&SERVER_KEYS, server.as_bytes())?)
    }

    fn stored_keys(&self, server: &ServerName, valid_at: u64) -> Result<PublicKeySet> {
        Ok(self
            .stored(server)?
            .map(|stored| {
                stored
                    .keys
                    .into_iter()
                    .filter(|(_, key)| usable(key.until, valid_at))
                    .filter_map(|(id, key)| Some((id, Base64::parse(&key.key).ok()?)))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn own_keys(&self, valid_at: u64) -> PublicKeySet {
        let mut keys = PublicKeySet::new();
        if let Ok(current) = Base64::parse(self.signing.public_key()) {
            keys.insert(self.signing.key_id.to_string(), current);
        }
        for (id, old) in &self.signing.old {
            if usable(old.expired_ts, valid_at)
                && let Ok(key) = Base64::parse(&old.key)
            {
                keys.insert(id.to_string(), key);
            }
        }
        keys
    }
}

/// Whether a key valid until `until` may check a signature made at
/// `valid_at`; a validity further than 7 days ahead counts as 7 days
/// (spec: room versions with enforced key validity).
fn usable(until: u64, valid_at: u64) -> bool {
    valid_at == 0 || until.min(now_ms() + MAX_VALIDITY_AHEAD) >= valid_at
}

/// Checks the signature of `signer` on `object` with `keys`, ignoring
/// other servers' signatures.
pub fn verify_signed_by(
    object: &CanonicalJsonObject,
    signer: &ServerName,
    keys: &PublicKeySet,
) -> Result<(), String> {
    let mut only_signer = object.clone();
    let Some(CanonicalJsonValue::Object(signatures)) = only_signer.get_mut("signatures") else {
        return Err("no signatures".into());
    };
    signatures.retain(|name, _| name == signer.as_str());
    if signatures.is_empty() {
        return Err(format!("not signed by {signer}"));
    }
    let map = BTreeMap::from([(signer.to_string(), keys.clone())]);
    ruma::signatures::verify_json(&map, &only_signer).map_err(|e| format!("signature of {signer}: {e}"))?;
    // verify_json skips signatures by keys it is not given: one it knows must be there.
    let signed_with_known = match &only_signer["signatures"] {
        CanonicalJsonValue::Object(s) => match s.get(signer.as_str()) {
            Some(CanonicalJsonValue::Object(by_key)) => by_key.keys().any(|id| keys.contains_key(id)),
            _ => false,
        },
        _ => false,
    };
    if signed_with_known { Ok(()) } else { Err(format!("not signed by a known key of {signer}")) }
}

/// The stored documents that answer for `key_ids` (all for none), each once.
fn chosen_documents<'a>(stored: &'a Stored, key_ids: &[String]) -> Vec<&'a String> {
    let mut chosen: Vec<&String> = match key_ids.is_empty() {
        true => stored.documents.values().collect(),
        false => key_ids.iter().map(|id| stored.documents.get(id).unwrap_or(&stored.document)).collect(),
    };
    if chosen.is_empty() {
        chosen.push(&stored.document);
    }
    chosen.sort();
    chosen.dedup();
    chosen
}

fn document_until(document: &str) -> Option<u64> {
    serde_json::from_str::<ServerSigningKeys>(document).ok().map(|d| d.valid_until_ts.get().into())
}

fn object<const N: usize>(entries: [(&str, CanonicalJsonValue); N]) -> CanonicalJsonObject {
    entries.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn int(value: u64) -> CanonicalJsonValue {
    CanonicalJsonValue::Integer(ruma::Int::try_from(value).unwrap_or(ruma::Int::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(db: &Db) -> KeyStore {
        let signing = Arc::new(ServerKeys::load_or_generate(db).unwrap());
        KeyStore::new(
            db.clone(),
            "here.test".try_into().unwrap(),
            signing,
            &crate::config::Config::defaults().federation,
        )
    }

    /// The document lists the current key and, after a rotation, the old
    /// one with its expiry, and is signed by the current key.
    #[test]
    fn own_document_lists_old_keys_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 8, false).unwrap();
        let before = ServerKeys::load_or_generate(&db).unwrap();
        ServerKeys::rotate(&db).unwrap();
        let keys = store(&db);
        let document = keys.own_document().unwrap();
        let value = serde_json::to_value(&document).unwrap();
        assert_eq!(value["old_verify_keys"][before.key_id.as_str()]["key"], before.public_key());
        assert!(value["old_verify_keys"][before.key_id.as_str()]["expired_ts"].as_u64().unwrap() <= now_ms());
        let current = &keys.signing;
        assert_eq!(value["verify_keys"][current.key_id.as_str()]["key"], current.public_key());
        let set =
            PublicKeySet::from([(current.key_id.to_string(), Base64::parse(current.public_key()).unwrap())]);
        verify_signed_by(&document, "here.test".try_into().unwrap(), &set).unwrap();
        // The old key checks what it signed before its expiry, not after.
        assert!(keys.own_keys(1).contains_key(before.key_id.as_str()));
        assert!(!keys.own_keys(now_ms() + 60_000).contains_key(before.key_id.as_str()));
    }

    /// A relayed document counts only with the signatures it needs.
    #[test]
    fn documents_need_their_servers_signature() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 8, false).unwrap();
        let keys = store(&db);
        let document = keys.own_document().unwrap();
        let raw: Raw<ServerSigningKeys> = Raw::from_json(
            serde_json::value::RawValue::from_string(serde_json::to_string(&document).unwrap()).unwrap(),
        );
        let here: &ServerName = "here.test".try_into().unwrap();
        let other = store(&Db::open(tempfile::tempdir().unwrap().path(), 8, false).unwrap());
        assert!(other.accept("elsewhere.test".try_into().unwrap(), &raw, None).is_err(), "wrong server name");
        let notary: OwnedServerName = "notary.test".try_into().unwrap();
        assert!(
            other.accept(here, &raw, Some((&notary, &PublicKeySet::new()))).is_err(),
            "no notary signature"
        );
        let mut tampered = document.clone();
        tampered.insert("valid_until_ts".into(), int(u64::from(u32::MAX) * 1000));
        let tampered: Raw<ServerSigningKeys> = Raw::from_json(
            serde_json::value::RawValue::from_string(serde_json::to_string(&tampered).unwrap()).unwrap(),
        );
        assert!(other.accept(here, &tampered, None).is_err(), "changed after signing");
        other.accept(here, &raw, None).unwrap();
        let stored = other.stored_keys(here, now_ms()).unwrap();
        assert_eq!(stored[keys.signing.key_id.as_str()].encode(), keys.signing.public_key());
    }

    /// A key the server stopped listing is still served for its ID, from
    /// the last document that listed it.
    #[test]
    fn the_notary_keeps_a_document_for_each_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 8, false).unwrap();
        let raw = |document: CanonicalJsonObject| -> Raw<ServerSigningKeys> {
            Raw::from_json(
                serde_json::value::RawValue::from_string(serde_json::to_string(&document).unwrap()).unwrap(),
            )
        };
        let first = store(&db);
        let first_id = first.signing.key_id.to_string();
        let before = raw(first.own_document().unwrap());
        ServerKeys::rotate(&db).unwrap();
        let second = store(&db);
        let second_id = second.signing.key_id.to_string();
        let after = raw(second.own_document().unwrap());
        let notary = store(&Db::open(tempfile::tempdir().unwrap().path(), 8, false).unwrap());
        let here: &ServerName = "here.test".try_into().unwrap();
        notary.accept(here, &before, None).unwrap();
        notary.accept(here, &after, None).unwrap();
        let stored = notary.stored(here).unwrap().unwrap();
        let lists = |json: &String, id: &str| {
            serde_json::from_str::<serde_json::Value>(json).unwrap()["verify_keys"][id].is_object()
        };
        let for_first = chosen_documents(&stored, std::slice::from_ref(&first_id));
        assert!(for_first.len() == 1 && lists(for_first[0], &first_id));
        let for_second = chosen_documents(&stored, std::slice::from_ref(&second_id));
        assert!(for_second.len() == 1 && lists(for_second[0], &second_id));
        assert_eq!(chosen_documents(&stored, &[]).len(), 2);
        assert_eq!(chosen_documents(&stored, &["ed25519:unknown".into()]), [&stored.document], "the newest");
    }
}
