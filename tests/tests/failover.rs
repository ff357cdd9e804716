//! Sessions that survive their replica: two real replicas sharing a real Redis behind the
//! real router (mock generator). The replica serving a stream is killed with SIGKILL mid-
//! stream; the client gets `error {code: worker_failed, retryable: true}` and a close frame
//! from the router (never a bare TCP close), reconnects with `session_init_v2.resume`, and
//! the other replica continues at the first segment the client did not get: indices
//! contiguous, none lost or repeated, the fMP4 timeline (`tfdt`) running on. With Redis
//! down, new sessions still stream and a resume is refused with its reason.

use std::time::{Duration, Instant};

use framecast_e2e::redis::RedisServer;
use framecast_e2e::{
    ChildGuard, ClientWs, Router, admin_base, open_stream, start_mock_replica, start_router,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(30);

/// Two mock replicas sharing `redis` (0.5 s segments made in 0.2 s, so a client is never far
/// behind; `extra` settings applied last), and the router in front of them.
async fn two_replicas_and_router(
    redis: &RedisServer,
    extra: &[(&str, &str)],
) -> ([ChildGuard; 2], Vec<String>, Router) {
    let url = redis.url();
    let mut settings = vec![
        ("FRAMECAST_REPLICA__STORE__BACKEND", "redis"),
        ("FRAMECAST_REPLICA__STORE__REDIS__URL", url.as_str()),
        (
            "FRAMECAST_REPLICA__STORE__REDIS__KEY_PREFIX",
            "failover-test:",
        ),
        ("FRAMECAST_REPLICA__GENERATOR__MOCK_LATENCY_MS", "200"),
    ];
    settings.extend_from_slice(extra);
    let (a, a_base) = start_mock_replica(&settings).await;
    let (b, b_base) = start_mock_replica(&settings).await;
    let bases = vec![a_base, b_base];
    let router = start_router(&bases, &[]).await;
    ([a, b], bases, router)
}

fn init() -> Value {
    json!({
        "type": "session_init_v2",
        "curated_prompts": ["a red fox", "a blue whale", "a green owl"],
        "loop_generation_enabled": true,
    })
}

/// A client's view of one connection: its messages, where each segment's media starts on
/// the fMP4 timeline, and how it ended.
#[derive(Debug, Default)]
struct Recording {
    messages: Vec<Value>,
    /// `(segment_idx, tfdt of its first fragment)`.
    tfdts: Vec<(u64, u64)>,
    /// When each `media_segment_complete` arrived.
    completed_at: Vec<(u64, Instant)>,
    close: Option<u16>,
    /// The segment whose bytes are arriving, and whether its first fragment was seen.
    current: Option<(u64, bool)>,
}

impl Recording {
    /// Reads until `done` matches a message (true), or the connection ends or `limit`
    /// passes (false).
    async fn read(
        &mut self,
        ws: &mut ClientWs,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(_))) | Ok(None) | Err(_) => return false,
            };
            match frame {
                Message::Text(text) => {
                    let msg: Value = serde_json::from_str(&text).expect("JSON text frame");
                    match msg["type"].as_str() {
                        Some("media_init") => {
                            self.current = Some((msg["segment_idx"].as_u64().unwrap(), false));
                        }
                        Some("media_segment_complete") => self
                            .completed_at
                            .push((msg["segment_idx"].as_u64().unwrap(), Instant::now())),
                        _ => {}
                    }
                    let finished = done(&msg);
                    self.messages.push(msg);
                    if finished {
                        return true;
                    }
                }
                Message::Binary(bytes) => {
                    if let Some((segment, seen)) = &mut self.current
                        && !*seen
                        && let Some(tfdt) = first_tfdt(&bytes)
                    {
                        *seen = true;
                        self.tfdts.push((*segment, tfdt));
                    }
                }
                Message::Close(frame) => {
                    self.close = frame.map(|f| u16::from(f.code));
                    return false;
                }
                _ => {}
            }
        }
    }

    fn completed(&self) -> Vec<u64> {
        self.completed_at.iter().map(|(i, _)| *i).collect()
    }

    fn first(&self, kind: &str) -> Option<&Value> {
        self.messages.iter().find(|m| m["type"] == kind)
    }
}

