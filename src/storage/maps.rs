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

/// The event types that move a room up a room list (`room_bump`), as
/// Synapse has them: what people see as activity.
pub const BUMP_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "org.matrix.msc3381.poll.start",
    "m.beacon_info",
    "org.matrix.msc3672.beacon_info",
];

maps! {
    /// Server-wide singletons.
    GLOBAL = "global" {
        key: "ASCII name: `schema_version`, `signing_key.version`, `signing_key.pkcs8`, `signing_key.old`, `stream_reserved`, `federation.fanned_out`, `federation.device_list_sent.<user ID>`",
        value: "schema_version: u64 big-endian; signing_key.version: UTF-8 key version; signing_key.pkcs8: ed25519 PKCS#8 DER; signing_key.old: JSON {key ID: {key (unpadded base64 public key), expired_ts}} of rotated-out keys; stream_reserved: u64 big-endian, stream positions handed out up to here; federation.fanned_out: u64 big-endian, stream position up to which local events are queued for other servers; federation.device_list_sent.<user>: JSON SentDeviceList {stream_id (of the user's last m.device_list_update sent, the next one's prev_id), devices: {device ID: hash of what was sent}, signing: hash of the cross-signing keys sent}"
    }
    /// Local accounts, including deactivated ones (a user ID is never reused).
    USERS = "users" {
        key: "user ID (`@local:server`)",
        value: "JSON UserRecord {password_hash (argon2id PHC string or null), admin, deactivated, created_ts, guest (only when true)}"
    }
    /// Access tokens of every logged-in device.
    TOKENS = "tokens" {
        key: "access token",
        value: "JSON TokenRecord {user_id, device_id, expires_ms (puppet tokens with an expiry)}"
    }
    /// Tokens server admins made to act as a user ("login as user"), by
    /// the device ID they carry (no device exists).
    PUPPET_TOKENS = "puppet_tokens" {
        key: "user ID ‖ SEP ‖ device ID",
        value: "the access token"
    }
    /// Devices of local users.
    DEVICES = "devices" {
        key: "user ID ‖ SEP ‖ device ID",
        value: "JSON DeviceRecord {display_name, access_token, last_seen_ip, last_seen_ts, last_seen_user_agent (when known), created_ts}"
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
    /// Where each account-data entry last changed, so its old change-log
    /// entry can be dropped.
    ACCOUNT_DATA_POSITIONS = "account_data_positions" {
        key: "as in account_data",
        value: "stream position (u64 big-endian)"
    }
    /// Each user's account-data changes in stream order, for incremental sync.
    ACCOUNT_DATA_CHANGES = "account_data_changes" {
        key: "user ID ‖ SEP ‖ stream position (u64 big-endian)",
        value: "room ID (empty for global) ‖ SEP ‖ event type"
    }
    /// Users whose push rules are not the defaults.
    CUSTOM_PUSH_RULES = "custom_push_rules" {
        key: "user ID",
        value: "empty"
    }
    /// Stored sync filters.
    FILTERS = "filters" {
        key: "user ID ‖ SEP ‖ filter ID (u64 big-endian; clients see it in decimal)",
        value: "JSON filter definition"
    }
    /// Short IDs: u64s standing for long strings, so other keys stay small.
    SHORT_IDS = "short_ids" {
        key: "kind byte (`e` event ID, `r` room ID, `k` state key: `len(type):type` then the state key) ‖ the string",
        value: "u64 big-endian"
    }
    /// The strings behind short IDs.
    SHORT_ID_NAMES = "short_id_names" {
        key: "u64 big-endian",
        value: "kind byte ‖ the string (as in short_ids)"
    }
    /// Every stored PDU, as canonical JSON (the redacted form once redacted).
    PDUS = "pdus" {
        key: "event short ID (u64 big-endian)",
        value: "canonical JSON of the PDU, without event_id (v3+) or unsigned"
    }
    /// What Hearth knows about each stored event.
    EVENT_META = "event_meta" {
        key: "event short ID",
        value: "JSON EventMeta {room, stream (0 unless in the timeline), state_before (snapshot ID; none for outliers and before the create event), state_after, depth, replaces_state, txn, redacted_by, status (timeline when absent; outlier, rejected, soft_failed), current, pruned (only when true: the content was pruned by retention or a history purge)}"
    }
    /// Every event in the order this server accepted it (all rooms).
    STREAM = "stream" {
        key: "stream position (u64 big-endian)",
        value: "event short ID ‖ room short ID"
    }
    /// Each room's events in the order this server accepted them.
    TIMELINE = "timeline" {
        key: "room short ID ‖ stream position (u64 big-endian)",
        value: "event short ID"
    }
    /// Sliding sync connections: what each was sent, per `pos` still in
    /// use (`users::sliding`).
    SLIDING_CONNECTIONS = "sliding_connections" {
        key: "user ID ‖ device ID ‖ conn_id",
        value: "JSON {last_used (ms), next (snapshot number), snapshots: {number: {upto (stream position), configs: [{timeline_limit, required_state: [[type, state key]]}], rooms: {room short ID: {config (index), behind (stream position the client has the room as of, when earlier than upto)}}, remote: {room ID: stream position of the invite sent}}}}"
    }
    /// Each room's last event of one of the [`BUMP_TYPES`]: sliding sync's
    /// `bump_stamp`.
    ROOM_BUMP = "room_bump" {
        key: "room short ID (u64 big-endian)",
        value: "stream position (u64 big-endian)"
    }
    /// Each stored event's auth events as short IDs, for walking auth
    /// chains in state resolution without parsing events.
    AUTH_EDGES = "auth_edges" {
        key: "event short ID",
        value: "the auth events' short IDs, u64 big-endian each, in the event's order"
    }
    /// The DAG's edges, from each prev event to the stored events naming it
    /// (outliers name none): whether an event has children, and the way
    /// forward from a gap.
    EVENT_EDGES = "event_edges" {
        key: "prev event ID ‖ SEP ‖ child event short ID (u64 big-endian)",
        value: "empty"
    }
    /// Events a room's DAG names that are not in it (a gap's missing prev
    /// events): where backfill starts. Removed when the event arrives.
    BACKWARD_EXTREMITIES = "backward_extremities" {
        key: "room short ID ‖ event ID",
        value: "empty"
    }
    /// Redactions and relations that arrived before the event they name:
    /// applied when it arrives (a redacted event's content is never shown).
    WAITING_FOR_TARGETS = "waiting_for_targets" {
        key: "target event ID ‖ SEP ‖ kind (`r` redaction, `l` relation) ‖ waiting event short ID",
        value: "empty"
    }
    /// Self-destructing messages (MSC2228, when enabled): pruned at the
    /// time they name, then their row goes.
    EVENT_EXPIRY = "event_expiry" {
        key: "expiry time in ms ‖ event short ID (u64 big-endian each)",
        value: "empty"
    }
    /// Backfilled history, by depth: before all of the live timeline.
    ROOM_HISTORY = "room_history" {
        key: "room short ID ‖ depth ‖ event short ID (u64 big-endian each)",
        value: "event short ID"
    }
    /// Backfilled events the search index has yet to take (they have no
    /// stream position for it to follow): written with the event, removed
    /// once the index has committed them; a rebuild of the index queues all
    /// of `room_history` again.
    SEARCH_HISTORY = "search_history" {
        key: "event short ID (u64 big-endian)",
        value: "empty"
    }
    /// The timeline by sending time, for `timestamp_to_event`.
    ROOM_TIMESTAMPS = "room_timestamps" {
        key: "room short ID ‖ origin_server_ts ‖ stream position (each u64 big-endian; backfilled history: 0 ‖ event short ID)",
        value: "event short ID"
    }
    /// State snapshots, stored as deltas against a parent.
    STATE_SNAPSHOTS = "state_snapshots" {
        key: "snapshot ID (u64 big-endian)",
        value: "JSON Snapshot {parent, added: [[state key short, event short]], removed: [state key short]}"
    }
    /// Snapshot IDs by content hash, so equal states share one snapshot.
    STATE_SNAPSHOT_HASHES = "state_snapshot_hashes" {
        key: "SHA-256 of the sorted full state",
        value: "snapshot ID"
    }
    /// Results of state resolution, so merging the same branches again (the
    /// current state, then the next event's state before) costs one read.
    RESOLVED_STATES = "resolved_states" {
        key: "the merged snapshot IDs, ascending, each u64 big-endian (0 for the empty state)",
        value: "snapshot ID of the resolved state"
    }
    /// The current state of each room, materialised for keyed reads.
    ROOM_STATE = "room_state" {
        key: "room short ID ‖ state key short ID (u64 big-endian)",
        value: "event short ID"
    }
    /// Per-room facts.
    ROOMS = "rooms" {
        key: "room short ID",
        value: "JSON RoomRecord {room_id, version, current_snapshot, forward_extremities, created_ts}"
    }
    /// Rooms a user is in, for `/joined_rooms` and membership look-ups.
    USER_ROOMS = "user_rooms" {
        key: "user ID ‖ SEP ‖ room short ID",
        value: "membership (join, invite, knock, leave, ban)"
    }
    /// When each user's membership of a room last changed in the current
    /// state (which, after a state resolution, is not its member event's
    /// position): sync and the end of a former member's history read it.
    MEMBERSHIP_SINCE = "membership_since" {
        key: "user ID ‖ SEP ‖ room short ID",
        value: "stream position (u64 big-endian)"
    }
    /// Where each user last joined each room, for `shared` history visibility
    /// ("joined at any point after the event").
    LAST_JOINS = "last_joins" {
        key: "user ID ‖ SEP ‖ room short ID",
        value: "stream position at which the join entered the current state (u64 big-endian)"
    }
    /// Members of a room, for `/members` and `/joined_members`.
    ROOM_MEMBERS = "room_members" {
        key: "room short ID ‖ user ID",
        value: "membership (join, invite, knock, leave, ban)"
    }
    /// Joined members by server: which servers are in a room (where its
    /// events go), one seek per server.
    ROOM_SERVERS = "room_servers" {
        key: "room short ID ‖ server name ‖ SEP ‖ user ID (present while the user is joined)",
        value: "empty"
    }
    /// Client transaction IDs already used, so a retried send is not duplicated.
    TRANSACTIONS = "transactions" {
        key: "user ID ‖ SEP ‖ device ID ‖ SEP ‖ room ID (empty for to-device) ‖ SEP ‖ endpoint (send, redact, sendToDevice/<event type>) ‖ SEP ‖ transaction ID",
        value: "event ID (empty for to-device)"
    }
    /// Read receipts, one per room, kind, thread and user.
    RECEIPTS = "receipts" {
        key: "room short ID ‖ receipt type ‖ SEP ‖ thread (empty: unthreaded; `main`; a root event ID) ‖ SEP ‖ user ID",
        value: "JSON Receipt {event_id, ts, event_position, position}"
    }
    /// Receipt changes in stream order (all rooms), for incremental sync.
    RECEIPT_CHANGES = "receipt_changes" {
        key: "stream position (u64 big-endian)",
        value: "the receipt's key in `receipts`"
    }
    /// Each user's presence.
    PRESENCE = "presence" {
        key: "user ID",
        value: "JSON PresenceRecord {presence, status_msg, last_active_ts, position}"
    }
    /// Presence changes in stream order, for incremental sync.
    PRESENCE_CHANGES = "presence_changes" {
        key: "stream position (u64 big-endian)",
        value: "user ID"
    }
    /// Events that notified a user (push rules said `notify`), per room.
    NOTIFICATIONS = "notifications" {
        key: "user ID ‖ SEP ‖ room short ID ‖ stream position",
        value: "JSON Notification {event, actions, highlight, thread, ts}"
    }
    /// Invites that notify a user (push rules said `notify`) to rooms this
    /// server is not in, for the user's pushers, at the invite's position.
    INVITE_NOTIFICATIONS = "invite_notifications" {
        key: "user ID ‖ SEP ‖ stream position",
        value: "JSON InviteNotification {room_id, actions}"
    }
    /// A user's notifications across rooms in stream order, for `/notifications`.
    NOTIFICATION_LOG = "notification_log" {
        key: "user ID ‖ SEP ‖ stream position",
        value: "room short ID"
    }
    /// How far a user has read a room (and thread), by stream position.
    READ_POSITIONS = "read_positions" {
        key: "user ID ‖ SEP ‖ room short ID ‖ SEP ‖ thread (empty: unthreaded; `main`; a root event ID)",
        value: "stream position of the last event read (u64 big-endian)"
    }
    /// Events that relate to others (`m.relates_to` with a `rel_type`).
    RELATIONS = "relations" {
        key: "parent event short ID ‖ child stream position",
        value: "JSON Relation {child, rel_type, event_type, sender}"
    }
    /// The same children by relation type, for bundles and typed `/relations`.
    RELATION_TYPES = "relation_types" {
        key: "parent event short ID ‖ rel_type ‖ SEP ‖ child stream position",
        value: "child event short ID"
    }
    /// Annotations by parent, sender, type and key, to refuse a repeated reaction.
    ANNOTATIONS = "annotations" {
        key: "parent event short ID ‖ SEP ‖ sender ‖ SEP ‖ event type ‖ SEP ‖ key",
        value: "the annotation's event short ID"
    }
    /// Thread roots and their latest activity.
    THREADS = "threads" {
        key: "room short ID ‖ root event short ID",
        value: "stream position of the thread's latest reply ‖ number of replies (u64 big-endian each)"
    }
    /// Who replied in a thread, for `current_user_participated`.
    THREAD_PARTICIPANTS = "thread_participants" {
        key: "root event short ID ‖ user ID",
        value: "empty"
    }
    /// Threads by latest activity, for `/threads`.
    THREAD_ACTIVITY = "thread_activity" {
        key: "room short ID ‖ stream position of the latest event",
        value: "root event short ID"
    }
    /// Membership changes in stream order (all rooms), for device-list
    /// tracking: who now shares a room with whom (each change into or out
    /// of `join`), and who was newly invited or knocked.
    MEMBERSHIP_CHANGES = "membership_changes" {
        key: "stream position (u64 big-endian) ‖ room short ID ‖ user ID",
        value: "the new membership (join, invite, knock, leave, ban; empty when the member event left the state)"
    }
    /// Identity keys of local devices, as the device uploaded them.
    DEVICE_KEYS = "device_keys" {
        key: "user ID ‖ SEP ‖ device ID",
        value: "the DeviceKeys JSON as uploaded, without `unsigned`"
    }
    /// Other servers' users' device lists, kept while the user shares a room
    /// with a local user (`users::remote_devices`, `federation::devices`).
    REMOTE_DEVICE_LISTS = "remote_device_lists" {
        key: "user ID (of another server)",
        value: "JSON RemoteDeviceList {stream_id (the last update taken), devices: {device ID: {keys (DeviceKeys JSON as the server sent it), display_name}}, master_key, self_signing_key}"
    }
    /// Unclaimed one-time keys, in the order they were uploaded.
    ONE_TIME_KEYS = "one_time_keys" {
        key: "user ID ‖ SEP ‖ device ID ‖ SEP ‖ algorithm ‖ SEP ‖ upload position (u64 big-endian) ‖ key ID",
        value: "the key as uploaded (a string or a signed key object)"
    }
    /// Where each unclaimed one-time key sits in `one_time_keys`.
    ONE_TIME_KEY_IDS = "one_time_key_ids" {
        key: "user ID ‖ SEP ‖ device ID ‖ SEP ‖ algorithm:key ID",
        value: "upload position (u64 big-endian)"
    }
    /// Each device's fallback key per algorithm.
    FALLBACK_KEYS = "fallback_keys" {
        key: "user ID ‖ SEP ‖ device ID ‖ SEP ‖ algorithm",
        value: "JSON FallbackKey {key_id, key (as uploaded), used}"
    }
    /// Cross-signing keys of local users, as uploaded.
    CROSS_SIGNING_KEYS = "cross_signing_keys" {
        key: "user ID ‖ SEP ‖ usage (master, self_signing, user_signing)",
        value: "the CrossSigningKey JSON as uploaded"
    }
    /// Signatures uploaded later onto device keys and master keys.
    KEY_SIGNATURES = "key_signatures" {
        key: "target user ID ‖ SEP ‖ target (device ID or master public key) ‖ SEP ‖ signer user ID ‖ SEP ‖ signing key ID",
        value: "unpadded base64 signature"
    }
    /// Device-list changes (keys, devices, cross-signing) in stream order.
    DEVICE_LIST_CHANGES = "device_list_changes" {
        key: "stream position (u64 big-endian)",
        value: "user ID whose keys changed ‖ SEP ‖ audience (empty: everyone sharing a room; else the one user who may see it)"
    }
    /// Send-to-device messages waiting for their device, in arrival order.
    TO_DEVICE = "to_device" {
        key: "user ID ‖ SEP ‖ device ID ‖ SEP ‖ stream position (u64 big-endian)",
        value: "JSON {sender, type, content}"
    }
    /// How many messages each device's to-device inbox holds (the cap).
    TO_DEVICE_COUNTS = "to_device_counts" {
        key: "user ID ‖ SEP ‖ device ID ‖ SEP",
        value: "u64 big-endian: messages waiting"
    }
    /// Server-side key backup versions.
    BACKUP_VERSIONS = "backup_versions" {
        key: "user ID ‖ SEP ‖ version (u64 big-endian; clients see it in decimal)",
        value: "JSON BackupVersion {algorithm ({algorithm, auth_data}), etag, count, deleted}"
    }
    /// Backed-up room keys.
    BACKUP_KEYS = "backup_keys" {
        key: "user ID ‖ SEP ‖ version (u64 big-endian) ‖ room ID ‖ SEP ‖ session ID",
        value: "the KeyBackupData JSON as uploaded"
    }
    /// Room aliases on this server.
    ALIASES = "aliases" {
        key: "room alias (`#name:server`)",
        value: "JSON AliasRecord {room_id, creator}"
    }
    /// The local aliases of each room.
    ROOM_ALIASES = "room_aliases" {
        key: "room short ID ‖ room alias",
        value: "empty"
    }
    /// Rooms published in this server's room directory.
    PUBLISHED_ROOMS = "published_rooms" {
        key: "room ID",
        value: "empty"
    }
    /// Rooms a user has forgotten (cleared when they join or are invited again).
    FORGOTTEN_ROOMS = "forgotten_rooms" {
        key: "user ID ‖ SEP ‖ room short ID",
        value: "empty"
    }
    /// Users deactivated with `erase`: their messages are hidden from those
    /// who were not in the room when they were sent.
    ERASED_USERS = "erased_users" {
        key: "user ID",
        value: "empty"
    }
    /// What server admins set on accounts (users/moderation.rs): only
    /// accounts with something set.
    USER_MODERATION = "user_moderation" {
        key: "user ID",
        value: "JSON Moderation {locked, suspended, shadow_banned (each only when true), ratelimit ([messages_per_second, burst_count], when overridden)}"
    }
    /// Registration tokens (users/registration_tokens.rs).
    REGISTRATION_TOKENS = "registration_tokens" {
        key: "the token",
        value: "JSON RegistrationToken {uses_allowed (null: unlimited), pending (registrations under way that used it), completed, expiry_time (ms or null), created_ts}"
    }
    /// Pushers: where each user's devices get push notifications.
    PUSHERS = "pushers" {
        key: "user ID ‖ SEP ‖ app ID ‖ SEP ‖ pushkey",
        value: "JSON PusherRecord {app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, pushkey_ts, device_id, pushed_upto, last_badge, failing_since, retry_at, backoff_ms}"
    }
    /// Room purges under way (rooms/purge.rs): the mark, and the events
    /// still to delete.
    ROOM_PURGES = "room_purges" {
        key: "room short ID (the mark), or room short ID ‖ `e` ‖ event short ID (an event to delete)",
        value: "the mark: JSON PurgeRecord {room_id, phase (collect, users, rooms, events, finish), cursor}; events: empty"
    }
    /// Room invite codes (rooms/invite_codes.rs), revoked ones included.
    ROOM_INVITE_CODES = "room_invite_codes" {
        key: "the code",
        value: "JSON InviteCode {room_id, created_by, created_ts, expires_ts, max_uses, uses, revoked}"
    }
    /// How far retention has pruned each room (rooms/retention.rs).
    RETENTION_CURSORS = "retention_cursors" {
        key: "room short ID",
        value: "ms (u64 big-endian): messages sent before it were pruned"
    }
    /// Each user's server notices room (admin/notices.rs).
    SERVER_NOTICE_ROOMS = "server_notice_rooms" {
        key: "user ID",
        value: "room ID"
    }
    /// Admins' background jobs (jobs.rs): kept a day after they end.
    JOBS = "jobs" {
        key: "job ID",
        value: "JSON Job {id, action, resource_id, status (scheduled, active, complete, failed, cancelled), timestamp_ms, done, total, result, error}"
    }
    /// Rooms a server admin blocked: nobody here joins or is invited.
    BLOCKED_ROOMS = "blocked_rooms" {
        key: "room ID",
        value: "JSON Block {user_id (the admin), ts}"
    }
    /// Reports of events, rooms and users, for server admins.
    REPORTS = "reports" {
        key: "report number (u64 big-endian)",
        value: "JSON Report {room_id (none for a user report), event_id (an event report), user_id (a user report), reporter, reason, score, ts}"
    }
    /// Other servers' signing keys (servers/keys.rs).
    SERVER_KEYS = "server_keys" {
        key: "server name",
        value: "JSON {keys: {key ID: {key (unpadded base64), until (ms: valid_until_ts of a current key, expired_ts of an old one)}}, document: the newest key document the server signed, as received, documents: {key ID: the newest document listing it as current}}"
    }
    /// What waits to be sent to each other server (servers/outbox.rs).
    FEDERATION_QUEUE = "federation_queue" {
        key: "destination server name ‖ SEP ‖ sequence number (u64 big-endian, increasing)",
        value: "JSON Item: {\"pdu\": short event ID} or {\"edu\": {edu_type, content}}"
    }
    /// Transactions other servers sent, with the answer given, so a retry
    /// gets the same answer and changes nothing.
    FEDERATION_TXNS = "federation_txns" {
        key: "origin server name ‖ SEP ‖ transaction ID",
        value: "JSON {ts (ms, when answered), results: {event ID: result} as answered}; dropped after a day"
    }
    /// Media of the content repository (media/): local uploads, reserved
    /// IDs, and other servers' media kept once fetched.
    MEDIA = "media" {
        key: "server name ‖ SEP ‖ media ID",
        value: "JSON MediaRecord {user_id (none for another server's), created_ts, content (once uploaded or fetched: {content_type, upload_name, size, sha256 (hex, names the file under media.path)}), authenticated, url_cache (the URL a URL preview fetched it from), quarantined_by (who quarantined it), protected (from quarantine)}"
    }
    /// Thumbnails made of media, kept (media/thumbnail.rs).
    MEDIA_THUMBNAILS = "media_thumbnails" {
        key: "server name ‖ SEP ‖ media ID ‖ SEP ‖ `<width>x<height>-<method>-<animated>` of the configured size",
        value: "JSON Thumbnail {content_type, size, sha256 (hex, names the file under media.path), width, height}"
    }
    /// The bytes each local user's uploads take (media.user_quota_bytes).
    MEDIA_USAGE = "media_usage" {
        key: "user ID",
        value: "bytes (JSON number)"
    }
    /// URL previews made (media/preview/), served until they expire.
    MEDIA_URL_PREVIEWS = "media_url_previews" {
        key: "URL ‖ SEP ‖ when it was made (ms, u64 big-endian)",
        value: "JSON {og: the preview, expires_ts (ms)}"
    }
    /// Media IDs reserved with /create and not yet uploaded to, per user.
    MEDIA_PENDING = "media_pending" {
        key: "user ID ‖ SEP ‖ media ID",
        value: "created_ts (JSON number, ms)"
    }
    /// Invites of local users to rooms this server is not in, and their
    /// knocks on such rooms (rooms/invites.rs).
    REMOTE_INVITES = "remote_invites" {
        key: "user ID ‖ SEP ‖ room ID",
        value: "JSON RemoteInvite {room_version, event (the invite, signed by both servers, or our knock), stripped (the other server's stripped state), position (stream position of the last change), rejected (the leave, client format, once rejected), knock (true for a knock)}"
    }
}
