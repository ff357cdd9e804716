//! Resumable `/v1/stream` sessions on one in-process replica (memory stores): a client whose
//! connection dropped comes back with `session_init_v2.resume` and continues at the first
//! segment it did not receive, with the same prompts, no segment lost or repeated; every
//! refusal (malformed, unknown, wrong or stale token, outside the window, ended normally)
//! gets its `resume:<why>` error and a fresh stream; and the outcomes are counted.
//! Failover between two real replicas through the router is in `tests/tests/failover.rs`.

mod support;

use std::time::Duration;

use framecast_replica::prompt::PromptService;
use serde_json::{Value, json};
use support::transcript::{Client, Transcript, connect, read_until, read_until_match, send};

const LIMIT: Duration = Duration::from_secs(20);

fn init() -> Value {
    json!({
        "type": "session_init_v2",
        "curated_prompts": ["a red fox", "a blue whale", "a green owl"],
        "loop_generation_enabled": true,
    })
}

fn resume_init(session_id: &str, token: &str, next: u64) -> Value {
    let mut init = init();
    init["resume"] = json!({"session_id": session_id, "token": token, "next_segment_idx": next});
    init
}

/// Reads until `n` segments' media is complete; returns the session id and token.
async fn stream_segments(client: &mut Client, t: &mut Transcript, n: u64) -> (String, String) {
    read_until_match(client, t, LIMIT, "media_segment_complete", |m| {
        m["type"] == "media_segment_complete" && m["segment_idx"] == n - 1
    })
    .await;
    let resumable = t.first("session_resumable");
    (
        resumable["session_id"].as_str().unwrap().to_string(),
        resumable["token"].as_str().unwrap().to_string(),
    )
}

/// The `segment_idx` of every message of `kind`.
fn indices(t: &Transcript, kind: &str) -> Vec<u64> {
    t.all(kind)
        .iter()
        .map(|m| m["segment_idx"].as_u64().unwrap())
        .collect()
}

