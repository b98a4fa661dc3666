//! End-to-end encryption between users of two Hearth servers: keys,
//! device lists and to-device messages cross the federation.

use anyhow::{Result, ensure};
use hearth_e2ee_tests::{Hearth, join, register, sees, send, sync_until, texts};
use matrix_sdk::ruma::{
    api::client::room::{Visibility, create_room},
    events::{AnyInitialStateEvent, InitialStateEvent, room::encryption::RoomEncryptionEventContent},
    serde::Raw,
};

/// 1. Alice on hs1 and Bob on hs2 in an encrypted DM: both send, both decrypt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_dm() -> Result<()> {
    let servers = Hearth::federation(2).await?;
    let alice = register(&servers[0], "alice").await?;
    let bob = register(&servers[1], "bob").await?;
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

/// 2. Bob is offline while Alice (on hs1) sends, and his server is killed
/// (SIGKILL) right after and restarted: the events and the room keys for his
/// device, queued on either side, reach him and he decrypts everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_device_gets_keys_when_back() -> Result<()> {
    let mut servers = Hearth::federation(2).await?;
    let alice = register(&servers[0], "alice").await?;
    let bob = register(&servers[1], "bob").await?;
    let mut request = create_room::v3::Request::new();
    request.visibility = Visibility::Private;
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.invite = vec![bob.user_id().unwrap().to_owned()];
    let encryption: Raw<AnyInitialStateEvent> =
        InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults())
            .to_raw_any();
    request.initial_state = vec![encryption];
    let room = alice.create_room(request).await?;
    let bob_room = join(&bob, room.room_id()).await?;
    sync_until(&alice, "bob's join", || async { Ok(room.joined_members_count() == 2) }).await?;

    for text in ["while", "you", "were away"] {
        send(&room, text).await?;
    }
    servers[1].kill_and_restart().await?;
    sees(&bob, &bob_room, &["while", "you", "were away"]).await?;
    ensure!(texts(&room).await?.len() == 3, "alice sees her three messages");
    Ok(())
}
