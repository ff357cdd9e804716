//! A replica that dies mid-session does not leave its client with a dropped socket: through
//! the real router, the client reads the whole frames the replica sent and nothing of the one
//! it was cut in (held back until complete; a frame too large to hold is finished to its
//! declared length instead), then a retryable `worker_failed` error and a 1012 close, whether
//! the dead replica's socket closed (FIN) or was reset (RST). A replica that closes the
//! session itself gets nothing added.
//!
//! The replica here is a raw TCP server that answers the WebSocket handshake by hand, so it
//! can stop in the middle of a frame the way a killed process does.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use framecast_router::config::ReplicaEndpoint;
use futures_util::StreamExt;
use support::{TestRouter, Ws, config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

const GREETING: &str = "segment 0 done";
/// The binary frame the replica is cut in: declared length, and bytes sent before dying.
const BINARY_LEN: usize = 1000;
const BINARY_SENT: usize = 400;
/// A binary frame over the router's hold limit (4 MiB), cut after `BINARY_SENT` bytes.
const BIG_LEN: usize = (4 << 20) + 1000;

/// How the fake replica ends a session, chosen by the client's `?ending=` query.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    /// Dies after half a binary frame: its socket closes (FIN).
    Fin,
    /// Dies after half a binary frame with its socket reset (SO_LINGER 0: RST).
    Reset,
    /// Dies after part of a binary frame too large for the router to hold back (FIN).
    Big,
    /// Drops the client, as a replica refuses an oversized frame, once its header arrived:
    /// a reset, so its own refusal would be lost.
    Refuse,
    /// Sends a Close frame (1000) and closes once the client answered it.
    CloseFrame,
}

/// Starts the raw replica on loopback: any plain request gets `200 {}` (health probes), a
/// WebSocket upgrade gets the greeting text frame and then the ending its query asks for.
async fn start_raw_replica() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // A client that went away mid-handshake is not this test's concern.
                let _ = serve(stream).await;
            });
        }
    });
    addr
}

async fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let head = read_head(&mut stream).await?;
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let Some(key) = header("sec-websocket-key") else {
        return stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
            .await;
    };
    let request_line = head.lines().next().unwrap_or_default();
    let ending = if request_line.contains("ending=reset") {
        Ending::Reset
    } else if request_line.contains("ending=big") {
        Ending::Big
    } else if request_line.contains("ending=refuse") {
        Ending::Refuse
    } else if request_line.contains("ending=close") {
        Ending::CloseFrame
    } else {
        Ending::Fin
    };
    let accept = derive_accept_key(key.as_bytes());
    stream
        .write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut greeting = vec![0x81, GREETING.len() as u8];
    greeting.extend_from_slice(GREETING.as_bytes());
    stream.write_all(&greeting).await?;
    if ending == Ending::Refuse {
        // The client's frame header (masked: 14 bytes with a 64-bit length), then the reset.
        let mut header = [0u8; 14];
        stream.read_exact(&mut header).await?;
        stream.set_zero_linger()?;
        drop(stream);
        return Ok(());
    }
    if ending == Ending::CloseFrame {
        stream.write_all(&[0x88, 6, 0x03, 0xE8]).await?;
        stream.write_all(b"done").await?;
        // Wait for the client's Close (or its end), then close like a server should.
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        return Ok(());
    }
    let mut binary = if ending == Ending::Big {
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&(BIG_LEN as u64).to_be_bytes());
        header
    } else {
        let mut header = vec![0x82, 126];
        header.extend_from_slice(&(BINARY_LEN as u16).to_be_bytes());
        header
    };
    binary.extend(std::iter::repeat_n(0xAB, BINARY_SENT));
    stream.write_all(&binary).await?;
    stream.flush().await?;
    // Long enough for the router to forward these bytes before the replica "dies".
    tokio::time::sleep(Duration::from_millis(300)).await;
    if ending == Ending::Reset {
        stream.set_zero_linger()?;
    }
    drop(stream);
    Ok(())
}

/// The request head, up to its blank line.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 || head.len() > 16 * 1024 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A router in front of the raw replica at `addr`, once the replica is healthy.
async fn router_for(
    addr: SocketAddr,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> TestRouter {
    let endpoint = ReplicaEndpoint {
        url: format!("http://{addr}"),
        admin_url: None,
        name: Some("raw".into()),
        primary: true,
        weight: 1,
    };
    let mut config = config(vec![endpoint], 0.1);
    config.health_check.capacity_path = None;
    let router = TestRouter::start_with_metrics(&config, metrics);
    router
        .wait_for_replica("raw", Duration::from_secs(10), |r| r["status"] == "healthy")
        .await;
    router
}

async fn open(router: &TestRouter, path_and_query: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{}{path_and_query}", router.port);
    let (ws, response) = tokio_tungstenite::connect_async(&url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    assert_eq!(response.status(), 101);
    ws
}

/// The next message within 5 s.
async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a frame within 5 s")
        .expect("the connection is still open")
        .expect("a valid frame")
}

/// Nothing but the connection's end follows, within 5 s (the client answered the Close).
async fn nothing_more(ws: &mut Ws) {
    let after = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the connection ends within 5 s of the close frame");
    assert!(
        !matches!(after, Some(Ok(_))),
        "nothing may follow the close frame, got {after:?}"
    );
}

/// The frame too large to hold, finished to its declared length with zeros.
async fn greeting_then_padded_big_binary(ws: &mut Ws) {
    assert_eq!(next(ws).await, Message::text(GREETING));
    let Message::Binary(binary) = next(ws).await else {
        panic!("expected the cut binary frame");
    };
    assert_eq!(binary.len(), BIG_LEN, "finished to its declared length");
    assert!(binary[..BINARY_SENT].iter().all(|&b| b == 0xAB));
    assert!(
        binary[BINARY_SENT..].iter().all(|&b| b == 0),
        "padded with zeros"
    );
}

async fn closed_with_1012(ws: &mut Ws) {
    match next(ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 1012);
            assert_eq!(frame.reason.as_str(), "replica lost");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    nothing_more(ws).await;
}

/// A `/v1/stream` session on the raw replica ending with `ending`: every frame in order.
async fn v1_stream_session_is_told(router: &TestRouter, ending: &str) {
    let mut ws = open(router, &format!("/v1/stream?ending={ending}")).await;
    if ending == "big" {
        greeting_then_padded_big_binary(&mut ws).await;
    } else {
        // The half-sent binary frame never reaches the client.
        assert_eq!(next(&mut ws).await, Message::text(GREETING));
    }
    let error: serde_json::Value = serde_json::from_str(next(&mut ws).await.to_text().unwrap())
        .expect("the error frame is JSON");
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "worker_failed");
    assert_eq!(error["retryable"], true);
    assert_eq!(error["reason"], "upstream_lost");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("session_resumable"),
        "{error}"
    );
    closed_with_1012(&mut ws).await;
}

