//! The built-in web console, driven in headless Chromium
//! (`tests/console/console.mjs`, playwright-core): log-in refused to a
//! non-admin; the overview's figures; accounts created and deactivated;
//! registration tokens and room invite codes; reports acted on from the
//! queue; a room shut down; jobs. What the browser did is then checked over the API.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::{PASSWORD, TestServer, create_room, join, send, urlencode},
    media::admin_of,
};

#[tokio::test]
async fn console_off_unless_configured() {
    let s = TestServer::start().await;
    let response = s.http.get(format!("{}/_hearth/console/", s.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
}

#[tokio::test]
async fn the_console_in_a_browser() {
    let s = TestServer::start_with(|c| {
        c.registration.shared_secret = Some("s3cret".into());
        c.console.enabled = true;
    })
    .await;
    let root = admin_of(&s).await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Town square"})).await;
    join(&s, &bob, &room).await;
    let (_, pills) = send(&s, &bob, &room, "p1", "buy cheap pills").await;
    let pills = pills["event_id"].as_str().unwrap().to_owned();
    let (_, rude) = send(&s, &bob, &room, "p2", "second offence").await;
    let rude = rude["event_id"].as_str().unwrap().to_owned();
    for (event, reason) in [(&pills, "spam"), (&rude, "rude")] {
        let path = format!("/_matrix/client/v3/rooms/{room}/report/{}", urlencode(event));
        let (status, body) = s.post(&path, Some(&alice.token), json!({"reason": reason})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = s
        .post(
            "/_synapse/admin/v1/registration_tokens/new",
            Some(&root.token),
            json!({"token": "welcome", "uses_allowed": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let back_room = create_room(&s, &alice, json!({"preset": "private_chat", "name": "Back room"})).await;
    let (status, made) = s
        .post(
            &format!("/_hearth/client/v1/rooms/{back_room}/invite_codes"),
            Some(&alice.token),
            json!({"max_uses": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{made}");
    let invite_code = made["code"].as_str().unwrap().to_owned();

    let shots = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/console.mjs");
    let base = s.base.clone();
    let shots_dir = shots.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("CONSOLE_URL", format!("{base}/_hearth/console/"))
            .env("ADMIN_USER", "root")
            .env("ADMIN_PASSWORD", "pw")
            .env("USER_USER", "alice")
            .env("USER_PASSWORD", PASSWORD)
            .env("SCREENSHOTS", &shots_dir)
            .output()
    })
    .await
    .unwrap()
    .expect("node runs (make test installs it and tests/console's packages)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the console's browser test failed:\n{stdout}\n{stderr}");
    for view in ["overview", "users", "tokens", "reports", "rooms", "jobs"] {
        let shot = shots.path().join(format!("{view}.png"));
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "no screenshot of {view}: {stdout}");
    }

    // What the clicks did, seen through the API.
    // (alice left with the shutdown: the admin's view of the room.)
    let context = format!("/_synapse/admin/v1/rooms/{room}/context/{}?limit=0", urlencode(&pills));
    let (status, redacted) = s.get(&context, Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK, "{redacted}");
    let redacted = &redacted["event"];
    assert_eq!(redacted["content"], json!({}), "the spam is redacted: {redacted}");
    assert!(redacted["unsigned"]["redacted_because"].is_object(), "{redacted}");
    let (status, reports) = s.get("/_synapse/admin/v1/event_reports", Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reports["total"], 0, "both reports are closed: {reports}");
    let (status, carol) =
        s.get(&format!("/_synapse/admin/v2/users/@carol:{}", s.config.server_name), Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK, "{carol}");
    assert_eq!(carol["deactivated"], true, "{carol}");
    let (status, tokens) = s.get("/_synapse/admin/v1/registration_tokens", Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = tokens["registration_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["token"].as_str())
        .collect();
    assert_eq!(names, ["welcome"], "spring was made and revoked: {tokens}");
    let (status, codes) = s.get("/_hearth/admin/v1/invite_codes", Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK);
    let first = &codes["invite_codes"][0];
    assert_eq!(
        (codes["total"].as_u64(), first["code"].as_str(), first["revoked"].as_bool()),
        (Some(1), Some(invite_code.as_str()), Some(true)),
        "the console revoked the invite code: {codes}"
    );
    let (status, block) = s.get(&format!("/_synapse/admin/v1/rooms/{room}/block"), Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(block["block"], true, "the room was shut down and blocked: {block}");
    let (status, joined) = s.get("/_matrix/client/v3/joined_rooms", Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!joined["joined_rooms"].as_array().unwrap().iter().any(|r| r == room.as_str()), "{joined}");
}

/// The report actions over the API: who may use them, and what each does.
#[tokio::test]
async fn report_actions() {
    let s = TestServer::start_with(|c| c.registration.shared_secret = Some("s3cret".into())).await;
    let root = admin_of(&s).await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let mut reports = Vec::new();
    for i in 0..3 {
        let (_, sent) = send(&s, &bob, &room, &format!("t{i}"), "spam").await;
        let event = sent["event_id"].as_str().unwrap().to_owned();
        let path = format!("/_matrix/client/v3/rooms/{room}/report/{}", urlencode(&event));
        let (status, _) = s.post(&path, Some(&alice.token), json!({"reason": "spam"})).await;
        assert_eq!(status, StatusCode::OK);
        reports.push(event);
    }
    let (_, list) = s.get("/_synapse/admin/v1/event_reports?dir=f", Some(&root.token)).await;
    let ids: Vec<u64> =
        list["event_reports"].as_array().unwrap().iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{list}");
    let act = |id: u64| format!("/_hearth/admin/v1/event_reports/{id}/action");

    let (status, body) = s.post(&act(ids[0]), Some(&alice.token), json!({"action": "redact"})).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")), "{body}");
    let (status, body) = s.post(&act(ids[0]), None, json!({"action": "redact"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = s.post(&act(ids[0]), Some(&root.token), json!({"action": "explode"})).await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, body) = s.post(&act(9999), Some(&root.token), json!({"action": "dismiss"})).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")), "{body}");
    let (_, still) = s.get("/_synapse/admin/v1/event_reports", Some(&root.token)).await;
    assert_eq!(still["total"], 3, "refused actions changed nothing: {still}");

    // Kick, as the room's most powerful local member (alice, its creator).
    let (status, body) = s.post(&act(ids[1]), Some(&root.token), json!({"action": "kick"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let member = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/{}", urlencode(&bob.user_id));
    let (status, state) = s.get(&member, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["membership"], "leave", "{state}");
    join(&s, &bob, &room).await;
    let (status, body) = s.post(&act(ids[2]), Some(&root.token), json!({"action": "ban"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, state) = s.get(&member, Some(&alice.token)).await;
    assert_eq!(state["membership"], "ban", "{state}");
    let (status, body) = s.post(&act(ids[0]), Some(&root.token), json!({"action": "dismiss"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, event) = s
        .get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", urlencode(&reports[0])), Some(&alice.token))
        .await;
    assert_eq!(event["content"]["body"], "spam", "dismissing leaves the event: {event}");
    let (_, none) = s.get("/_synapse/admin/v1/event_reports", Some(&root.token)).await;
    assert_eq!(none["total"], 0, "{none}");

    // The admin's view of the room, without being in it.
    let context = format!("/_synapse/admin/v1/rooms/{room}/context/{}?limit=4", urlencode(&reports[1]));
    let (status, body) = s.get(&context, Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["event"]["event_id"], reports[1].as_str(), "{body}");
    assert!(
        body["events_before"].as_array().unwrap().iter().any(|e| e["event_id"] == reports[0].as_str()),
        "{body}"
    );
    assert!(!body["events_after"].as_array().unwrap().is_empty(), "{body}");
    let (status, body) = s.get(&context, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, page) =
        s.get(&format!("/_synapse/admin/v1/rooms/{room}/messages?dir=b&limit=2"), Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["chunk"].as_array().unwrap().len(), 2, "{page}");
    let end = page["end"].as_str().unwrap();
    let (status, next) = s
        .get(
            &format!("/_synapse/admin/v1/rooms/{room}/messages?dir=b&limit=100&from={}", urlencode(end)),
            Some(&root.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let all: Vec<&Value> =
        page["chunk"].as_array().unwrap().iter().chain(next["chunk"].as_array().unwrap()).collect();
    assert!(all.iter().any(|e| e["type"] == "m.room.create"), "paged back to the start: {next}");
    let (status, body) =
        s.get("/_synapse/admin/v1/rooms/!nowhere:localhost/messages", Some(&root.token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// synapse-admin, the most used admin web UI, driven in headless Chromium
/// (`tests/console/synapse_admin.mjs`): log in, list users, create one,
/// deactivate one, list rooms, delete one, list reports. It is not
/// published on the npm registry, so CI cannot install it: run with
/// `SYNAPSE_ADMIN_DIST=<its built files> cargo test --test api -- --ignored synapse_admin`
/// (how to build them: docs/ADMINISTRATION.md).
#[tokio::test]
#[ignore = "needs SYNAPSE_ADMIN_DIST, synapse-admin's built files (not on npm)"]
async fn synapse_admin_in_a_browser() {
    let dist =
        std::env::var("SYNAPSE_ADMIN_DIST").expect("SYNAPSE_ADMIN_DIST names synapse-admin's built files");
    let s = TestServer::start_with(|c| c.registration.shared_secret = Some("s3cret".into())).await;
    let root = admin_of(&s).await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = create_room(&s, &alice, json!({"preset": "public_chat", "name": "Doomed room"})).await;
    join(&s, &bob, &room).await;
    let (_, pills) = send(&s, &bob, &room, "p1", "buy cheap pills").await;
    let path =
        format!("/_matrix/client/v3/rooms/{room}/report/{}", urlencode(pills["event_id"].as_str().unwrap()));
    let (status, body) = s.post(&path, Some(&alice.token), json!({"reason": "spam"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let shots = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/synapse_admin.mjs");
    let (base, server_name, shots_dir) =
        (s.base.clone(), s.config.server_name.to_string(), shots.path().to_owned());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("HS_URL", base)
            .env("SYNAPSE_ADMIN_DIST", dist)
            .env("SERVER_NAME", server_name)
            .env("ADMIN_USER", "root")
            .env("ADMIN_PASSWORD", "pw")
            .env("SCREENSHOTS", &shots_dir)
            .output()
    })
    .await
    .unwrap()
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "synapse-admin's browser test failed:\n{stdout}\n{stderr}");

    // What the clicks did, seen through the API.
    let user = |name: &str| format!("/_synapse/admin/v2/users/@{name}:{}", s.config.server_name);
    let (status, dave) = s.get(&user("dave"), Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK, "{dave}");
    assert_eq!(dave["displayname"], "Dave", "{dave}");
    let (status, login) = s.login("dave", "dave-pass-1").await;
    assert_eq!(status, StatusCode::OK, "dave logs in with the password set in the UI: {login}");
    let (_, bob_now) = s.get(&user("bob"), Some(&root.token)).await;
    assert_eq!(
        (bob_now["deactivated"].as_bool(), bob_now["erased"].as_bool()),
        (Some(true), Some(true)),
        "{bob_now}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _) = s.get(&format!("/_synapse/admin/v1/rooms/{room}"), Some(&root.token)).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the room was never deleted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
