//! The server's ed25519 signing key: generated on first start, then loaded;
//! `hearth signing-key rotate` replaces it and keeps the old public key, so
//! other servers can still check what it signed.

use std::collections::BTreeMap;

use ruma::{OwnedServerSigningKeyId, ServerSigningKeyId, serde::Base64, signatures::Ed25519KeyPair};
use serde::{Deserialize, Serialize};

use crate::storage::{Batch, Db, maps::GLOBAL};

const VERSION_KEY: &[u8] = b"signing_key.version";
const PKCS8_KEY: &[u8] = b"signing_key.pkcs8";
const OLD_KEYS: &[u8] = b"signing_key.old";

pub struct ServerKeys {
    pub keypair: Ed25519KeyPair,
    pub key_id: OwnedServerSigningKeyId,
    /// Keys this server signed with before, by key ID.
    pub old: BTreeMap<OwnedServerSigningKeyId, OldKey>,
}

/// A signing key no longer in use: its public half and when it stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OldKey {
    /// Unpadded standard base64.
    pub key: String,
    pub expired_ts: u64,
}

impl ServerKeys {
    /// Loads the stored key, or generates and stores one on first start.
    pub fn load_or_generate(db: &Db) -> crate::Result<Self> {
        let (version, der) = match (db.get(&GLOBAL, VERSION_KEY)?, db.get(&GLOBAL, PKCS8_KEY)?) {
            (Some(version), Some(der)) => (String::from_utf8(version).map_err(crate::Error::internal)?, der),
            _ => {
                let mut batch = Batch::new();
                let (version, der) = new_key(&mut batch);
                db.write(batch)?;
                (version, der)
            }
        };
        let keypair = Ed25519KeyPair::from_der(&der, version.clone())
            .map_err(|e| crate::Error::internal(format!("stored signing key is invalid: {e}")))?;
        let key_id = ServerSigningKeyId::parse(format!("ed25519:{version}"))
            .map_err(|e| crate::Error::internal(format!("signing key version {version}: {e}")))?;
        let old = db.get_json(&GLOBAL, OLD_KEYS)?.unwrap_or_default();
        Ok(Self { keypair, key_id, old })
    }

    /// Replaces the signing key with a new one (the server must be stopped);
    /// the old public key is kept, expired now. Returns the new key's ID.
    pub fn rotate(db: &Db) -> crate::Result<OwnedServerSigningKeyId> {
        let current = Self::load_or_generate(db)?;
        let retired = OldKey { key: current.public_key(), expired_ts: crate::util::now_ms() };
        let mut old = current.old;
        old.insert(current.key_id, retired);
        let mut batch = Batch::new();
        new_key(&mut batch);
        batch.put_json(&GLOBAL, OLD_KEYS, &old);
        db.write(batch)?;
        Ok(Self::load_or_generate(db)?.key_id)
    }
}

/// Adds a fresh key to `batch`; its version and PKCS#8 document.
fn new_key(batch: &mut Batch) -> (String, Vec<u8>) {
    let der = Ed25519KeyPair::generate().to_vec();
    let version = format!("a_{}", crate::util::random_string(4));
    batch.put(&GLOBAL, VERSION_KEY, version.as_bytes());
    batch.put(&GLOBAL, PKCS8_KEY, der.clone());
    (version, der)
}

/// A public key in the form key responses carry (unpadded standard base64).
fn public_base64(keypair: &Ed25519KeyPair) -> String {
    Base64::<ruma::serde::base64::Standard>::new(keypair.public_key().to_vec()).encode()
}

impl ServerKeys {
    /// The current public key, unpadded standard base64.
    pub fn public_key(&self) -> String {
        public_base64(&self.keypair)
    }

    /// Signs `object` (adds this server's signature beside any others).
    pub fn sign(&self, server_name: &str, object: &mut ruma::CanonicalJsonObject) -> crate::Result<()> {
        ruma::signatures::sign_json(server_name, &self.keypair, object).map_err(crate::Error::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_old_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 8, false).unwrap();
        let first = ServerKeys::load_or_generate(&db).unwrap();
        assert_eq!(
            ServerKeys::load_or_generate(&db).unwrap().key_id,
            first.key_id,
            "loaded, not regenerated"
        );
        let new_id = ServerKeys::rotate(&db).unwrap();
        assert_ne!(new_id, first.key_id);
        let loaded = ServerKeys::load_or_generate(&db).unwrap();
        assert_eq!(loaded.key_id, new_id);
        assert_eq!(loaded.old[&first.key_id].key, first.public_key());
        assert_ne!(loaded.public_key(), first.public_key());
    }
}
