//! Retention and expiry: a room's m.room.retention prunes its old messages'
//! content (and their media) while the room stays usable and `/messages`
//! works; an admin's history purge; old notifications deleted.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::{TestServer, create_room, join, put_state, send, urlencode},
    media::{admin_of, uploaded},
};

/// Waits for the newest job of `action` to end; its record.
async fn job_done(s: &TestServer, token: &str, action: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) =
            s.get(&format!("/_synapse/admin/v1/scheduled_tasks?action_name={action}"), Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if let Some(job) = body["scheduled_tasks"].as_array().and_then(|t| t.last())
            && matches!(job["status"].as_str(), Some("complete" | "failed"))
        {
            return job.clone();
        }
        assert!(std::time::Instant::now() < deadline, "the {action} job never ended: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn body_of(s: &TestServer, token: &str, room: &str, event: &str) -> Value {
    let (status, body) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", urlencode(event)), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["content"].clone()
}

#[tokio::test]
async fn retention_prunes_old_content_and_the_room_stays_usable() {
    let s = TestServer::start_with(|c| {
        c.registration.shared_secret = Some("s3cret".into());
        c.retention.enabled = true;
        c.retention.notification_lifetime = std::time::Duration::from_millis(1);
    })
    .await;
    let root = admin_of(&s).await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Ephemeral"})).await;
    join(&s, &bob, &room).await;
    put_state(&s, &alice, &room, "m.room.retention", json!({"max_lifetime": 1})).await;
    let media = uploaded(&s, &alice, "text/plain", b"a file".to_vec()).await;
    let mxc = format!("mxc://{}/{media}", s.config.server_name);
    let (_, file) = s
        .put(
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/f1"),
            Some(&alice.token),
            json!({"msgtype": "m.file", "body": "notes.txt", "url": mxc}),
        )
        .await;
    let file = file["event_id"].as_str().unwrap().to_owned();
    let mut old = Vec::new();
    for i in 0..3 {
        let (_, sent) = send(&s, &alice, &room, &format!("o{i}"), &format!("secret {i}")).await;
        old.push(sent["event_id"].as_str().unwrap().to_owned());
    }
    let (status, notes) = s.get("/_matrix/client/v3/notifications", Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!notes["notifications"].as_array().unwrap().is_empty(), "bob was notified: {notes}");

    // The pass (what runs hourly), started by an admin.
    let resp = s.post("/_hearth/admin/v1/retention/run", Some(&alice.token), json!({})).await;
    assert_eq!(resp.0, StatusCode::FORBIDDEN);
    let (status, started) = s.post("/_hearth/admin/v1/retention/run", Some(&root.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let job = job_done(&s, &root.token, "retention").await;
    assert_eq!(job["status"], "complete", "{job}");
    assert!(job["result"]["events_pruned"].as_u64().unwrap() >= 4, "{job}");
    assert_eq!(job["result"]["media_deleted"], 1, "{job}");
    assert_eq!(job["progress"]["done"], job["progress"]["total"]);

    // Old messages are stubs; their media is gone; state stays.
    for event in old.iter().chain([&file]) {
        assert_eq!(body_of(&s, &bob.token, &room, event).await, json!({}), "{event}");
    }
    let download = s
        .http
        .get(format!("{}/_matrix/client/v1/media/download/{}/{media}", s.base, s.config.server_name))
        .bearer_auth(&bob.token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::NOT_FOUND);
    let (_, name) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"), Some(&bob.token)).await;
    assert_eq!(name["name"], "Ephemeral");
    let (_, policy) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.retention/"), Some(&bob.token)).await;
    assert_eq!(policy["max_lifetime"], 1);

    // The room goes on: sends work, /messages pages through stubs and new.
    let (status, fresh) = send(&s, &bob, &room, "n1", "new message").await;
    assert_eq!(status, StatusCode::OK);
    let (status, messages) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{messages}");
    let text = messages.to_string();
    assert!(text.contains("new message") && text.contains(fresh["event_id"].as_str().unwrap()), "{text}");
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains(&old[0]), "the stubs are still in the timeline: {text}");
    // Old notifications went.
    let (_, notes) = s.get("/_matrix/client/v3/notifications", Some(&bob.token)).await;
    assert!(!notes.to_string().contains("secret"), "{notes}");
}

#[tokio::test]
async fn admins_purge_history_before_an_event() {
    let s = TestServer::start_with(|c| c.registration.shared_secret = Some("s3cret".into())).await;
    let root = admin_of(&s).await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    let mut sent = Vec::new();
    for i in 0..4 {
        let (_, body) = send(&s, &alice, &room, &format!("m{i}"), &format!("message {i}")).await;
        sent.push(body["event_id"].as_str().unwrap().to_owned());
    }
    let path = format!("/_synapse/admin/v1/purge_history/{room}");
    let resp = s.post(&path, Some(&root.token), json!({})).await;
    assert_eq!(
        (resp.0, resp.1["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON")),
        "{}",
        resp.1
    );
    let resp = s.post(&path, Some(&root.token), json!({"purge_up_to_event_id": "$nope"})).await;
    assert_eq!(resp.0, StatusCode::NOT_FOUND);

    // Local users' events are kept unless asked.
    let (status, body) =
        s.post(&format!("{path}/{}", urlencode(&sent[3])), Some(&root.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let purge = body["purge_id"].as_str().unwrap().to_owned();
    job_done(&s, &root.token, "purge_history").await;
    let (_, status_body) =
        s.get(&format!("/_synapse/admin/v1/purge_history_status/{purge}"), Some(&root.token)).await;
    assert_eq!(status_body["status"], "complete");
    assert_eq!(body_of(&s, &alice.token, &room, &sent[0]).await["body"], "message 0");

    let (status, _) = s
        .post(&path, Some(&root.token), json!({"purge_up_to_event_id": sent[3], "delete_local_events": true}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while body_of(&s, &alice.token, &room, &sent[0]).await != json!({}) {
        assert!(std::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        body_of(&s, &alice.token, &room, &sent[3]).await["body"],
        "message 3",
        "the point itself stays"
    );
    let (status, _) = s.get("/_synapse/admin/v1/purge_history_status/unknown", Some(&root.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rooms_without_activity_are_shut_down_and_purged() {
    let s = TestServer::start_with(|c| {
        c.registration.shared_secret = Some("s3cret".into());
        c.retention.inactive_rooms_after = Some(std::time::Duration::from_millis(1));
    })
    .await;
    let root = admin_of(&s).await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({"preset": "private_chat", "name": "Quiet"})).await;
    let (status, started) = s.post("/_hearth/admin/v1/retention/run", Some(&root.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let job = job_done(&s, &root.token, "retention").await;
    assert_eq!(job["status"], "complete", "{job}");
    assert_eq!(job["result"]["rooms_shut_down"], json!([room]), "{job}");
    assert_eq!(job["result"]["rooms_failed"], 0, "{job}");
    let (status, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(joined["joined_rooms"], json!([]), "{joined}");
    let (status, body) = s.get(&format!("/_synapse/admin/v1/rooms/{room}"), Some(&root.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "purged: {body}");
    // Alice goes on: a new room is not touched until it too is idle.
    let (status, _) = s.post("/_matrix/client/v3/createRoom", Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
}
