//! Other homeservers, as peers on the network: discovery and the signed
//! HTTPS client (`client`, `discovery`), their signing keys (`keys`), and the
//! check of the X-Matrix signature on every inbound request (`auth`). What
//! is said to them about rooms is `federation`'s.

pub mod auth;
pub mod client;
pub mod discovery;
pub mod keys;
pub mod outbox;

use std::sync::Arc;

use ruma::{OwnedServerName, ServerName, signatures::PublicKeyMap};

use crate::{Result, config, keys::ServerKeys, storage::Db};

pub struct Servers {
    pub server_name: OwnedServerName,
    pub config: config::Federation,
    pub client: client::Client,
    pub keys: keys::KeyStore,
    pub outbox: outbox::Outbox,
    /// Rooms (short ID) whose other servers lately had nothing more to
    /// backfill, with the backward extremities then (`federation::backfill`).
    pub backfill_exhausted:
        std::sync::Mutex<std::collections::HashMap<u64, (Vec<ruma::OwnedEventId>, std::time::Instant)>>,
}

impl Servers {
    pub fn new(
        db: Db,
        server_name: OwnedServerName,
        config: &config::Federation,
        signing: Arc<ServerKeys>,
    ) -> Result<Self> {
        Ok(Self {
            client: client::Client::new(server_name.clone(), config, signing.clone())?,
            keys: keys::KeyStore::new(db.clone(), server_name.clone(), signing, config),
            outbox: outbox::Outbox::open(db)?,
            backfill_exhausted: Default::default(),
            server_name,
            config: config.clone(),
        })
    }

    /// The public keys of `servers` valid at `valid_at`, as the signature
    /// checks take them; fetched where `wanted` key IDs are missing.
    pub async fn public_keys(
        &self,
        servers: &[(&ServerName, Vec<&str>)],
        valid_at: u64,
    ) -> Result<PublicKeyMap> {
        let mut map = PublicKeyMap::new();
        for (server, wanted) in servers {
            let keys = self.keys.keys_for(&self.client, server, wanted, valid_at).await?;
            map.insert(server.to_string(), keys);
        }
        Ok(map)
    }
}
