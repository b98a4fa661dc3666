//! Server-side search (`POST /search`): ranking, words and phrases, filters
//! and search-box operators, paging while messages arrive, context and
//! highlights, who may see what, and an index that survives `kill -9`.

use std::{collections::HashSet, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

/// Waits until the index holds everything the server has written so far.
async fn indexed(s: &TestServer) {
    let services = &s.server().services;
    let search = services.search.as_ref().expect("search is on");
    assert!(search.wait_for(services.stream.visible(), Duration::from_secs(30)).await, "the index caught up");
}

/// A search's `room_events`, which must succeed.
async fn search(s: &TestServer, who: &Session, criteria: Value) -> Value {
    search_page(s, who, criteria, None).await
}

async fn search_page(s: &TestServer, who: &Session, criteria: Value, batch: Option<&str>) -> Value {
    let path = match batch {
        Some(b) => format!("/_matrix/client/v3/search?next_batch={}", urlencode(b)),
        None => "/_matrix/client/v3/search".to_owned(),
    };
    let (status, body) =
        s.post(&path, Some(&who.token), json!({"search_categories": {"room_events": criteria}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["search_categories"]["room_events"].clone();
    assert!(
        events["results"].is_array() && events["count"].is_u64() && events["highlights"].is_array(),
        "{body}"
    );
    events
}

/// The event IDs of the results, in order.
fn ids(events: &Value) -> Vec<String> {
    events["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The IDs a plain search for `term` finds, best first.
async fn found(s: &TestServer, who: &Session, term: &str) -> Vec<String> {
    ids(&search(s, who, json!({"search_term": term})).await)
}

/// A transaction ID not used before in this test run.
fn txn() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("search{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

async fn say(s: &TestServer, who: &Session, room: &str, body: &str) -> String {
    let txn = txn();
    let (status, resp) = send(s, who, room, &txn, body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["event_id"].as_str().unwrap().to_owned()
}

async fn post_content(s: &TestServer, who: &Session, room: &str, content: Value) -> String {
    let txn = txn();
    let (status, resp) = s
        .put(&format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}"), Some(&who.token), content)
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    resp["event_id"].as_str().unwrap().to_owned()
}

fn set(ids: &[String]) -> HashSet<&str> {
    ids.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn words_phrases_and_rank() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    let long_fox =
        say(&s, &alice, &room, "The quick brown fox jumps over the lazy dog near the river bank").await;
    let afternoon = say(&s, &alice, &room, "A lazy afternoon").await;
    let foxes = say(&s, &alice, &room, "Foxes running").await;
    let cafe = say(&s, &alice, &room, "Meet at the CAFÉ at noon").await;
    let tokyo = say(&s, &alice, &room, "東京タワーに行きました").await;
    // A long message (~60 KB) is found by its last word.
    let long = say(&s, &alice, &room, &format!("{} omega", "filler ".repeat(8_500))).await;
    let name = put_state(&s, &alice, &room, "m.room.name", json!({"name": "Fox den"})).await;
    // (`m.topic`'s plain text is searched too, HTML not.)
    let topic = put_state(
        &s,
        &alice,
        &room,
        "m.room.topic",
        json!({"topic": "Weekly planning", "m.topic": {"m.text": [
            {"body": "Weekly <b>planning</b> and review", "mimetype": "text/html"},
            {"body": "Weekly planning and Retrospectives"}
        ]}}),
    )
    .await;
    indexed(&s).await;

    // Stems, case and accents; every key by default; the longest text last.
    let fox = search(&s, &alice, json!({"search_term": "fox"})).await;
    let hits = ids(&fox);
    assert_eq!(set(&hits), set(&[long_fox.clone(), foxes.clone(), name.clone()]), "{fox}");
    let bodies = search(&s, &alice, json!({"search_term": "fox", "keys": ["content.body"]})).await;
    assert_eq!(ids(&bodies), [foxes.clone(), long_fox.clone()], "the shorter text ranks first: {bodies}");
    assert_eq!(fox["count"], 3);
    let ranks: Vec<f64> =
        fox["results"].as_array().unwrap().iter().map(|r| r["rank"].as_f64().unwrap()).collect();
    assert!(ranks.windows(2).all(|w| w[0] >= w[1]) && ranks[2] > 0.0, "ranks descend: {ranks:?}");
    let highlights: HashSet<&str> =
        fox["highlights"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert_eq!(highlights, HashSet::from(["fox", "Foxes", "Fox"]), "{fox}");
    assert_eq!(found(&s, &alice, "run").await, [foxes.as_str()]);
    assert_eq!(found(&s, &alice, "cafe").await, [cafe.as_str()]);
    assert_eq!(search(&s, &alice, json!({"search_term": "Café"})).await["highlights"], json!(["CAFÉ"]));
    assert_eq!(found(&s, &alice, "東京").await, [tokyo.as_str()]);
    assert_eq!(found(&s, &alice, "planning").await, [topic.as_str()]);
    let retro = search(&s, &alice, json!({"search_term": "retrospective"})).await;
    assert_eq!(ids(&retro), [topic.as_str()], "{retro}");
    assert_eq!(retro["highlights"], json!(["Retrospectives"]));
    assert!(found(&s, &alice, "review").await.is_empty());
    assert_eq!(found(&s, &alice, "omega").await, [long.as_str()]);
    // All words must match; a phrase in order; `or`; `-excluded`.
    assert_eq!(found(&s, &alice, "lazy river").await, [long_fox.as_str()]);
    assert_eq!(set(&found(&s, &alice, "lazy").await), set(&[long_fox.clone(), afternoon.clone()]));
    assert_eq!(found(&s, &alice, "\"lazy afternoon\"").await, [afternoon.as_str()]);
    assert!(found(&s, &alice, "\"afternoon lazy\"").await.is_empty());
    assert_eq!(found(&s, &alice, "lazy -dog").await, [afternoon.as_str()]);
    assert_eq!(set(&found(&s, &alice, "afternoon or noon").await), set(&[afternoon.clone(), cafe.clone()]));
    assert!(found(&s, &alice, "zebra").await.is_empty());
    // Keys narrow the fields searched.
    let names = search(&s, &alice, json!({"search_term": "fox", "keys": ["content.name"]})).await;
    assert_eq!(ids(&names), [name.as_str()]);
    // Newest first.
    let recent = search(&s, &alice, json!({"search_term": "fox", "order_by": "recent"})).await;
    assert_eq!(ids(&recent), [name, foxes, long_fox]);
    // Nothing to look for finds nothing.
    assert_eq!(search(&s, &alice, json!({"search_term": " ,; "})).await["count"], 0);
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let post = |body: Value| s.post("/_matrix/client/v3/search", Some(&alice.token), body);
    assert_error(&post(json!({"search_categories": {}})).await, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    let term = |extra: Value| {
        let mut criteria = json!({"search_term": "x"});
        criteria.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"search_categories": {"room_events": criteria}})
    };
    assert_error(&post(term(json!({"order_by": "size"}))).await, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    assert_error(
        &post(term(json!({"groupings": {"group_by": [{"key": "state_key"}]}}))).await,
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
    );
    assert_error(
        &post(json!({"search_categories": {"room_events": {}}})).await,
        StatusCode::BAD_REQUEST,
        "M_BAD_JSON",
    );
    let (status, body) =
        s.post("/_matrix/client/v3/search?next_batch=nonsense", Some(&alice.token), term(json!({}))).await;
    assert_error(&(status, body), StatusCode::BAD_REQUEST, "M_UNKNOWN");
    assert_error(
        &s.post("/_matrix/client/v3/search", None, term(json!({}))).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );

    let off = TestServer::start_with(|c| c.search.enabled = false).await;
    let bob = off.register("bob").await;
    let (status, body) = off.post("/_matrix/client/v3/search", Some(&bob.token), term(json!({}))).await;
    assert_error(&(status, body), StatusCode::BAD_REQUEST, "M_UNKNOWN");
}

/// Today's date (UTC) as `YYYY-MM-DD`, shifted by `days`.
fn day(days: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let z = now / 86_400 + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[tokio::test]
async fn filters_and_search_box_operators() {
    let s = TestServer::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let server = s.config.server_name.to_string();
    let lunch = create_room(&s, &alice, json!({"preset": "public_chat", "room_alias_name": "lunch"})).await;
    let work = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &lunch).await;
    join(&s, &bob, &work).await;
    let a_lunch = say(&s, &alice, &lunch, "pizza for lunch").await;
    let b_lunch = say(&s, &bob, &lunch, "pizza again, see https://pizza.example.org").await;
    let a_work = say(&s, &alice, &work, "pizza party after the release").await;
    let image = post_content(
        &s,
        &bob,
        &work,
        json!({"msgtype": "m.image", "body": "pizza.png", "url": format!("mxc://{server}/abc")}),
    )
    .await;
    let file = post_content(
        &s,
        &alice,
        &lunch,
        json!({"msgtype": "m.file", "body": "pizza-menu.pdf", "url": format!("mxc://{server}/def")}),
    )
    .await;
    let pizza_name = put_state(&s, &alice, &work, "m.room.name", json!({"name": "Pizza planning"})).await;
    indexed(&s).await;

    let with = |filter: Value| json!({"search_term": "pizza", "filter": filter});
    let all =
        [a_lunch.clone(), b_lunch.clone(), a_work.clone(), image.clone(), file.clone(), pizza_name.clone()];
    assert_eq!(set(&ids(&search(&s, &alice, with(json!({}))).await)), set(&all));
    let cases: Vec<(Value, Vec<&String>)> = vec![
        (json!({"rooms": [lunch]}), vec![&a_lunch, &b_lunch, &file]),
        (json!({"not_rooms": [lunch]}), vec![&a_work, &image, &pizza_name]),
        (json!({"senders": [bob.user_id]}), vec![&b_lunch, &image]),
        (json!({"not_senders": [bob.user_id]}), vec![&a_lunch, &a_work, &file, &pizza_name]),
        (json!({"types": ["m.room.name"]}), vec![&pizza_name]),
        (json!({"types": ["m.room.*"], "not_types": ["m.room.message"]}), vec![&pizza_name]),
        (json!({"contains_url": true}), vec![&image, &file]),
        (json!({"contains_url": false}), vec![&a_lunch, &b_lunch, &a_work, &pizza_name]),
        (json!({"rooms": [work], "senders": [alice.user_id]}), vec![&a_work, &pizza_name]),
    ];
    for (filter, expected) in cases {
        let hits = ids(&search(&s, &alice, with(filter.clone())).await);
        let expected: HashSet<&str> = expected.into_iter().map(String::as_str).collect();
        assert_eq!(set(&hits), expected, "filter {filter}");
    }
    let limited = search(&s, &alice, with(json!({"limit": 2}))).await;
    assert_eq!(ids(&limited).len(), 2);
    assert_eq!(limited["count"], 6);
    assert!(limited["next_batch"].is_string(), "{limited}");

    // The same from the search box.
    let op = |term: String| {
        let (s, alice) = (&s, &alice);
        async move { set(&found(s, alice, &term).await).into_iter().map(str::to_owned).collect::<HashSet<_>>() }
    };
    let strings = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
    assert_eq!(op(format!("pizza from:{}", bob.user_id)).await, strings(&[&b_lunch, &image]));
    assert_eq!(op(format!("pizza in:#lunch:{server}")).await, strings(&[&a_lunch, &b_lunch, &file]));
    assert_eq!(op(format!("pizza in:{work}")).await, strings(&[&a_work, &image, &pizza_name]));
    assert_eq!(op(format!("pizza in:{work} from:{}", alice.user_id)).await, strings(&[&a_work, &pizza_name]));
    assert_eq!(op("pizza has:attachment".into()).await, strings(&[&image, &file]));
    assert_eq!(op("pizza has:image".into()).await, strings(&[&image]));
    assert_eq!(op("pizza has:link".into()).await, strings(&[&b_lunch]));
    assert_eq!(op(format!("pizza before:{}", day(1))).await.len(), 6);
    assert!(op(format!("pizza before:{}", day(0))).await.is_empty());
    assert_eq!(op(format!("pizza after:{}", day(0))).await.len(), 6);
    assert!(op(format!("pizza after:{}", day(1))).await.is_empty());
    // Operators alone: everything they match, newest first.
    let images = search(&s, &alice, json!({"search_term": "has:attachment"})).await;
    assert_eq!(ids(&images), [file.clone(), image.clone()]);
    // An in: naming no room of the user's finds nothing.
    assert!(op(format!("pizza in:#nowhere:{server}")).await.is_empty());
}

#[tokio::test]
async fn pages_stay_stable_while_messages_arrive() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let (one, two) = (create_room(&s, &alice, json!({})).await, create_room(&s, &alice, json!({})).await);
    let mut sent = Vec::new();
    for i in 0..24 {
        let room = if i % 2 == 0 { &one } else { &two };
        // Varied lengths, so ranks differ.
        sent.push(say(&s, &alice, room, &format!("alpha beta {}", "word ".repeat(i % 5))).await);
    }
    indexed(&s).await;
    for (order, term) in [("rank", "alpha"), ("recent", "beta")] {
        let criteria = json!({"search_term": term, "order_by": order, "filter": {"limit": 10}});
        let mut seen = Vec::new();
        let mut page = search(&s, &alice, criteria.clone()).await;
        let mut n = 0;
        loop {
            seen.extend(ids(&page));
            // New matches between pages change nothing already paged.
            say(&s, &alice, &one, &format!("{term} newcomer {n}")).await;
            indexed(&s).await;
            n += 1;
            let Some(next) = page["next_batch"].as_str().map(str::to_owned) else { break };
            page = search_page(&s, &alice, criteria.clone(), Some(&next)).await;
        }
        assert_eq!(seen.len(), 24, "{order}: every original hit once: {seen:?}");
        assert_eq!(set(&seen), set(&sent), "{order}");
        if order == "recent" {
            let mut newest_first = sent.clone();
            newest_first.reverse();
            assert_eq!(seen, newest_first);
        }
    }
    // A room group's token pages within that room.
    let criteria = json!({"search_term": "alpha word", "order_by": "recent", "filter": {"limit": 2},
        "groupings": {"group_by": [{"key": "room_id"}]}});
    let page = search(&s, &alice, criteria.clone()).await;
    let token = page["groups"]["room_id"][&one]["next_batch"].as_str().expect("a group token").to_owned();
    let more = search_page(&s, &alice, criteria, Some(&token)).await;
    assert!(!ids(&more).is_empty());
    for result in more["results"].as_array().unwrap() {
        assert_eq!(result["result"]["room_id"], one.as_str(), "{more}");
    }
}

#[tokio::test]
async fn context_profiles_state_and_groups() {
    let s = TestServer::start().await;
    let (alice, bob) = (s.register("alice").await, s.register("bob").await);
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    join(&s, &bob, &room).await;
    let (status, _) = s
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.user_id),
            Some(&bob.token),
            json!({"displayname": "Bobby"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = say(&s, &alice, &room, "good morning").await;
    let hit = say(&s, &bob, &room, "the secret word is marmalade").await;
    let after = say(&s, &alice, &room, "noted").await;
    indexed(&s).await;

    let found = search(
        &s,
        &alice,
        json!({"search_term": "marmalade", "include_state": true,
            "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": true},
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]}}),
    )
    .await;
    let result = &found["results"][0];
    assert_eq!(result["result"]["event_id"], hit.as_str(), "{found}");
    assert_eq!(result["result"]["content"]["body"], "the secret word is marmalade");
    let context = &result["context"];
    assert_eq!(context["events_before"][0]["event_id"], before.as_str(), "{context}");
    assert_eq!(context["events_after"][0]["event_id"], after.as_str(), "{context}");
    assert_eq!(context["events_before"].as_array().unwrap().len(), 1);
    assert!(context["start"].is_string() && context["end"].is_string(), "{context}");
    assert_eq!(context["profile_info"][&bob.user_id]["displayname"], "Bobby", "{context}");
    assert!(context["profile_info"][&alice.user_id].is_object(), "{context}");
    // The start token pages on back with /messages.
    let (status, page) = s
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1&from={}",
                context["start"].as_str().unwrap()
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_ne!(page["chunk"][0]["event_id"], before.as_str(), "{page}");
    let state = found["state"][&room].as_array().expect("the room's state");
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{found}");
    assert_eq!(found["groups"]["room_id"][&room]["results"], json!([hit]), "{found}");
    assert_eq!(found["groups"]["sender"][&bob.user_id]["results"], json!([hit]), "{found}");
    assert_eq!(found["highlights"], json!(["marmalade"]));
    // No event_context asked: none given.
    let plain = search(&s, &alice, json!({"search_term": "marmalade"})).await;
    assert_eq!(plain["results"][0]["context"], json!({}), "{plain}");
    assert!(plain.get("state").is_none() && plain.get("groups").is_none(), "{plain}");
}

#[tokio::test]
async fn nobody_finds_what_they_may_not_read() {
    let s = TestServer::start().await;
    let (alice, bob, eve) = (s.register("alice").await, s.register("bob").await, s.register("eve").await);
    let room = create_room(&s, &alice, json!({"preset": "public_chat"})).await;
    put_state(&s, &alice, &room, "m.room.history_visibility", json!({"history_visibility": "joined"})).await;
    let before_bob = say(&s, &alice, &room, "kumquat before bob").await;
    join(&s, &bob, &room).await;
    let while_bob = say(&s, &alice, &room, "kumquat while bob is here").await;
    let (status, body) =
        s.post(&format!("/_matrix/client/v3/rooms/{room}/leave"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after_bob = say(&s, &alice, &room, "kumquat after bob left").await;
    // An edit: found by its new text only, as the original event.
    let edited = say(&s, &alice, &room, "kumquat typo grapefruit").await;
    post_content(
        &s,
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "* kumquat fixed tangerine",
            "m.new_content": {"msgtype": "m.text", "body": "kumquat fixed tangerine"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": edited}}),
    )
    .await;
    // A redacted message is gone.
    let redacted = say(&s, &alice, &room, "kumquat secret").await;
    let (status, body) = s
        .put(&format!("/_matrix/client/v3/rooms/{room}/redact/{redacted}/r1"), Some(&alice.token), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Encrypted rooms are not indexed.
    let secret_room = create_room(
        &s,
        &alice,
        json!({"initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
    )
    .await;
    say(&s, &alice, &secret_room, "kumquat in the clear of an encrypted room").await;
    indexed(&s).await;

    assert_eq!(
        set(&found(&s, &alice, "kumquat").await),
        set(&[before_bob.clone(), while_bob.clone(), after_bob.clone(), edited.clone()])
    );
    assert_eq!(found(&s, &alice, "tangerine").await, [edited.as_str()]);
    assert!(found(&s, &alice, "grapefruit").await.is_empty(), "the replaced text is not found");
    assert!(found(&s, &alice, "secret").await.is_empty(), "redacted");
    // The edit's text is what the hit shows (bundled) and is highlighted.
    let hit = search(&s, &alice, json!({"search_term": "tangerine"})).await;
    assert_eq!(
        hit["results"][0]["result"]["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"],
        "kumquat fixed tangerine",
        "{hit}"
    );
    assert_eq!(hit["highlights"], json!(["tangerine"]));
    // Never joined: nothing. Joined then left, with `joined` visibility:
    // only what was sent while joined.
    assert!(found(&s, &eve, "kumquat").await.is_empty());
    assert_eq!(found(&s, &bob, "kumquat").await, [while_bob.as_str()]);
    // Forgotten: nothing.
    let (status, body) =
        s.post(&format!("/_matrix/client/v3/rooms/{room}/forget"), Some(&bob.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(found(&s, &bob, "kumquat").await.is_empty());
    // Ignored users' messages are hidden.
    join(&s, &eve, &room).await;
    let from_eve = say(&s, &eve, &room, "kumquat from eve").await;
    indexed(&s).await;
    assert!(found(&s, &alice, "eve").await.contains(&from_eve));
    let (status, body) = s
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", alice.user_id),
            Some(&alice.token),
            json!({"ignored_users": {eve.user_id.clone(): {}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(found(&s, &alice, "eve").await.is_empty());
}

#[tokio::test]
async fn operators_see_and_rebuild_the_index() {
    let s = TestServer::start_with(|c| c.registration.shared_secret = Some("s3cret".into())).await;
    let (alice, root) = (s.register("alice").await, crate::media::admin_of(&s).await);
    let room = create_room(&s, &alice, json!({})).await;
    let hit = say(&s, &alice, &room, "persimmon").await;
    indexed(&s).await;
    assert_error(
        &s.get("/_hearth/admin/v1/search", Some(&alice.token)).await,
        StatusCode::FORBIDDEN,
        "M_FORBIDDEN",
    );
    let (status, body) = s.get("/_hearth/admin/v1/search", Some(&root.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["enabled"], true);
    assert!(body["documents"].as_u64().unwrap() >= 1 && body["size_bytes"].as_u64().unwrap() > 0, "{body}");
    assert_eq!(body["indexed_position"], body["stream_position"], "{body}");

    let (status, body) = s.post("/_hearth/admin/v1/search/reindex", Some(&root.token), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let search = s.server().services.search.as_ref().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while search.rebuild_pending() {
        assert!(std::time::Instant::now() < deadline, "the rebuild began");
        tokio::task::yield_now().await;
    }
    indexed(&s).await;
    assert_eq!(found(&s, &alice, "persimmon").await, [hit]);
}

/// Messages acknowledged just before a `kill -9` (the indexer behind) are
/// all findable, once each, after the restart.
#[tokio::test]
async fn an_index_killed_mid_batch_catches_up_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = TestServer::test_config(dir.path());
    config.registration.shared_secret = Some("s3cret".into());
    let sockets = vec![tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()];
    let mut s = TestServer::spawn_on(config, sockets, dir).await;
    let (alice, root) = (s.register("alice").await, crate::media::admin_of(&s).await);
    let room = create_room(&s, &alice, json!({})).await;
    let mut sent = Vec::new();
    for chunk in 0..10 {
        let sends = (0..30).map(|i| {
            let (s, alice, room) = (&s, &alice, &room);
            async move { say(s, alice, room, &format!("quince number {}", chunk * 30 + i)).await }
        });
        sent.extend(futures_util::future::join_all(sends).await);
    }
    s.kill_9();
    s.start_again().await;
    // Wait (with a deadline) for the index to reach the stream's end.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = s.get("/_hearth/admin/v1/search", Some(&root.token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["indexed_position"].as_u64() >= body["stream_position"].as_u64() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the index catches up: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let criteria = json!({"search_term": "quince", "order_by": "recent", "filter": {"limit": 100}});
    let mut seen = Vec::new();
    let mut page = search(&s, &alice, criteria.clone()).await;
    assert_eq!(page["count"], 300, "each message once in the index");
    loop {
        seen.extend(ids(&page));
        let Some(next) = page["next_batch"].as_str().map(str::to_owned) else { break };
        page = search_page(&s, &alice, criteria.clone(), Some(&next)).await;
    }
    assert_eq!(seen.len(), 300);
    assert_eq!(set(&seen), set(&sent));
}

#[tokio::test]
async fn a_room_named_brings_its_predecessors() {
    let s = TestServer::start().await;
    let alice = s.register("alice").await;
    let old = create_room(&s, &alice, json!({"room_version": "11"})).await;
    let before = say(&s, &alice, &old, "vintage before the upgrade").await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{old}/upgrade"),
            Some(&alice.token),
            json!({"new_version": "12"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_owned();
    let after = say(&s, &alice, &new, "vintage after the upgrade").await;
    let other = create_room(&s, &alice, json!({})).await;
    say(&s, &alice, &other, "vintage elsewhere").await;
    indexed(&s).await;
    let found = search(&s, &alice, json!({"search_term": "vintage", "filter": {"rooms": [new]}})).await;
    assert_eq!(set(&ids(&found)), set(&[before, after]), "{found}");
}
