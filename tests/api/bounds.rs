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