fn prompts_by_segment(t: &Transcript) -> Vec<(u64, String)> {
    t.all("ltx2_segment_start")
        .iter()
        .map(|m| {
            (
                m["segment_idx"].as_u64().unwrap(),
                m["prompt"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn resumes(outcome: &str) -> f64 {
    support::counter(&format!(
        "framecast_session_resumes_total{{outcome=\"{outcome}\"}}"
    ))
}

#[tokio::test]
async fn a_dropped_connection_resumes_at_the_first_segment_the_client_did_not_get() {
    let server = support::start(support::small_config(), PromptService::disabled()).await;
    let mut first = connect(&server.ws_url("/v1/stream")).await;
    send(&mut first, init()).await;
    let mut before = Transcript::default();
    let (session_id, token) = stream_segments(&mut first, &mut before, 2).await;
    assert_eq!(before.first("session_resumable")["window_segments"], 4);
    // The connection drops without a close frame.
    drop(first);
    server
        .wait_for_free_worker(LIMIT, "the lost session did not end")
        .await;

    let resumed_before = resumes("resumed");
    let mut second = connect(&server.ws_url("/v1/stream")).await;
    send(&mut second, resume_init(&session_id, &token, 2)).await;
    let mut after = Transcript::default();
    read_until_match(&mut second, &mut after, LIMIT, "segment 3's media", |m| {
        m["type"] == "media_segment_complete" && m["segment_idx"] == 3
    })
    .await;
    assert_eq!(
        after.first("session_resumed"),
        &json!({"type": "session_resumed", "session_id": session_id, "segment_idx": 2})
    );
    assert!(after.all("error").is_empty(), "{:?}", after.all("error"));
    // The stream continues at 2: nothing lost, nothing repeated.
    assert_eq!(indices(&after, "media_segment_complete"), [2, 3]);
    // With the prompts the loop would have given them.
    let starts = prompts_by_segment(&after);
    assert_eq!(starts[0], (2, "a green owl".to_string()));
    assert_eq!(starts[1], (3, "a red fox".to_string()));
    // Same session, new token.
    let again = after.first("session_resumable");
    assert_eq!(again["session_id"], session_id.as_str());
    assert_ne!(again["token"], token.as_str());
    assert_eq!(resumes("resumed"), resumed_before + 1.0);

    // The first token is spent: the record now holds the new one.
    drop(second);
    server
        .wait_for_free_worker(LIMIT, "the resumed session did not end")
        .await;
    let mut third = connect(&server.ws_url("/v1/stream")).await;
    send(&mut third, resume_init(&session_id, &token, 4)).await;
    let mut refused = Transcript::default();
    read_until(&mut third, &mut refused, "ltx2_segment_start", LIMIT).await;
    let error = refused.first("error");
    assert_eq!(error["reason"], "resume:bad_token");
    // A fresh stream starts instead.
    assert_eq!(indices(&refused, "ltx2_segment_start"), [0]);
    assert!(refused.all("session_resumed").is_empty());
}

#[tokio::test]
async fn every_refusal_names_its_reason_and_starts_a_fresh_stream() {
    let mut config = support::small_config();
    config.store.resume.window_segments = 2;
    let server = support::start(config, PromptService::disabled()).await;

    // A session to refer to: 4 segments, so segments 0 and 1 fell out of its window of 2.
    let mut first = connect(&server.ws_url("/v1/stream")).await;
    send(&mut first, init()).await;
    let mut t = Transcript::default();
    let (session_id, token) = stream_segments(&mut first, &mut t, 4).await;
    drop(first);
    server
        .wait_for_free_worker(LIMIT, "the lost session did not end")
        .await;

    let cases = [
        (
            json!({"session_id": "NOT-HEX", "token": token, "next_segment_idx": 1}),
            "malformed",
        ),
        (
            json!({"session_id": "00000000deadbeef", "token": token, "next_segment_idx": 1}),
            "no_record",
        ),
        (
            json!({"session_id": session_id, "token": "0".repeat(32), "next_segment_idx": 4}),
            "bad_token",
        ),
        (
            json!({"session_id": session_id, "token": token, "next_segment_idx": 0}),
            "out_of_window",
        ),
        (
            json!({"session_id": session_id, "token": token, "next_segment_idx": 99}),
            "out_of_window",
        ),
    ];
    for (resume, reason) in cases {
        let before = resumes(reason);
        let mut client = connect(&server.ws_url("/v1/stream")).await;
        let mut init = init();
        init["resume"] = resume.clone();
        send(&mut client, init).await;
        let mut t = Transcript::default();
        read_until(&mut client, &mut t, "ltx2_segment_start", LIMIT).await;
        let error = t.first("error");
        assert_eq!(error["code"], "invalid_message", "{resume}");
        assert_eq!(error["reason"], format!("resume:{reason}"), "{resume}");
        assert_eq!(indices(&t, "ltx2_segment_start"), [0], "{resume}");
        assert_eq!(resumes(reason), before + 1.0, "{reason}");
        // Ends with the client's close frame: nothing is kept for it.
        client.close(None).await.unwrap();
        drop(client);
        server
            .wait_for_free_worker(LIMIT, "a refused session did not end")
            .await;
    }
}

#[tokio::test]
async fn a_session_the_client_closed_cannot_be_resumed() {
    let server = support::start(support::small_config(), PromptService::disabled()).await;
    let mut client = connect(&server.ws_url("/v1/stream")).await;
    send(&mut client, init()).await;
    let mut t = Transcript::default();
    let (session_id, token) = stream_segments(&mut client, &mut t, 1).await;
    client.close(None).await.unwrap();
    support::transcript::read_to_close(&mut client, &mut t, LIMIT).await;
    server
        .wait_for_free_worker(LIMIT, "the closed session did not end")
        .await;

    let mut again = connect(&server.ws_url("/v1/stream")).await;
    send(&mut again, resume_init(&session_id, &token, 1)).await;
    let mut t = Transcript::default();
    read_until(&mut again, &mut t, "ltx2_segment_start", LIMIT).await;
    assert_eq!(t.first("error")["reason"], "resume:no_record");
}
