//! The `hearth` command line: `serve` (the default) and the admin commands,
//! which work on a stopped server's database.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::{config::Config, services::Services, users::hash_password};

#[derive(Parser)]
#[command(name = "hearth", version, about = "Hearth, a Matrix homeserver")]
struct Cli {
    /// The TOML config file. Without it: ./hearth.toml when present, else
    /// the built-in defaults (those of example.toml). HEARTH_* environment
    /// variables override either.
    #[arg(long, short, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve,
    /// Manage local accounts. The server must be stopped: these commands
    /// open its database directly.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage the server's signing key (the server must be stopped).
    SigningKey {
        #[command(subcommand)]
        command: SigningKeyCommand,
    },
    /// Inspect a room (the server must be stopped; while it runs, ask
    /// `GET /_hearth/admin/v1/rooms/{roomId}/fingerprint` as an admin).
    Room {
        #[command(subcommand)]
        command: RoomCommand,
    },
    /// Manage media: quarantine, delete, purge other servers' media kept
    /// here (the server must be stopped), offload to the bucket (beside it).
    Media {
        #[command(subcommand)]
        command: MediaCommand,
    },
    /// Manage the search index (the server must be stopped; while it runs,
    /// POST /_hearth/admin/v1/search/reindex as an admin).
    Search {
        #[command(subcommand)]
        command: SearchCommand,
    },
    /// Maintain the database (the server must be stopped).
    Database {
        #[command(subcommand)]
        command: DatabaseCommand,
    },
}

#[derive(Subcommand)]
enum DatabaseCommand {
    /// Rewrite the database's files: reclaims the space of deleted data
    /// (after purging history or media) and brings files an older Hearth
    /// wrote to the current format.
    Compact,
}

#[derive(Subcommand)]
enum SearchCommand {
    /// Empty the search index and build it again from the database (after
    /// a change of words or a damaged index), with a progress bar.
    Reindex,
}

#[derive(Subcommand)]
enum MediaCommand {
    /// Quarantine media (mxc://server/id) and every item of the same
    /// bytes: served to nobody (the server must be stopped; while it runs,
    /// use POST /_synapse/admin/v1/media/quarantine/{server}/{id}).
    Quarantine { mxc: String },
    /// Delete local media (mxc://server/id): its record, thumbnails and
    /// files (the server must be stopped; while it runs, DELETE
    /// /_synapse/admin/v1/media/{server}/{id}).
    Delete { mxc: String },
    /// Delete all media a local user uploaded (the server must be stopped;
    /// while it runs, DELETE /_synapse/admin/v1/users/{userId}/media).
    DeleteUserMedia { user_id: String },
    /// Delete other servers' media kept here longer than this (it is
    /// fetched again when asked for; the server must be stopped; while it
    /// runs, POST /_synapse/admin/v1/purge_media_cache).
    PurgeRemote {
        #[arg(long, default_value_t = 30)]
        older_than_days: u64,
    },
    /// Move the local files not changed for a while to the `[media.s3]`
    /// bucket (each put there unless it already is, then removed here; the
    /// server fetches it back when it is asked for). Run it from cron to
    /// keep the local store small.
    Offload {
        /// Only files last modified this many days ago or earlier.
        #[arg(long, default_value_t = 30)]
        older_than_days: u64,
    },
}

#[derive(Subcommand)]
enum RoomCommand {
    /// Print the room's forward extremities (with their depths) and a hash
    /// of its current state: servers that agree on the room print the same
    /// hash.
    Fingerprint {
        /// The room ID (!…).
        room_id: String,
    },
}