/// The base media decode time of the first `tfdt` box in `bytes` (fMP4 boxes).
fn first_tfdt(bytes: &[u8]) -> Option<u64> {
    let at = bytes.windows(4).position(|w| w == b"tfdt")?;
    let body = bytes.get(at + 4..)?;
    let version = *body.first()?;
    let time = body.get(4..)?;
    Some(if version == 1 {
        u64::from_be_bytes(time.get(..8)?.try_into().ok()?)
    } else {
        u64::from(u32::from_be_bytes(time.get(..4)?.try_into().ok()?))
    })
}

/// The replica whose only worker is serving a session.
async fn serving(bases: &[String]) -> usize {
    let since = Instant::now();
    loop {
        for (i, base) in bases.iter().enumerate() {
            // A killed replica does not answer.
            let url = format!("{}/status", admin_base(base));
            let Ok(response) = reqwest::get(&url).await else {
                continue;
            };
            let status: Value = response.json().await.unwrap_or_default();
            if status["available_gpus"] == 0 {
                return i;
            }
        }
        assert!(since.elapsed() < LIMIT, "no replica is serving the session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn router_counter(router: &Router, series: &str) -> f64 {
    let text = framecast_e2e::get_text(&format!("{}/metrics", router.admin)).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_continues_on_the_other_replica_after_a_kill_9() {
    let redis = RedisServer::start();
    let (mut replicas, bases, router) = two_replicas_and_router(&redis, &[]).await;
    let lost_before = router_counter(
        &router,
        "framecast_router_upstream_lost_total{protocol=\"v1_stream\"}",
    )
    .await;

    let mut ws = open_stream(&router.base, init()).await;
    let mut before = Recording::default();
    assert!(
        before
            .read(&mut ws, LIMIT, |m| m["type"] == "media_segment_complete"
                && m["segment_idx"] == 2)
            .await,
        "three segments before the kill; saw {:?}",
        before.messages
    );
    let resumable = before
        .first("session_resumable")
        .expect("session_resumable")
        .clone();
    let victim = serving(&bases).await;
    let killed_at = Instant::now();
    replicas[victim].kill();
    // The router tells the client what happened and closes properly.
    before.read(&mut ws, LIMIT, |_| false).await;
    let error = before
        .messages
        .iter()
        .rev()
        .find(|m| m["type"] == "error")
        .unwrap_or_else(|| panic!("no error frame after the kill; saw {:?}", before.messages));
    assert_eq!(error["code"], "worker_failed");
    assert_eq!(error["retryable"], true);
    assert_eq!(before.close, Some(1012), "close code after the kill");
    assert_eq!(
        router_counter(
            &router,
            "framecast_router_upstream_lost_total{protocol=\"v1_stream\"}"
        )
        .await,
        lost_before + 1.0
    );

    // The client resumes at the first segment it did not get.
    let got = before.completed();
    let next = got.last().unwrap() + 1;
    let mut init = init();
    init["resume"] = json!({
        "session_id": resumable["session_id"],
        "token": resumable["token"],
        "next_segment_idx": next,
    });
    let mut ws = open_stream(&router.base, init).await;
    let mut after = Recording::default();
    assert!(
        after
            .read(&mut ws, LIMIT, |m| m["type"] == "media_segment_complete"
                && m["segment_idx"] == next + 1)
            .await,
        "two segments after the resume; saw {:?}",
        after.messages
    );
    assert_eq!(
        serving(&bases).await,
        1 - victim,
        "served by the other replica"
    );
    assert_eq!(
        after.first("session_resumed"),
        Some(
            &json!({"type": "session_resumed", "session_id": resumable["session_id"], "segment_idx": next})
        )
    );
    assert!(after.first("error").is_none(), "{:?}", after.messages);
    // Contiguous: every segment exactly once across the two connections.
    let all: Vec<u64> = got
        .iter()
        .chain(after.completed().iter())
        .copied()
        .collect();
    assert_eq!(all, (0..=next + 1).collect::<Vec<_>>());
    // The fMP4 timeline runs on: segment k's first fragment starts k segments in.
    let (first_idx, t0) = before.tfdts[0];
    let (second_idx, t1) = before.tfdts[1];
    assert_eq!((first_idx, second_idx), (0, 1));
    let per_segment = t1 - t0;
    assert!(per_segment > 0);
    for (idx, tfdt) in before.tfdts.iter().chain(after.tfdts.iter()) {
        assert_eq!(*tfdt, t0 + idx * per_segment, "tfdt of segment {idx}");
    }
    let last_before = before.completed_at.last().unwrap().1;
    let first_after = after.completed_at.first().unwrap().1;
    eprintln!(
        "failover: kill to resumed segment {} complete in {:.2} s; media gap {:.2} s",
        next,
        (first_after - killed_at).as_secs_f64(),
        (first_after - last_before).as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_new_sessions_stream_and_a_resume_is_refused_with_its_reason() {
    let mut redis = RedisServer::start();
    let (_replicas, _bases, router) = two_replicas_and_router(&redis, &[]).await;
    redis.kill();

    let mut ws = open_stream(&router.base, init()).await;
    let mut first = Recording::default();
    assert!(
        first
            .read(&mut ws, LIMIT, |m| m["type"] == "media_segment_complete"
                && m["segment_idx"] == 1)
            .await,
        "a new session streams without Redis; saw {:?}",
        first.messages
    );
    let resumable = first.first("session_resumable").unwrap().clone();
    drop(ws);

    let mut init = init();
    init["resume"] = json!({
        "session_id": resumable["session_id"],
        "token": resumable["token"],
        "next_segment_idx": 2,
    });
    let mut ws = open_stream(&router.base, init).await;
    let mut second = Recording::default();
    assert!(
        second
            .read(&mut ws, LIMIT, |m| m["type"] == "media_segment_complete")
            .await,
        "a refused resume still streams; saw {:?}",
        second.messages
    );
    let error = second.first("error").expect("the refusal");
    assert_eq!(error["code"], "invalid_message");
    assert_eq!(error["reason"], "resume:store_error");
    assert_eq!(second.completed(), [0], "a fresh stream starts at 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_keeps_playing_through_a_kill_9_of_its_replica() {
    let redis = RedisServer::start();
    let settings = [
        // Close to real time (0.45 s per 0.5 s segment), so the player's buffer is thin when
        // the replica dies and the stall measures the failover.
        ("FRAMECAST_REPLICA__GENERATOR__MOCK_LATENCY_MS", "450"),
        // Eight 0.5 s segments: 4 s of video.
        ("FRAMECAST_REPLICA__STREAMING__GENERATION_SEGMENT_CAP", "8"),
    ];
    let (mut replicas, bases, router) = two_replicas_and_router(&redis, &settings).await;

    let page = format!("{}/?autoplay=1&prompt=a%20red%20fox", router.base);
    let player = tokio::spawn(async move {
        framecast_e2e::play_in_chromium(&page, Duration::from_secs(60)).await
    });
    // Kill the serving replica mid-stream.
    let victim = serving(&bases).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    replicas[victim].kill();

    let stats = player.await.unwrap();
    assert_eq!(stats["errors"], json!([]), "{stats}");
    assert_eq!(stats["timedOut"], false, "{stats}");
    assert_eq!(stats["resumes"], 1, "{stats}");
    assert_eq!(stats["segmentsComplete"], 8, "{stats}");
    assert_eq!(stats["streamComplete"], true, "{stats}");
    let played = stats["currentTime"].as_f64().unwrap();
    assert!(played >= 0.9 * 4.0, "played {played} s of 4 s: {stats}");
    let stall = stats["longestStallMs"].as_u64().unwrap();
    assert!(
        stall <= 2000,
        "the kill stalled playback {stall} ms: {stats}"
    );
    eprintln!(
        "browser failover: {} stalls, longest {stall} ms",
        stats["stalls"]
    );
}

/// Sessions streaming at once when a replica is killed.
const SESSIONS: usize = 50;
/// Segments each session streams (the cap), across its connections.
const CAP: u64 = 10;

/// One client of the load test: streams until the cap, resuming whenever its connection
/// is lost; returns every completed segment index in order and the media gap (seconds from
/// the last segment before a loss to the first after it) of each resume.
async fn stream_to_the_cap(router: String) -> (Vec<u64>, Vec<f64>) {
    let mut completed: Vec<u64> = Vec::new();
    let mut gaps = Vec::new();
    let mut resumable: Option<Value> = None;
    let mut lost_at: Option<Instant> = None;
    for _attempt in 0..4 {
        let mut init = init();
        if let Some(r) = &resumable {
            init["resume"] = json!({
                "session_id": r["session_id"],
                "token": r["token"],
                "next_segment_idx": completed.last().map_or(0, |i| i + 1),
            });
        }
        let mut ws = open_stream(&router, init).await;
        let mut rec = Recording::default();
        let ended = rec
            .read(&mut ws, Duration::from_secs(60), |m| {
                m["type"] == "ltx2_stream_complete"
            })
            .await;
        if let (Some(lost), Some((_, first))) = (lost_at, rec.completed_at.first()) {
            gaps.push((*first - lost).as_secs_f64());
        }
        completed.extend(rec.completed());
        if ended {
            return (completed, gaps);
        }
        // Resumable from the newest token this connection was given.
        if let Some(r) = rec
            .messages
            .iter()
            .rev()
            .find(|m| m["type"] == "session_resumable")
        {
            resumable = Some(r.clone());
        }
        lost_at = rec.completed_at.last().map(|(_, at)| *at);
    }
    panic!("no stream complete after 4 connections: {completed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_streams_continue_when_a_replica_is_killed_under_load() {
    let redis = RedisServer::start();
    let capacity = (SESSIONS + 10).to_string();
    let cap = CAP.to_string();
    let settings = [
        (
            "FRAMECAST_REPLICA__STREAMING__GENERATION_SEGMENT_CAP",
            cap.as_str(),
        ),
        ("FRAMECAST_REPLICA__POOL__NUM_WORKERS", capacity.as_str()),
        (
            "FRAMECAST_REPLICA__STREAMING__MAX_SESSIONS",
            capacity.as_str(),
        ),
        ("FRAMECAST_REPLICA__POOL__ACQUIRE_TIMEOUT_SECONDS", "60"),
    ];
    let (mut replicas, bases, router) = two_replicas_and_router(&redis, &settings).await;

    let clients: Vec<_> = (0..SESSIONS)
        .map(|_| tokio::spawn(stream_to_the_cap(router.base.clone())))
        .collect();
    // Once the sessions are streaming, kill the replica holding the most of them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut busiest = (0, 0);
    for (i, base) in bases.iter().enumerate() {
        let status = framecast_e2e::get_json(&format!("{}/status", admin_base(base))).await;
        let busy =
            status["total_gpus"].as_u64().unwrap() - status["available_gpus"].as_u64().unwrap();
        if busy > busiest.1 {
            busiest = (i, busy);
        }
    }
    assert!(busiest.1 > 0, "no replica was serving");
    replicas[busiest.0].kill();

    let mut gaps = Vec::new();
    for client in clients {
        let (completed, client_gaps) = client.await.unwrap();
        assert_eq!(
            completed,
            (0..CAP).collect::<Vec<_>>(),
            "every segment exactly once"
        );
        gaps.extend(client_gaps);
    }
    assert_eq!(
        gaps.len() as u64,
        busiest.1,
        "every session of the killed replica resumed once"
    );
    gaps.sort_by(f64::total_cmp);
    let at = |q: f64| gaps[((gaps.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "failover under load: {} of {SESSIONS} sessions resumed; media gap p50 {:.2} s, p90 {:.2} s, max {:.2} s",
        gaps.len(),
        at(0.5),
        at(0.9),
        at(1.0)
    );
}
