//! The server's ed25519 signing key: generated on first start, then loaded.

use ruma::{OwnedServerSigningKeyId, ServerSigningKeyId, signatures::Ed25519KeyPair};

use crate::storage::{Batch, Db, maps::GLOBAL};

const VERSION_KEY: &[u8] = b"signing_key.version";
const PKCS8_KEY: &[u8] = b"signing_key.pkcs8";

pub struct ServerKeys {
    pub keypair: Ed25519KeyPair,
    pub key_id: OwnedServerSigningKeyId,
}

impl ServerKeys {
    /// Loads the stored key, or generates and stores one on first start.
    pub fn load_or_generate(db: &Db) -> crate::Result<Self> {
        let (version, der) = match (db.get(&GLOBAL, VERSION_KEY)?, db.get(&GLOBAL, PKCS8_KEY)?) {
            (Some(version), Some(der)) => (String::from_utf8(version).map_err(crate::Error::internal)?, der),
            _ => {
                let der = Ed25519KeyPair::generate().to_vec();
                let version = format!("a_{}", crate::util::random_string(4));
                let mut batch = Batch::new();
                batch.put(&GLOBAL, VERSION_KEY, version.as_bytes());
                batch.put(&GLOBAL, PKCS8_KEY, der.clone());
                db.write(batch)?;
                (version, der)
            }
        };
        let keypair = Ed25519KeyPair::from_der(&der, version.clone())
            .map_err(|e| crate::Error::internal(format!("stored signing key is invalid: {e}")))?;
        let key_id = ServerSigningKeyId::parse(format!("ed25519:{version}"))
            .map_err(|e| crate::Error::internal(format!("signing key version {version}: {e}")))?;
        Ok(Self { keypair, key_id })
    }
}
