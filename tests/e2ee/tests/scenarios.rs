//! End-to-end encryption with the real client SDK: matrix-sdk clients
//! (Olm/Megolm by vodozemac) against `hearth` processes. The server never
//! sees plaintext; each scenario proves it stores and routes keys right by
//! a client decrypting (or, where it must not, failing to).

use anyhow::{Context, Result, ensure};
use hearth_e2ee_tests::{Hearth, join, login, register, sees, send, session_id, sync_until, texts};
use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    deserialized_responses::TimelineEventKind,
    room::MessagesOptions,
    ruma::{
        api::client::room::{Visibility, create_room},
        events::{
            AnyInitialStateEvent, InitialStateEvent,
            room::{encrypted::OriginalSyncRoomEncryptedEvent, encryption::RoomEncryptionEventContent},
        },
        serde::Raw,
    },
};

/// An encrypted private room made by `owner`, joined by `members`.
async fn encrypted_room(owner: &Client, members: &[&Client]) -> Result<Room> {
    let mut request = create_room::v3::Request::new();
    request.visibility = Visibility::Private;
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.invite = members.iter().map(|m| m.user_id().unwrap().to_owned()).collect();
    let encryption: Raw<AnyInitialStateEvent> =
        InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults())
            .to_raw_any();
    request.initial_state = vec![encryption];
    let room = owner.create_room(request).await?;
    for member in members {
        join(member, room.room_id()).await?;
    }
    // The owner learns of the joins (and so shares keys with them).
    let count = members.len() as u64 + 1;
    sync_until(owner, "the members' joins", || async { Ok(room.joined_members_count() == count) }).await?;
    Ok(room)
}

fn room_of(client: &Client, room: &Room) -> Result<Room> {
    client.get_room(room.room_id()).context("room not known to the client")
}

/// 1. Alice and Bob on the same server, an encrypted DM: both send, both decrypt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_dm() -> Result<()> {
    let hearth = Hearth::start().await?;
    let alice = register(&hearth, "alice").await?;
    let bob = register(&hearth, "bob").await?;
    let dm = alice.create_dm(bob.user_id().unwrap()).await?;
    ensure!(dm.latest_encryption_state().await?.is_encrypted(), "create_dm makes an encrypted room");
    let bob_dm = join(&bob, dm.room_id()).await?;
    sync_until(&alice, "bob's join", || async { Ok(dm.joined_members_count() == 2) }).await?;

    send(&dm, "hello bob").await?;
    sees(&bob, &bob_dm, &["hello bob"]).await?;
    send(&bob_dm, "hi alice").await?;
    sees(&alice, &dm, &["hello bob", "hi alice"]).await?;
    sees(&bob, &bob_dm, &["hello bob", "hi alice"]).await?;
    Ok(())
}

/// 2. Bob's new device restores the room keys from the key backup his first
/// device made, and reads the history it could not decrypt before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_device_restores_history_from_key_backup() -> Result<()> {
    let hearth = Hearth::start().await?;
    let alice = register(&hearth, "alice").await?;
    let bob = register(&hearth, "bob").await?;
    let room = encrypted_room(&alice, &[&bob]).await?;
    let bob_room = room_of(&bob, &room)?;
    send(&room, "one").await?;
    send(&room, "two").await?;
    sees(&bob, &bob_room, &["one", "two"]).await?;
    send(&bob_room, "three").await?;
    sees(&alice, &room, &["one", "two", "three"]).await?;

    // Recovery: cross-signing, a key backup and secret storage.
    let recovery_key = bob.encryption().recovery().enable().wait_for_backups_to_upload().await?;
    let backup =
        bob.send(matrix_sdk::ruma::api::client::backup::get_latest_backup_info::v3::Request::new()).await?;
    ensure!(backup.count == 2u32.into(), "both sessions are backed up: {}", backup.count);

    let bob2 = login(&hearth, "bob", "bob's second device").await?;
    let bob2_room = room_of(&bob2, &room)?;
    let before = texts(&bob2_room).await?;
    ensure!(before == vec![None, None, None], "a new device cannot read history by itself: {before:?}");

    bob2.encryption().recovery().recover(&recovery_key).await.context("recovering on the new device")?;
    let backups = bob2.encryption().backups();
    sync_until(&bob2, "the new device using the backup", || async { Ok(backups.are_enabled().await) })
        .await?;
    backups.download_room_keys_for_room(room.room_id()).await?;
    let after = texts(&bob2_room).await?;
    ensure!(
        after == vec![Some("one".into()), Some("two".into()), Some("three".into())],
        "restored: {after:?}"
    );
    Ok(())
}

