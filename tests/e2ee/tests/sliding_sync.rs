//! Element X's sync: matrix-sdk-ui's SyncService (a room list connection
//! and an encryption connection, over simplified sliding sync) against a
//! `hearth` process. The room list fills and keeps its order, a timeline
//! pages back to the room's creation, and an encrypted DM decrypts with
//! keys that came through the extensions.

#![recursion_limit = "256"]

use anyhow::{Context, Result, ensure};
use hearth_e2ee_tests::{Hearth, login_sliding, register, send, until};
use matrix_sdk::{
    Client,
    ruma::{OwnedRoomId, api::client::room::create_room, events::room::message::RoomMessageEventContent},
};
use matrix_sdk_ui::{
    room_list_service::RoomListLoadingState,
    sync_service::SyncService,
    timeline::{RoomExt, Timeline},
};

async fn named_room(owner: &Client, name: &str) -> Result<OwnedRoomId> {
    let mut request = create_room::v3::Request::new();
    request.name = Some(name.to_owned());
    Ok(owner.create_room(request).await?.room_id().to_owned())
}

fn stamp(client: &Client, room: &OwnedRoomId) -> u64 {
    client.get_room(room).and_then(|r| r.recency_stamp()).map_or(0, u64::from)
}

/// The texts a timeline shows, oldest first (`None` for what is not a
/// message, or not decrypted).
async fn texts(timeline: &Timeline) -> Vec<String> {
    timeline
        .items()
        .await
        .iter()
        .filter_map(|item| item.as_event()?.content().as_message().map(|m| m.body().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_x_sync_lists_rooms_pages_back_and_decrypts() -> Result<()> {
    let hearth = Hearth::start().await?;
    let alice_desktop = register(&hearth, "alice").await?;
    register(&hearth, "bob").await?;
    let first = named_room(&alice_desktop, "first").await?;
    let second = named_room(&alice_desktop, "second").await?;
    let third = named_room(&alice_desktop, "third").await?;
    let history = alice_desktop.get_room(&second).context("second")?;
    for i in 0..30 {
        send(&history, &format!("old message {i}")).await?;
    }
    send(&alice_desktop.get_room(&first).context("first")?, "newest").await?;

    // Alice's phone: sliding sync found through /versions.
    let phone = login_sliding(&hearth, "alice", "phone").await?;
    let sync = SyncService::builder(phone.clone()).build().await?;
    sync.start().await;
    let room_list = sync.room_list_service().all_rooms().await?;
    let loading = room_list.loading_state();
    until("the room list to load with three rooms", || {
        let state = loading.get();
        async move { Ok(matches!(state, RoomListLoadingState::Loaded { maximum_number_of_rooms: Some(3) })) }
    })
    .await?;
    until("the rooms in order of activity", || {
        let stamps = [stamp(&phone, &first), stamp(&phone, &second), stamp(&phone, &third)];
        async move { Ok(stamps[0] > stamps[1] && stamps[1] > stamps[2] && stamps[2] > 0) }
    })
    .await?;
    // A message moves the oldest room to the top.
    send(&alice_desktop.get_room(&third).context("third")?, "now third is busy").await?;
    until("the third room at the top", || {
        let (top, other) = (stamp(&phone, &third), stamp(&phone, &first));
        async move { Ok(top > other) }
    })
    .await?;

    // The timeline pages back to the room's creation through /messages
    // from the prev_batch sliding sync gave.
    let timeline = phone.get_room(&second).context("second on the phone")?.timeline().await?;
    let mut at_start = false;
    for _ in 0..10 {
        if timeline.paginate_backwards(20).await? {
            at_start = true;
            break;
        }
    }
    ensure!(at_start, "the timeline never reached the room's start");
    let shown = texts(&timeline).await;
    let expected: Vec<String> = (0..30).map(|i| format!("old message {i}")).collect();
    ensure!(shown == expected, "the whole history in order: {shown:?}");

    // An encrypted DM between Bob's phone and Alice's, both on sliding
    // sync: each decrypts the other with room keys that came as to-device
    // messages on its encryption connection.
    let bob_phone = login_sliding(&hearth, "bob", "bob's phone").await?;
    let bob_sync = SyncService::builder(bob_phone.clone()).build().await?;
    bob_sync.start().await;
    let dm = bob_phone.create_dm(phone.user_id().context("alice")?).await?;
    let dm_id = dm.room_id().to_owned();
    until("the invite on alice's phone", || {
        let invited = phone.get_room(&dm_id).is_some_and(|r| r.state() == matrix_sdk::RoomState::Invited);
        async move { Ok(invited) }
    })
    .await?;
    phone.join_room_by_id(&dm_id).await?;
    until("alice's join on bob's phone", || {
        let count = dm.joined_members_count();
        async move { Ok(count == 2) }
    })
    .await?;
    let bob_timeline = dm.timeline().await?;
    bob_timeline.send(RoomMessageEventContent::text_plain("for alice's eyes").into()).await?;
    let alice_timeline = phone.get_room(&dm_id).context("the DM on alice's phone")?.timeline().await?;
    until("alice's phone to decrypt bob's message", || {
        let timeline = &alice_timeline;
        async move { Ok(texts(timeline).await.contains(&"for alice's eyes".to_owned())) }
    })
    .await?;
    alice_timeline.send(RoomMessageEventContent::text_plain("and for bob's").into()).await?;
    until("bob's phone to decrypt alice's answer", || {
        let timeline = &bob_timeline;
        async move { Ok(texts(timeline).await.contains(&"and for bob's".to_owned())) }
    })
    .await?;
    let encrypted = phone.get_room(&dm_id).context("dm")?.latest_encryption_state().await?.is_encrypted();
    ensure!(encrypted, "the DM is encrypted");
    bob_sync.stop().await;
    sync.stop().await;
    Ok(())
}
