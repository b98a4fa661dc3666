//! Reads cost what the page asks for, not what the room holds (review
//! §2.4): history a reader may not see, many relations, many threads and
//! a large directory each answer within a fixed amount of work.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

/// More than one scan budget (500 rows) of history.
const HIDDEN: usize = 600;

async fn fill(s: &TestServer, who: &Session, room: &str, n: usize) {
    for i in 0..n {
        let (status, body) = send(s, who, room, &format!("fill{i}"), &format!("message {i}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

fn chunk(body: &Value) -> &Vec<Value> {
    body["chunk"].as_array().unwrap_or_else(|| panic!("no chunk: {body}"))
}

#[tokio::test]
async fn a_late_joiner_pages_through_hidden_history_in_bounded_steps() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    put_state(&s, &alice, &room, "m.room.history_visibility", json!({"history_visibility": "joined"})).await;
    let hidden_from = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    fill(&s, &alice, &room, HIDDEN).await;
    join(&s, &bob, &room).await;

    // One page stops after the budget with a token to go on, instead of
    // reading the whole history to fill `limit`.
    let path = |from: &str| format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=10{from}");
    let (status, first) = s.get(&path(""), Some(&bob.token)).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(chunk(&first).len() < 10, "{first}");
    assert!(first["end"].is_string(), "the page stopped early and says where to go on: {first}");
    // Following the tokens reaches the start, showing nothing hidden.
    let mut seen: Vec<Value> = chunk(&first).clone();
    let mut end = first["end"].as_str().map(str::to_owned);
    let mut pages = 1;
    while let Some(from) = end {
        let (status, page) = s.get(&path(&format!("&from={from}")), Some(&bob.token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(chunk(&page).iter().cloned());
        end = page["end"].as_str().map(str::to_owned);
        pages += 1;
        assert!(pages < 10, "pagination must end");
    }
    assert!(seen.iter().all(|e| e["type"] != "m.room.message"), "no hidden message is shown: {seen:?}");
    assert!(seen.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()));

    // timestamp_to_event looks at the events nearest the time only: going
    // forwards from the hidden messages, the nearest are all hidden.
    let (status, latest) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={}&dir=b", u64::MAX >> 12),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    assert!(latest["event_id"].is_string());
    let (status, body) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={hidden_from}&dir=f"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // Alice, who sees it all, finds the room's first event going forwards.
    let (status, first_event) = s
        .get(&format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts=0&dir=f"), Some(&alice.token))
        .await;
    assert_eq!(status, StatusCode::OK, "{first_event}");
    let (status, create) = s
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create/?format=event"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{create}");
    assert_eq!(first_event["event_id"], create["event_id"]);
}

#[tokio::test]
async fn relations_one_may_not_see_are_paged_in_bounded_steps() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let (status, parent) = send(&s, &alice, &room, "parent", "react to me").await;
    assert_eq!(status, StatusCode::OK);
    let parent = parent["event_id"].as_str().unwrap().to_owned();
    let (status, _) =
        s.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // Reactions bob, gone, may not see.
    for i in 0..HIDDEN {
        let (status, body) = s
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.reaction/r{i}"),
                Some(&alice.token),
                json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": format!("k{i}")}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let parent_enc = urlencode(&parent);
    for path in [
        format!("/_matrix/client/v1/rooms/{room}/relations/{parent_enc}?limit=10"),
        format!("/_matrix/client/v1/rooms/{room}/relations/{parent_enc}/m.annotation?limit=10"),
    ] {
        let (status, page) = s.get(&path, Some(&bob.token)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(chunk(&page).is_empty(), "{page}");
        let next = page["next_batch"].as_str().expect("the page stopped early and says where to go on");
        let (status, rest) = s.get(&format!("{path}&from={next}"), Some(&bob.token)).await;
        assert_eq!(status, StatusCode::OK, "{rest}");
        assert!(chunk(&rest).is_empty() && rest["next_batch"].is_null(), "{rest}");
    }
    // Alice sees them all, newest first, ten at a time.
    let (status, page) = s
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/relations/{parent_enc}/m.annotation?limit=10"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(chunk(&page).len(), 10);
    assert_eq!(chunk(&page)[0]["content"]["m.relates_to"]["key"], format!("k{}", HIDDEN - 1));
    assert!(page["next_batch"].is_string());
}

/// Thread summaries are kept as counts: a redacted reply leaves the count,
/// and the latest reply before it becomes the latest again.
#[tokio::test]
async fn redacted_thread_replies_leave_the_summary() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let (_, root) = send(&s, &alice, &room, "root", "root").await;
    let root = root["event_id"].as_str().unwrap().to_owned();
    let mut replies = Vec::new();
    for i in 0..2 {
        let (status, body) = s
            .put(
                &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}"),
                Some(&alice.token),
                json!({"msgtype": "m.text", "body": format!("reply {i}"), "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        replies.push(body["event_id"].as_str().unwrap().to_owned());
    }
    let event_path = format!("/_matrix/client/v3/rooms/{room}/event/{}", urlencode(&root));
    let summary = || async {
        let (status, event) = s.get(&event_path, Some(&alice.token)).await;
        assert_eq!(status, StatusCode::OK, "{event}");
        event["unsigned"]["m.relations"]["m.thread"].clone()
    };
    let thread = summary().await;
    assert_eq!(thread["count"], 2, "{thread}");
    assert_eq!(thread["latest_event"]["event_id"], replies[1]);
    let redact = |event: String, txn: &'static str| {
        let path = format!("/_matrix/client/v3/rooms/{room}/redact/{}/{txn}", urlencode(&event));
        let (s, token) = (&s, &alice.token);
        async move {
            let (status, body) = s.put(&path, Some(token), json!({})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    redact(replies[1].clone(), "x1").await;
    let thread = summary().await;
    assert_eq!(thread["count"], 1, "{thread}");
    assert_eq!(thread["latest_event"]["event_id"], replies[0]);
    redact(replies[0].clone(), "x2").await;
    assert!(summary().await.is_null());
    let (status, threads) =
        s.get(&format!("/_matrix/client/v1/rooms/{room}/threads"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{threads}");
    assert!(chunk(&threads).is_empty(), "{threads}");
}
