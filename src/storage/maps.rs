//! Every RocksDB column family ("map") Hearth uses, declared once.
//!
//! Each entry names the map, the layout of its keys and the layout of its
//! values. Keys made of several parts join them with [`SEP`] (0xFF, a byte that
//! never occurs in UTF-8), see [`super::key`]. `docs/ARCHITECTURE.md` mirrors
//! this table; keep the two in step.

/// One column family: its name and what its keys and values hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapDef {
    pub name: &'static str,
    pub key: &'static str,
    pub value: &'static str,
}

macro_rules! maps {
    ($($(#[$doc:meta])* $ident:ident = $name:literal { key: $key:literal, value: $value:literal })*) => {
        $($(#[$doc])* pub const $ident: MapDef = MapDef { name: $name, key: $key, value: $value };)*
        /// All maps, in declaration order.
        pub const ALL: &[MapDef] = &[$($ident),*];
    };
}

maps! {
    /// Server-wide singletons.
    GLOBAL = "global" {
        key: "ASCII name: `schema_version`, `signing_key.version`, `signing_key.pkcs8`",
        value: "schema_version: u64 big-endian; signing_key.version: UTF-8 key version; signing_key.pkcs8: ed25519 PKCS#8 DER"
    }
    /// Local accounts, including deactivated ones (a user ID is never reused).
    USERS = "users" {
        key: "user ID (`@local:server`)",
        value: "JSON UserRecord {password_hash (argon2id PHC string or null), admin, deactivated, created_ts}"
    }
    /// Access tokens of every logged-in device.
    TOKENS = "tokens" {
        key: "access token",
        value: "JSON TokenRecord {user_id, device_id}"
    }
    /// Devices of local users.
    DEVICES = "devices" {
        key: "user ID ‖ SEP ‖ device ID",
        value: "JSON DeviceRecord {display_name, access_token, last_seen_ip, last_seen_ts, created_ts}"
    }
    /// Profiles of local users.
    PROFILES = "profiles" {
        key: "user ID",
        value: "JSON object of profile fields (displayname, avatar_url, custom keys)"
    }
    /// Account data, global and per room.
    ACCOUNT_DATA = "account_data" {
        key: "user ID ‖ SEP ‖ room ID (empty for global) ‖ SEP ‖ event type",
        value: "JSON content as the client sent it"
    }
    /// Stored sync filters.
    FILTERS = "filters" {
        key: "user ID ‖ SEP ‖ filter ID (u64 big-endian; clients see it in decimal)",
        value: "JSON filter definition"
    }
}