/// The value of `series` on the router's `/metrics`.
async fn metric(router: &TestRouter, series: &str) -> f64 {
    let text = framecast_e2e::get_text(&router.admin_url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("{series} is not exported:\n{text}"))
}

const LOST_V1: &str = "framecast_router_upstream_lost_total{protocol=\"v1_stream\"}";
const LOST_DREAMVERSE: &str = "framecast_router_upstream_lost_total{protocol=\"dreamverse\"}";
const LOST_OTHER: &str = "framecast_router_upstream_lost_total{protocol=\"other\"}";
const WORKER_FAILED: &str = "framecast_errors_total{code=\"worker_failed\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_lost_mid_frame_leaves_the_client_in_sync_with_worker_failed_and_1012() {
    let metrics = framecast_common::metrics::install_recorder("router").unwrap();
    let router = router_for(start_raw_replica().await, Some(metrics)).await;
    for series in [LOST_V1, LOST_DREAMVERSE, LOST_OTHER, WORKER_FAILED] {
        assert_eq!(metric(&router, series).await, 0.0, "{series} from start");
    }

    // The replica's socket closes (FIN), then is reset (RST).
    v1_stream_session_is_told(&router, "fin").await;
    v1_stream_session_is_told(&router, "reset").await;
    v1_stream_session_is_told(&router, "big").await;

    // The Dreamverse app's protocol gets its own error shape.
    let mut ws = open(&router, "/ws?ending=reset").await;
    assert_eq!(next(&mut ws).await, Message::text(GREETING));
    let error: serde_json::Value =
        serde_json::from_str(next(&mut ws).await.to_text().unwrap()).unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error_code"], "worker_failed");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("replica unavailable"),
        "{error}"
    );
    closed_with_1012(&mut ws).await;

    // A session the replica closes itself is not a loss.
    let mut ws = open(&router, "/v1/stream?ending=close").await;
    assert_eq!(next(&mut ws).await, Message::text(GREETING));
    assert!(matches!(next(&mut ws).await, Message::Close(Some(_))));
    nothing_more(&mut ws).await;

    assert_eq!(metric(&router, LOST_V1).await, 3.0);
    assert_eq!(metric(&router, LOST_DREAMVERSE).await, 1.0);
    assert_eq!(metric(&router, LOST_OTHER).await, 0.0);
    assert_eq!(metric(&router, WORKER_FAILED).await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_dropped_over_an_oversized_frame_gets_the_refusal_not_a_lost_replica() {
    use futures_util::SinkExt;
    let metrics = framecast_common::metrics::install_recorder("router").unwrap();
    let router = router_for(start_raw_replica().await, Some(metrics)).await;
    let too_large = "framecast_router_client_violations_total{violation=\"frame_too_large\"}";
    assert_eq!(metric(&router, too_large).await, 0.0);
    let mut ws = open(&router, "/v1/stream?ending=refuse").await;
    assert_eq!(next(&mut ws).await, Message::text(GREETING));
    // 2 MiB, over the replicas' 1 MiB.
    let _ = ws.send(Message::binary(vec![0u8; 2 << 20])).await;
    let error: serde_json::Value =
        serde_json::from_str(next(&mut ws).await.to_text().unwrap()).expect("the refusal is JSON");
    assert_eq!(error["code"], "invalid_message", "{error}");
    assert_eq!(error["reason"], "frame_too_large");
    assert_eq!(error["retryable"], false);
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(metric(&router, too_large).await, 1.0);
    assert_eq!(metric(&router, LOST_V1).await, 0.0, "not a lost replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_closes_the_session_itself_gets_nothing_added() {
    let router = router_for(start_raw_replica().await, None).await;
    for _ in 0..3 {
        let mut ws = open(&router, "/v1/stream?ending=close").await;
        assert_eq!(next(&mut ws).await, Message::text(GREETING));
        match next(&mut ws).await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1000);
                assert_eq!(frame.reason.as_str(), "done");
            }
            other => panic!("expected the replica's close frame, got {other:?}"),
        }
        nothing_more(&mut ws).await;
    }
}