/// 3. Cross-signing on both accounts; Bob's new device is signed by his
/// self-signing key, and Alice sees both of Bob's devices as cross-signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_signing_new_device() -> Result<()> {
    let hearth = Hearth::start().await?;
    let alice = register(&hearth, "alice").await?;
    let bob = register(&hearth, "bob").await?;
    let room = encrypted_room(&alice, &[&bob]).await?;

    // First set-up needs no user-interactive auth.
    alice.encryption().bootstrap_cross_signing(None).await.context("alice's cross-signing")?;
    bob.encryption().bootstrap_cross_signing(None).await.context("bob's cross-signing")?;
    // Recovery puts Bob's private cross-signing keys in secret storage.
    let recovery_key = bob.encryption().recovery().enable().await.context("bob's recovery")?;
    let bob_id = bob.user_id().unwrap().to_owned();
    let bob1_id = bob.device_id().unwrap().to_owned();

    let bob2 = login(&hearth, "bob", "bob's second device").await?;
    let bob2_id = bob2.device_id().unwrap().to_owned();
    // As a syncing client would, the new device first learns Bob's identity.
    sync_until(&bob2, "the new device seeing bob's identity", || async {
        Ok(bob2.encryption().get_user_identity(&bob_id).await?.is_some())
    })
    .await?;
    bob2.encryption().recovery().recover(&recovery_key).await.context("recovering on the new device")?;
    let own = bob2.encryption().get_own_device().await?.context("own device")?;
    if !own.is_cross_signed_by_owner() {
        own.verify().await.context("self-signing the new device")?;
    }
    // Bob's first device learns of the new one and trusts it.
    sync_until(&bob, "bob's first device trusting the second", || async {
        Ok(bob.encryption().get_device(&bob_id, &bob2_id).await?.is_some_and(|d| d.is_verified()))
    })
    .await?;
    // Alice sees Bob's identity and both devices signed by it.
    let cross_signed = |device_id: matrix_sdk::ruma::OwnedDeviceId| {
        let (alice, bob_id) = (&alice, &bob_id);
        async move {
            anyhow::Ok(
                alice
                    .encryption()
                    .get_device(bob_id, &device_id)
                    .await?
                    .is_some_and(|d| d.is_cross_signed_by_owner()),
            )
        }
    };
    sync_until(&alice, "alice seeing bob's devices cross-signed", || async {
        Ok(alice.encryption().get_user_identity(&bob_id).await?.is_some()
            && cross_signed(bob1_id.clone()).await?
            && cross_signed(bob2_id.clone()).await?)
    })
    .await?;
    ensure!(room.latest_encryption_state().await?.is_encrypted(), "the shared room is encrypted");
    Ok(())
}

/// 4. After Bob leaves, Alice's next message uses a new Megolm session
/// shared only with those still in the room: Carol reads it, Bob cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_left_cannot_read_later_messages() -> Result<()> {
    let hearth = Hearth::start().await?;
    let alice = register(&hearth, "alice").await?;
    let bob = register(&hearth, "bob").await?;
    let carol = register(&hearth, "carol").await?;
    let room = encrypted_room(&alice, &[&bob, &carol]).await?;
    let (bob_room, carol_room) = (room_of(&bob, &room)?, room_of(&carol, &room)?);
    send(&room, "before").await?;
    sees(&bob, &bob_room, &["before"]).await?;
    sees(&carol, &carol_room, &["before"]).await?;

    bob_room.leave().await?;
    sync_until(&alice, "bob's leave", || async { Ok(room.joined_members_count() == 2) }).await?;
    let after = send(&room, "after").await?;
    sees(&carol, &carol_room, &["before", "after"]).await?;

    // A new session, not the one Bob holds.
    let mut options = MessagesOptions::backward();
    options.limit = 10u32.into();
    let events = carol_room.messages(options).await?.chunk;
    let sessions: Vec<String> = events.iter().rev().filter_map(session_id).collect();
    ensure!(sessions.len() == 2 && sessions[0] != sessions[1], "the session rotated: {sessions:?}");

    // Bob catches up on everything sent to his device, then tries the
    // encrypted event as the server stores it.
    bob.sync_once(SyncSettings::default()).await?;
    let raw = carol
        .send(matrix_sdk::ruma::api::client::room::get_room_event::v3::Request::new(
            room.room_id().to_owned(),
            after,
        ))
        .await?
        .event;
    let bob_room = bob.get_room(room.room_id()).context("bob still knows the room")?;
    let attempt = bob_room.decrypt_event(&raw.cast_unchecked::<OriginalSyncRoomEncryptedEvent>(), None).await;
    let unreadable = match attempt {
        Ok(event) => matches!(event.kind, TimelineEventKind::UnableToDecrypt { .. }),
        Err(_) => true,
    };
    ensure!(unreadable, "bob decrypted a message sent after he left");
    Ok(())
}

