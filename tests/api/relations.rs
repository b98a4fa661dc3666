//! Relations: edits, reactions, references and threads; /relations and
//! /threads; bundled aggregations.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;

async fn post_event(
    s: &TestServer,
    who: &Session,
    room: &str,
    kind: &str,
    txn: &str,
    content: Value,
) -> (StatusCode, Value) {
    s.put(&format!("/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}"), Some(&who.token), content).await
}

async fn sent(s: &TestServer, who: &Session, room: &str, kind: &str, txn: &str, content: Value) -> String {
    let (status, body) = post_event(s, who, room, kind, txn, content).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["event_id"].as_str().unwrap().to_owned()
}

async fn event(s: &TestServer, who: &Session, room: &str, id: &str) -> Value {
    let (status, body) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{id}"), Some(&who.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

async fn setup() -> (TestServer, Session, Session, String) {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    (s, alice, bob, room)
}

#[tokio::test]
async fn the_latest_valid_edit_is_bundled() {
    let (s, alice, bob, room) = setup().await;
    let original = sent(&s, &alice, &room, "m.room.message", "o", text("teh")).await;
    let edit = |body: &str| {
        json!({"msgtype": "m.text", "body": format!("* {body}"), "m.new_content": text(body),
               "m.relates_to": {"rel_type": "m.replace", "event_id": original}})
    };
    sent(&s, &alice, &room, "m.room.message", "e1", edit("the")).await;
    let second = sent(&s, &alice, &room, "m.room.message", "e2", edit("the!")).await;
    // Bob cannot edit alice's message: ignored.
    sent(&s, &bob, &room, "m.room.message", "e3", edit("hijacked")).await;

    let served = event(&s, &bob, &room, &original).await;
    assert_eq!(served["content"]["body"], "teh", "the original content is never rewritten");
    let replace = &served["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(replace["event_id"], second.as_str(), "{served}");
    assert_eq!(replace["content"]["m.new_content"]["body"], "the!");
    // /messages bundles too.
    let (_, page) =
        s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"), Some(&bob.token)).await;
    let listed =
        page["chunk"].as_array().unwrap().iter().find(|e| e["event_id"] == original.as_str()).unwrap();
    assert_eq!(listed["unsigned"]["m.relations"]["m.replace"]["event_id"], second.as_str());
}

#[tokio::test]
async fn one_reaction_per_key_until_redacted() {
    let (s, alice, bob, room) = setup().await;
    let target = sent(&s, &alice, &room, "m.room.message", "t", text("react to me")).await;
    let thumbs = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "👍"}});
    let first = sent(&s, &bob, &room, "m.reaction", "r1", thumbs.clone()).await;
    assert_error(
        &post_event(&s, &bob, &room, "m.reaction", "r2", thumbs.clone()).await,
        StatusCode::BAD_REQUEST,
        "M_DUPLICATE_ANNOTATION",
    );
    // Another key, or another sender, is fine.
    let party = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "🎉"}});
    sent(&s, &bob, &room, "m.reaction", "r3", party).await;
    sent(&s, &alice, &room, "m.reaction", "r4", thumbs.clone()).await;
    // Once redacted, the same reaction may be sent again.
    let (status, _) = s
        .put(&format!("/_matrix/client/v3/rooms/{room}/redact/{first}/x"), Some(&bob.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    sent(&s, &bob, &room, "m.reaction", "r5", thumbs).await;
    // Annotations are not aggregated by the server.
    let served = event(&s, &alice, &room, &target).await;
    assert!(served["unsigned"].get("m.relations").is_none(), "{served}");

    // Relations need a known parent in the same room, and annotations a key.
    let nowhere = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$nowhere", "key": "x"}});
    assert_error(
        &post_event(&s, &bob, &room, "m.reaction", "r6", nowhere).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
    let keyless = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target}});
    assert_error(
        &post_event(&s, &bob, &room, "m.reaction", "r7", keyless).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn threads_are_summarised_and_listed() {
    let (s, alice, bob, room) = setup().await;
    let carol = s.register("carol").await;
    join(&s, &carol, &room).await;
    let root = sent(&s, &alice, &room, "m.room.message", "root", text("thread root")).await;
    let in_thread = |body: &str| json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    let reply = sent(&s, &bob, &room, "m.room.message", "t1", in_thread("first")).await;
    let latest = sent(&s, &alice, &room, "m.room.message", "t2", in_thread("second")).await;

    let served = event(&s, &carol, &room, &root).await;
    let thread = &served["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], 2, "{served}");
    assert_eq!(thread["latest_event"]["event_id"], latest.as_str());
    assert_eq!(thread["current_user_participated"], false, "carol took no part");
    let for_bob = event(&s, &bob, &room, &root).await;
    assert_eq!(for_bob["unsigned"]["m.relations"]["m.thread"]["current_user_participated"], true);

    let (status, listed) =
        s.get(&format!("/_matrix/client/v1/rooms/{room}/threads"), Some(&carol.token)).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["chunk"][0]["event_id"], root.as_str());
    assert_eq!(listed["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    let (_, mine) = s
        .get(&format!("/_matrix/client/v1/rooms/{room}/threads?include=participated"), Some(&carol.token))
        .await;
    assert!(mine["chunk"].as_array().unwrap().is_empty());
    let (_, bobs) = s
        .get(&format!("/_matrix/client/v1/rooms/{room}/threads?include=participated"), Some(&bob.token))
        .await;
    assert_eq!(bobs["chunk"].as_array().unwrap().len(), 1);

    // No thread may start from an event that relates to another.
    let nested = json!({"msgtype": "m.text", "body": "nested", "m.relates_to": {"rel_type": "m.thread", "event_id": reply}});
    assert_error(
        &post_event(&s, &carol, &room, "m.room.message", "n", nested).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );

    // Unread counts per thread when asked for.
    let mention = json!({"msgtype": "m.text", "body": "carol!", "m.mentions": {"user_ids": [carol.user_id]},
                         "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    sent(&s, &bob, &room, "m.room.message", "t3", mention).await;
    let filter = urlencode(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#);
    let (_, synced) = s.get(&format!("/_matrix/client/v3/sync?filter={filter}"), Some(&carol.token)).await;
    let joined = &synced["rooms"]["join"][&room];
    assert_eq!(joined["unread_thread_notifications"][&root]["highlight_count"], 1, "{joined}");
    assert_eq!(joined["unread_notifications"]["notification_count"], 1, "main timeline: the root only");
}

#[tokio::test]
async fn relations_page_filter_and_recurse() {
    let (s, alice, bob, room) = setup().await;
    let parent = sent(&s, &alice, &room, "m.room.message", "p", text("parent")).await;
    let mut refs = Vec::new();
    for i in 0..3 {
        let content = json!({"msgtype": "m.text", "body": format!("ref {i}"),
                             "m.relates_to": {"rel_type": "m.reference", "event_id": parent}});
        refs.push(sent(&s, &bob, &room, "m.room.message", &format!("ref{i}"), content).await);
    }
    let reaction = sent(
        &s,
        &bob,
        &room,
        "m.reaction",
        "r",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": "👀"}}),
    )
    .await;
    // A reaction to a reference: a relation of a relation.
    let nested = sent(
        &s,
        &alice,
        &room,
        "m.reaction",
        "n",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": refs[0], "key": "✅"}}),
    )
    .await;

    let base = format!("/_matrix/client/v1/rooms/{room}/relations/{parent}");
    let ids = |page: &Value| -> Vec<String> {
        page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
    };
    let (status, all) = s.get(&base, Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(
        ids(&all),
        [reaction.clone(), refs[2].clone(), refs[1].clone(), refs[0].clone()],
        "newest first"
    );
    assert!(all.get("recursion_depth").is_none());

    let (_, only_refs) = s.get(&format!("{base}/m.reference?limit=2"), Some(&alice.token)).await;
    assert_eq!(ids(&only_refs), [refs[2].clone(), refs[1].clone()]);
    let next = only_refs["next_batch"].as_str().expect("a second page");
    let (_, rest) = s.get(&format!("{base}/m.reference?limit=2&from={next}"), Some(&alice.token)).await;
    assert_eq!(ids(&rest), [refs[0].clone()]);
    assert!(rest.get("next_batch").is_none());
    let (_, typed) = s.get(&format!("{base}/m.annotation/m.reaction"), Some(&alice.token)).await;
    assert_eq!(ids(&typed), std::slice::from_ref(&reaction));
    let (_, forwards) = s.get(&format!("{base}?dir=f"), Some(&alice.token)).await;
    assert_eq!(ids(&forwards)[0], refs[0]);

    let (_, deep) = s.get(&format!("{base}?recurse=true"), Some(&alice.token)).await;
    assert!(ids(&deep).contains(&nested), "{deep}");
    assert_eq!(deep["recursion_depth"], 3);

    // References are bundled; an unknown parent is 404.
    let served = event(&s, &bob, &room, &parent).await;
    assert_eq!(served["unsigned"]["m.relations"]["m.reference"]["chunk"].as_array().unwrap().len(), 3);
    assert_error(
        &s.request(
            Method::GET,
            &format!("/_matrix/client/v1/rooms/{room}/relations/$nope"),
            Some(&alice.token),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn threads_started_by_ignored_users_show_redacted() {
    let (s, alice, bob, room) = setup().await;
    let root = sent(&s, &bob, &room, "m.room.message", "root", text("bob's thread")).await;
    let reply = json!({"msgtype": "m.text", "body": "reply", "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    sent(&s, &alice, &room, "m.room.message", "r", reply).await;
    s.put(
        &format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", alice.user_id),
        Some(&alice.token),
        json!({"ignored_users": {bob.user_id.clone(): {}}}),
    )
    .await;
    let (status, listed) =
        s.get(&format!("/_matrix/client/v1/rooms/{room}/threads"), Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let first = &listed["chunk"][0];
    assert_eq!(first["event_id"], root.as_str());
    assert_eq!(first["content"], json!({}), "redacted for the ignoring user: {first}");
    let (_, for_bob) = s.get(&format!("/_matrix/client/v1/rooms/{room}/threads"), Some(&bob.token)).await;
    assert_eq!(for_bob["chunk"][0]["content"]["body"], "bob's thread");
}
