//! The operator's view: `/health` on every listener, `/metrics` in
//! Prometheus' format on a listener that serves it, and nowhere else.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{TestServer, assert_error, create_room, send};

#[tokio::test]
async fn health_everywhere_and_metrics_where_configured() {
    let s =
        TestServer::start_with(|c| c.listeners[0].resources.push(hearth::config::Resource::Metrics)).await;
    let alice = s.register("alice").await;
    let room = create_room(&s, &alice, json!({})).await;
    for i in 0..3 {
        assert_eq!(send(&s, &alice, &room, &format!("t{i}"), "hello").await.0, StatusCode::OK);
    }

    let health = s.http.get(format!("{}/health", s.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "OK");

    let response = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().contains("openmetrics-text"));
    let text = response.text().await.unwrap();
    let sends = text
        .lines()
        .find(|l| {
            l.starts_with("hearth_http_requests_total{")
                && l.contains(r#"endpoint="/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}""#)
                && l.contains(r#"status="200""#)
        })
        .unwrap_or_else(|| panic!("no count of sends:\n{text}"));
    assert!(sends.ends_with(" 3"), "{sends}");
    assert!(text.contains("hearth_http_request_duration_seconds_bucket{"), "{text}");
    let appended: u64 = text
        .lines()
        .find(|l| l.starts_with("hearth_events_appended_total "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no events counter:\n{text}"));
    assert!(appended >= 9, "the room's creation and three messages: {appended}");
    for what in [
        "sync_waiters",
        "rocksdb_live_data_bytes",
        "rocksdb_block_cache_bytes",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(&format!(r#"hearth_state{{what="{what}"}}"#)), "{what} missing:\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
}

#[tokio::test]
async fn metrics_are_not_served_unless_configured() {
    let s = TestServer::start().await;
    assert_error(&s.get("/metrics", None).await, StatusCode::NOT_FOUND, "M_UNRECOGNIZED");
    assert_eq!(s.http.get(format!("{}/health", s.base)).send().await.unwrap().status(), StatusCode::OK);
}