/// 5. Bob is offline while Alice sends (and the server is killed and
/// restarted meanwhile); when Bob syncs again the queued room keys reach
/// him and he decrypts everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_device_gets_keys_when_back() -> Result<()> {
    let mut hearth = Hearth::start().await?;
    let alice = register(&hearth, "alice").await?;
    let bob = register(&hearth, "bob").await?;
    let room = encrypted_room(&alice, &[&bob]).await?;
    let bob_room = room_of(&bob, &room)?;

    // Bob stops syncing; Alice sends three messages, each session key
    // queued for his device.
    for text in ["while", "you", "were away"] {
        send(&room, text).await?;
    }
    hearth.kill_and_restart().await?;
    sees(&bob, &bob_room, &["while", "you", "were away"]).await?;
    ensure!(texts(&room).await?.len() == 3, "alice sees her three messages");
    Ok(())
}

/// 6. An encrypted attachment: Alice's SDK encrypts a file, uploads the
/// ciphertext and sends its key in the (encrypted) event; Bob's SDK
/// downloads it from Hearth and decrypts it to the same bytes. The server
/// holds only ciphertext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_attachment_is_decrypted_by_the_other_side() -> Result<()> {
    use matrix_sdk::{
        attachment::AttachmentConfig,
        media::{MediaFormat, MediaRequestParameters},
        ruma::events::room::MediaSource,
    };
    let hearth = Hearth::start().await?;
    let alice = register(&hearth, "alice").await?;
    let bob = register(&hearth, "bob").await?;
    let room = encrypted_room(&alice, &[&bob]).await?;
    let bob_room = room_of(&bob, &room)?;
    let file: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    room.send_attachment(
        "report.bin",
        &mime::APPLICATION_OCTET_STREAM,
        file.clone(),
        AttachmentConfig::new(),
    )
    .await?;

    // Bob finds the event, decrypted, naming an encrypted file.
    let found = std::sync::Mutex::new(None);
    sync_until(&bob, "the attachment", || async {
        let mut options = MessagesOptions::backward();
        options.limit = 20u32.into();
        for event in bob_room.messages(options).await?.chunk {
            let json: serde_json::Value = serde_json::from_str(event.raw().json().get())?;
            if json["type"] == "m.room.message" && json["content"]["msgtype"] == "m.file" {
                *found.lock().unwrap() = Some(json["content"].clone());
                return Ok(true);
            }
        }
        Ok(false)
    })
    .await?;
    let content = found.into_inner().unwrap().context("the attachment event")?;
    ensure!(content["url"].is_null() && content["file"]["url"].is_string(), "an encrypted file: {content}");
    let encrypted: matrix_sdk::ruma::events::room::EncryptedFile =
        serde_json::from_value(content["file"].clone())?;
    let uri = encrypted.url.clone();

    // As the server stores it: not the file.
    let (server, media_id) = uri.parts()?;
    let plain = MediaRequestParameters { source: MediaSource::Plain(uri.clone()), format: MediaFormat::File };
    let stored = bob.media().get_media_content(&plain, false).await?;
    ensure!(stored.len() == file.len() && stored != file, "ciphertext of {server}/{media_id} on the server");
    // Decrypted by Bob's SDK: the file.
    let decrypted = bob
        .media()
        .get_media_content(
            &MediaRequestParameters {
                source: MediaSource::Encrypted(Box::new(encrypted)),
                format: MediaFormat::File,
            },
            false,
        )
        .await?;
    ensure!(decrypted == file, "Bob decrypts the attachment to what Alice sent");
    Ok(())
}