#[derive(Subcommand)]
enum SigningKeyCommand {
    /// Replace the signing key with a new one. The old public key is still
    /// published (as an old verify key), so other servers can check what it
    /// signed. Do it when the key may have leaked.
    Rotate,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account. Without --password, a random one is generated and printed.
    Create {
        /// The localpart (alice for @alice:your.server).
        localpart: String,
        #[arg(long)]
        password: Option<String>,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
    },
    /// Set a new password and log out every device of the account.
    ResetPassword {
        /// A localpart or a full user ID.
        user: String,
        /// Without it, a random password is generated and printed.
        #[arg(long)]
        password: Option<String>,
    },
    /// Deactivate an account for good: it is logged out everywhere and its
    /// user ID can never be registered again.
    Deactivate {
        /// A localpart or a full user ID.
        user: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            let source = cli.config.as_ref().map_or_else(
                || "the built-in defaults, ./hearth.toml or HEARTH_* variables".to_owned(),
                |p| p.display().to_string(),
            );
            eprintln!("hearth: {e} (configuration from {source})");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config, cli.config),
        Command::User { command } => user(config, command),
        Command::SigningKey { command: SigningKeyCommand::Rotate } => rotate_signing_key(config),
        Command::Room { command: RoomCommand::Fingerprint { room_id } } => room_fingerprint(config, &room_id),
        Command::Media { command: MediaCommand::Offload { older_than_days } } => {
            offload_media(config, older_than_days)
        }
        Command::Media { command } => manage_media(config, command),
        Command::Search { command: SearchCommand::Reindex } => reindex_search(config),
        Command::Database { command: DatabaseCommand::Compact } => compact_database(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config, file: Option<PathBuf>) -> crate::Result<()> {
    let mut filter = EnvFilter::try_new(&config.log).map_err(crate::Error::internal)?;
    // ruma's auth checks log every event they pass at `info`: only when
    // asked for by name.
    if !config.log.contains("ruma_state_res") {
        filter = filter.add_directive("ruma_state_res=warn".parse().map_err(crate::Error::internal)?);
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).init();
    let source = match file {
        Some(path) => Some(path.display().to_string()),
        None if std::path::Path::new("hearth.toml").is_file() => Some("hearth.toml".into()),
        None => None,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(crate::Error::internal)?
        .block_on(crate::server::run(config, source.as_deref()))
}

fn manage_media(config: Config, command: MediaCommand) -> crate::Result<()> {
    let services = Services::open(config)?;
    let media = &services.media;
    let parse = |mxc: &str| -> crate::Result<(ruma::OwnedServerName, String)> {
        let uri = <&ruma::MxcUri>::from(mxc);
        let (server, id) =
            uri.parts().map_err(|_| crate::Error::invalid_param(format!("{mxc} is not an mxc:// URI")))?;
        Ok((server.to_owned(), id.to_owned()))
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(crate::Error::internal)?;
    match command {
        MediaCommand::Quarantine { mxc } => {
            let (server, id) = parse(&mxc)?;
            let changed = media.set_quarantine(&server, &id, Some("cli"))?;
            println!("quarantined {changed} items (those of the same bytes included)");
        }
        MediaCommand::Delete { mxc } => {
            let (server, id) = parse(&mxc)?;
            if !media.is_local(&server) {
                return Err(crate::Error::invalid_param("Can only delete local media"));
            }
            let deleted = runtime.block_on(media.delete_local(&[id]))?;
            println!("deleted {} items", deleted.len());
        }
        MediaCommand::DeleteUserMedia { user_id } => {
            let user = ruma::OwnedUserId::try_from(user_id)
                .map_err(|_| crate::Error::invalid_param("not a user ID"))?;
            let ids: Vec<String> = media.user_media(&user)?.into_iter().map(|i| i.media_id).collect();
            let deleted = runtime.block_on(media.delete_local(&ids))?;
            println!("deleted {} items of {user}", deleted.len());
        }
        MediaCommand::PurgeRemote { older_than_days } => {
            let before = crate::util::now_ms().saturating_sub(older_than_days * 86_400_000);
            let deleted = runtime.block_on(media.purge_remote(before))?;
            println!("purged {deleted} items of other servers");
        }
        MediaCommand::Offload { .. } => unreachable!("offload needs no database"),
    }
    services.db.flush()?;
    Ok(())
}

fn offload_media(config: Config, older_than_days: u64) -> crate::Result<()> {
    let s3 = config.media.s3.as_ref().ok_or_else(|| {
        crate::Error::invalid_param("media offload needs a bucket: set [media.s3] in the configuration")
    })?;
    let s3 = crate::media::s3::S3::new(s3)?;
    let root = config.media.path.clone().unwrap_or_else(|| config.database.path.join("media"));
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(older_than_days * 86_400);
    let done = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(crate::Error::internal)?
        .block_on(async {
            s3.check().await?;
            crate::media::s3::offload(&s3, &root, before).await
        })?;
    println!(
        "offloaded {} files ({} bytes) from {} to the bucket ({} uploaded, the rest were there)",
        done.removed,
        done.bytes,
        root.display(),
        done.uploaded
    );
    Ok(())
}

fn user(config: Config, command: UserCommand) -> crate::Result<()> {
    let services = Services::open(config)?;
    let users = &services.users;
    let resolve = |name: &str| {
        users
            .resolve_login_name(name)
            .filter(|id| users.exists(id).unwrap_or(false))
            .ok_or_else(|| crate::Error::not_found(format!("no local user {name}")))
    };
    match command {
        UserCommand::Create { localpart, password, admin } => {
            let user_id = users.user_id_for_new_localpart(&localpart)?;
            let (password, generated) = password_or_generated(password);
            users.create(&user_id, Some(hash_password(&password)?), admin, None)?;
            println!("created {user_id}{}", if admin { " (admin)" } else { "" });
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::ResetPassword { user, password } => {
            let user_id = resolve(&user)?;
            if !users.is_active(&user_id)? {
                return Err(crate::Error::forbidden(format!("{user_id} is deactivated")));
            }
            let (password, generated) = password_or_generated(password);
            users.set_password_hash(&user_id, Some(hash_password(&password)?))?;
            users.remove_all_devices(&user_id, None)?;
            println!("reset the password of {user_id} and logged out all its devices");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Deactivate { user } => {
            let user_id = resolve(&user)?;
            users.deactivate(&user_id, false)?;
            println!("deactivated {user_id}");
        }
    }
    services.db.flush()?;
    Ok(())
}

fn rotate_signing_key(config: Config) -> crate::Result<()> {
    let db = crate::storage::Db::open(
        &config.database.path,
        config.database.cache_mb,
        config.database.sync_writes,
    )?;
    let key_id = crate::keys::ServerKeys::rotate(&db)?;
    db.flush()?;
    println!("the signing key is now {key_id}; the old one is kept as an old verify key");
    Ok(())
}

fn compact_database(config: Config) -> crate::Result<()> {
    let db = crate::storage::Db::open(&config.database.path, config.database.cache_mb, false)?;
    let size = || crate::util::directory_size(&config.database.path).unwrap_or(0);
    let before = size();
    let started = std::time::Instant::now();
    db.compact()?;
    db.flush()?;
    let after = size();
    println!(
        "compacted {} in {:.1} s: {} MiB before, {} MiB after",
        config.database.path.display(),
        started.elapsed().as_secs_f64(),
        before >> 20,
        after >> 20
    );
    Ok(())
}

fn room_fingerprint(config: Config, room_id: &str) -> crate::Result<()> {
    let room_id =
        ruma::RoomId::parse(room_id).map_err(|e| crate::Error::invalid_param(format!("{room_id}: {e}")))?;
    let services = Services::open(config)?;
    let found = services
        .rooms
        .fingerprint(&room_id)?
        .ok_or_else(|| crate::Error::not_found(format!("this server has no room {room_id}")))?;
    println!("room {room_id}");
    println!("state hash {} ({} state events)", found.state_hash, found.state_events);
    println!("forward extremities ({}):", found.extremities.len());
    for (event_id, depth) in &found.extremities {
        println!("  {event_id} (depth {depth})");
    }
    Ok(())
}

fn reindex_search(config: Config) -> crate::Result<()> {
    if !config.search.enabled {
        return Err(crate::Error::invalid_param("search is off in the configuration (search.enabled)"));
    }
    let services = Services::open(config)?;
    let search = services.search.as_ref().expect("search is on");
    let end = services.stream.visible();
    let bar = indicatif::ProgressBar::new(end);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{wide_bar} {percent}% of the stream, {elapsed} (ETA {eta})")
            .expect("a valid template"),
    );
    search.request_rebuild();
    crate::search::indexer::catch_up(search, &services.rooms, |position| bar.set_position(position))?;
    bar.finish();
    let (documents, bytes) = search.size()?;
    println!("the search index holds {documents} documents ({} MiB)", bytes >> 20);
    Ok(())
}

fn password_or_generated(password: Option<String>) -> (String, bool) {
    match password {
        Some(p) => (p, false),
        None => (crate::util::random_string(20), true),
    }
}
