//! Push rules, unread counts in /sync, and /notifications.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

async fn counts(s: &TestServer, who: &Session, room: &str) -> (u64, u64) {
    let (status, body) = s.get("/_matrix/client/v3/sync?timeout=0", Some(&who.token)).await;
    assert_eq!(status, StatusCode::OK);
    let unread = &body["rooms"]["join"][room]["unread_notifications"];
    (unread["notification_count"].as_u64().unwrap_or(0), unread["highlight_count"].as_u64().unwrap_or(0))
}

async fn send_content(s: &TestServer, who: &Session, room: &str, txn: &str, content: Value) -> String {
    let (status, body) = s
        .put(&format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"), Some(&who.token), content)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn unread_counts_follow_push_rules_and_clear_on_read() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    for who in [&bob, &carol] {
        join(&s, who, &room).await;
    }
    assert_eq!(counts(&s, &alice, &room).await, (0, 0), "joins do not notify");

    send_content(&s, &bob, &room, "b1", json!({"msgtype": "m.text", "body": "hello all"})).await;
    assert_eq!(counts(&s, &alice, &room).await, (1, 0));
    // A mention highlights.
    let mention = json!({"msgtype": "m.text", "body": "alice?", "m.mentions": {"user_ids": [alice.user_id]}});
    let last = send_content(&s, &bob, &room, "b2", mention).await;
    assert_eq!(counts(&s, &alice, &room).await, (2, 1));
    assert_eq!(counts(&s, &carol, &room).await, (2, 0), "carol was not mentioned");
    assert_eq!(counts(&s, &bob, &room).await, (0, 0), "no notifications for one's own events");
    // Notices do not notify.
    send_content(&s, &bob, &room, "b3", json!({"msgtype": "m.notice", "body": "bot"})).await;
    assert_eq!(counts(&s, &alice, &room).await, (2, 1));

    // Reading up to the mention clears both counts.
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{last}"),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counts(&s, &alice, &room).await, (0, 0));
    // So does sending: carol's own message marks what came before as read.
    send_content(&s, &carol, &room, "c1", json!({"msgtype": "m.text", "body": "caught up"})).await;
    assert_eq!(counts(&s, &carol, &room).await, (0, 0));

    // /notifications lists what notified alice, newest first, with `read`.
    let (status, listed) = s.get("/_matrix/client/v3/notifications", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let list = listed["notifications"].as_array().unwrap();
    let bodies: Vec<_> = list.iter().map(|n| n["event"]["content"]["body"].clone()).collect();
    assert_eq!(bodies, [json!("caught up"), json!("alice?"), json!("hello all")]);
    assert_eq!(list[0]["read"], false);
    assert_eq!(list[1]["read"], true);
    assert_eq!(list[1]["room_id"], room.as_str());
    let (_, highlights) = s.get("/_matrix/client/v3/notifications?only=highlight", Some(&alice.token)).await;
    assert_eq!(highlights["notifications"].as_array().unwrap().len(), 1);
    let (_, paged) = s.get("/_matrix/client/v3/notifications?limit=1", Some(&alice.token)).await;
    let next = paged["next_token"].as_str().expect("a next page");
    let (_, page2) =
        s.get(&format!("/_matrix/client/v3/notifications?limit=1&from={next}"), Some(&alice.token)).await;
    assert_eq!(page2["notifications"][0]["event"]["content"]["body"], "alice?");
}

#[tokio::test]
async fn rules_can_mute_a_room_and_are_managed_over_the_api() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;

    let (status, rules) = s.get("/_matrix/client/v3/pushrules/", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    let overrides: Vec<_> =
        rules["global"]["override"].as_array().unwrap().iter().map(|r| r["rule_id"].clone()).collect();
    assert_eq!(overrides[0], ".m.rule.master");
    assert!(overrides.contains(&json!(".m.rule.is_user_mention")));
    let underride: Vec<_> =
        rules["global"]["underride"].as_array().unwrap().iter().map(|r| r["rule_id"].clone()).collect();
    assert!(underride.contains(&json!(".m.rule.room_one_to_one")));

    // In a two-member room, messages ring the one-to-one rule.
    send_content(&s, &bob, &room, "b1", json!({"msgtype": "m.text", "body": "dm"})).await;
    let (_, listed) = s.get("/_matrix/client/v3/notifications", Some(&alice.token)).await;
    assert!(
        listed["notifications"][0]["actions"]
            .as_array()
            .unwrap()
            .contains(&json!({"set_tweak": "sound", "value": "default"}))
    );

    // Mute the room with a room rule: nothing more notifies.
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/pushrules/global/room/{room}"),
            Some(&alice.token),
            json!({"actions": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = counts(&s, &alice, &room).await;
    send_content(&s, &bob, &room, "b2", json!({"msgtype": "m.text", "body": "muted"})).await;
    assert_eq!(counts(&s, &alice, &room).await, before);
    let (status, rule) =
        s.get(&format!("/_matrix/client/v3/pushrules/global/room/{room}"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rule["rule_id"], room.as_str());

    // Enable/disable and actions.
    let path = format!("/_matrix/client/v3/pushrules/global/room/{room}");
    assert_eq!(
        s.put(&format!("{path}/enabled"), Some(&alice.token), json!({"enabled": false})).await.0,
        StatusCode::OK
    );
    assert_eq!(s.get(&format!("{path}/enabled"), Some(&alice.token)).await.1["enabled"], false);
    assert_eq!(
        s.put(&format!("{path}/actions"), Some(&alice.token), json!({"actions": ["notify"]})).await.0,
        StatusCode::OK
    );
    assert_eq!(s.get(&format!("{path}/actions"), Some(&alice.token)).await.1["actions"], json!(["notify"]));
    // The rules reach sync as m.push_rules account data.
    let (_, synced) = s.get("/_matrix/client/v3/sync", Some(&alice.token)).await;
    assert!(synced["account_data"]["events"].as_array().unwrap().iter().any(|e| e["type"] == "m.push_rules"));
    assert_eq!(s.request(reqwest::Method::DELETE, &path, Some(&alice.token), None).await.0, StatusCode::OK);
    assert_error(&s.get(&path, Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // Server-default IDs are reserved; their rules cannot be deleted.
    assert_error(
        &s.put(
            "/_matrix/client/v3/pushrules/global/override/.m.rule.mine",
            Some(&alice.token),
            json!({"actions": [], "conditions": []}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    assert_error(
        &s.request(
            reqwest::Method::DELETE,
            "/_matrix/client/v3/pushrules/global/override/.m.rule.master",
            Some(&alice.token),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    assert_error(
        &s.put(
            &format!("/_matrix/client/v3/user/{}/account_data/m.push_rules", alice.user_id),
            Some(&alice.token),
            json!({}),
        )
        .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_BAD_JSON",
    );
}

#[tokio::test]
async fn threaded_receipts_clear_thread_counts_and_push_rules_reach_initial_sync() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    for who in [&bob, &carol] {
        join(&s, who, &room).await;
    }
    let root = send_content(&s, &alice, &room, "root", json!({"msgtype": "m.text", "body": "root"})).await;
    let reply = send_content(
        &s,
        &bob,
        &room,
        "b1",
        json!({"msgtype": "m.text", "body": "in thread", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
    )
    .await;
    assert_eq!(counts(&s, &carol, &room).await, (2, 0), "root and reply, without per-thread counts");
    // Carol reads the thread only: the reply no longer counts, the root does.
    let (status, _) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{reply}"),
            Some(&carol.token),
            json!({"thread_id": root}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counts(&s, &carol, &room).await, (1, 0));
    // Alice's own reply in the thread does not mark the main timeline read.
    send_content(
        &s,
        &alice,
        &room,
        "a1",
        json!({"msgtype": "m.text", "body": "me too", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
    )
    .await;
    send_content(&s, &bob, &room, "b2", json!({"msgtype": "m.text", "body": "main"})).await;
    assert_eq!(counts(&s, &alice, &room).await, (1, 0), "bob's main-timeline message still unread");

    // The default push rules are in the initial sync for a client to read.
    let (_, synced) = s.get("/_matrix/client/v3/sync", Some(&carol.token)).await;
    let rules =
        synced["account_data"]["events"].as_array().unwrap().iter().find(|e| e["type"] == "m.push_rules");
    let rules = rules.expect("m.push_rules in the initial sync");
    assert_eq!(rules["content"]["global"]["override"][0]["rule_id"], ".m.rule.master");
}

#[tokio::test]
async fn ignored_users_do_not_notify() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    s.put(
        &format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", alice.user_id),
        Some(&alice.token),
        json!({"ignored_users": {bob.user_id.clone(): {}}}),
    )
    .await;
    send_content(&s, &bob, &room, "b1", json!({"msgtype": "m.text", "body": "ignored"})).await;
    let (status, body) = s.get("/_matrix/client/v3/sync", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 0, "{body}");
}

#[tokio::test]
async fn a_redacted_message_no_longer_counts() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let oops = send_content(&s, &bob, &room, "b1", json!({"msgtype": "m.text", "body": "oops"})).await;
    assert_eq!(counts(&s, &alice, &room).await, (1, 0));
    let (status, _) =
        s.put(&format!("/_matrix/client/v3/rooms/{room}/redact/{oops}/r"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counts(&s, &alice, &room).await, (0, 0));
    let (_, listed) = s.get("/_matrix/client/v3/notifications", Some(&alice.token)).await;
    assert!(listed["notifications"].as_array().unwrap().is_empty(), "{listed}");
}

#[tokio::test]
async fn push_rule_paths_are_read_as_synapse_reads_them() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let base = "/_matrix/client/v3/pushrules";
    let (status, before) = s.get(&format!("{base}/"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);

    // Malformed paths and bodies are 400 and change nothing.
    for path in [
        "/global",
        "/global/room",
        "/not_a_scope/",
        "/global/not_a_template/",
        "/global/override/.m.rule.master/not_an_attr",
    ] {
        assert_error(
            &s.get(&format!("{base}{path}"), Some(&alice.token)).await,
            StatusCode::BAD_REQUEST,
            "M_UNRECOGNIZED",
        );
    }
    assert_error(
        &s.get(&format!("{base}/global/override/not_a_rule"), Some(&alice.token)).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
    for (path, body) in [
        ("/", json!({})),
        ("/not_a_scope/room/%23spam:example.com", json!({"actions": ["notify"]})),
        ("/global", json!({})),
        ("/global/room", json!({})),
        ("/global/room/", json!({"actions": ["notify"]})),
        ("/global/not_a_template/foo", json!({"actions": ["notify"]})),
        ("/global/override/my_id", json!({"actions": ["notify"]})),
        ("/global/underride/my_id", json!({"actions": ["notify"], "conditions": [{}]})),
        ("/global/content/my_id", json!({"actions": ["notify"]})),
        ("/global/room/%23my_room:example.com", json!({})),
        ("/global/room/%23my_room:example.com", json!({"actions": ["not_an_action"]})),
        ("/global/override/.m.rule.master/not_an_attr", json!({"enabled": true})),
        ("/global/override/.m.rule.master/enabled", json!({"enabled": "not a boolean"})),
    ] {
        let response = s.put(&format!("{base}{path}"), Some(&alice.token), body).await;
        assert_eq!(response.0, StatusCode::BAD_REQUEST, "PUT {path}: {}", response.1);
    }
    assert_eq!(s.get(&format!("{base}/"), Some(&alice.token)).await.1, before);

    // Room rules may have any ID (Synapse's leniency, which SyTest uses);
    // new rules come first unless placed.
    for id in ["%23a:example.com", "%23b:example.com"] {
        let (status, body) = s
            .put(&format!("{base}/global/room/{id}"), Some(&alice.token), json!({"actions": ["notify"]}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = s
        .put(
            &format!("{base}/global/room/%23c:example.com?after=%23a:example.com"),
            Some(&alice.token),
            json!({"actions": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, list) = s.get(&format!("{base}/global/room/"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<_> = list.as_array().unwrap().iter().map(|rule| rule["rule_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["#b:example.com", "#a:example.com", "#c:example.com"]);
    assert_eq!(list[0]["default"], false);
    assert_eq!(list[0]["enabled"], true);

    let rule = format!("{base}/global/room/%23a:example.com");
    assert_eq!(
        s.put(&format!("{rule}/enabled"), Some(&alice.token), json!({"enabled": false})).await.0,
        StatusCode::OK
    );
    assert_eq!(s.get(&format!("{rule}/enabled"), Some(&alice.token)).await.1, json!({"enabled": false}));
    assert_eq!(s.get(&format!("{rule}/actions"), Some(&alice.token)).await.1, json!({"actions": ["notify"]}));

    // Every kind is listed, empty or not, and the sync copy agrees.
    let (_, global) = s.get(&format!("{base}/global/"), Some(&alice.token)).await;
    assert_eq!(global["sender"], json!([]));
    let (_, synced) = s.get("/_matrix/client/v3/sync", Some(&alice.token)).await;
    let pushed = synced["account_data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.push_rules")
        .unwrap();
    assert_eq!(pushed["content"]["global"], global);

    assert_eq!(s.request(reqwest::Method::DELETE, &rule, Some(&alice.token), None).await.0, StatusCode::OK);
    assert_error(&s.get(&rule, Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &s.request(reqwest::Method::DELETE, &rule, Some(&alice.token), None).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn a_body_naming_the_user_highlights_unless_the_event_has_mentions() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let carol = s.register("carol").await;
    let room = create_room(&s, &bob, json!({"preset": "public_chat"})).await;
    join(&s, &alice, &room).await;
    join(&s, &carol, &room).await;
    // Older clients and bots name users in the body only (Synapse's legacy rule).
    send_content(&s, &bob, &room, "b1", json!({"msgtype": "m.text", "body": "hey Alice, look"})).await;
    assert_eq!(counts(&s, &alice, &room).await, (1, 1));
    assert_eq!(counts(&s, &carol, &room).await, (1, 0));
    // With m.mentions, only the mentions count.
    send_content(
        &s,
        &bob,
        &room,
        "b2",
        json!({"msgtype": "m.text", "body": "alice again", "m.mentions": {}}),
    )
    .await;
    assert_eq!(counts(&s, &alice, &room).await, (2, 1));
    let (_, rules) = s.get("/_matrix/client/v3/pushrules/global/content/", Some(&alice.token)).await;
    assert!(
        rules
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.contains_user_name" && r["pattern"] == "alice")
    );
}
