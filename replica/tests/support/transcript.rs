//! A WebSocket client that records every frame the server sent, in order, and its close.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(url: &str) -> Client {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

pub async fn send(client: &mut Client, value: Value) {
    client
        .send(Message::Text(value.to_string().into()))
        .await
        .unwrap();
}

/// One frame from the server, with when it arrived.
#[derive(Debug, Clone)]
pub enum Frame {
    Json(Value, Instant),
    Binary(usize, Instant),
}

/// Everything the server sent and how it closed.
#[derive(Debug, Default)]
pub struct Transcript {
    pub frames: Vec<Frame>,
    /// The close frame's code and reason, once it came.
    pub close: Option<(u16, String)>,
}

impl Transcript {
    /// The JSON messages, in order.
    pub fn messages(&self) -> impl Iterator<Item = &Value> {
        self.frames.iter().filter_map(|f| match f {
            Frame::Json(v, _) => Some(v),
            Frame::Binary(..) => None,
        })
    }

    /// The `type` of each message.
    pub fn types(&self) -> Vec<String> {
        self.messages()
            .map(|m| m["type"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    pub fn all(&self, kind: &str) -> Vec<&Value> {
        self.messages().filter(|m| m["type"] == kind).collect()
    }

    pub fn first(&self, kind: &str) -> &Value {
        self.messages()
            .find(|m| m["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {:?}", self.types()))
    }

    /// When each message of `kind` arrived.
    pub fn times(&self, kind: &str) -> Vec<Instant> {
        self.frames
            .iter()
            .filter_map(|f| match f {
                Frame::Json(v, at) if v["type"] == kind => Some(*at),
                _ => None,
            })
            .collect()
    }
}

/// Reads frames into `t` until `done` matches one (true), `limit` passes or the server
/// closes (false).
pub async fn read_into(
    client: &mut Client,
    t: &mut Transcript,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline.into(), client.next()).await {
        match msg {
            Ok(Message::Text(text)) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                let finished = done(&v);
                t.frames.push(Frame::Json(v, Instant::now()));
                if finished {
                    return true;
                }
            }
            Ok(Message::Binary(b)) => t.frames.push(Frame::Binary(b.len(), Instant::now())),
            Ok(Message::Close(frame)) => {
                t.close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                return false;
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Reads until a message matching `done` (failing without one within `limit`).
pub async fn read_until_match(
    client: &mut Client,
    t: &mut Transcript,
    limit: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) {
    let found = read_into(client, t, limit, done).await;
    assert!(found, "no {what} within {limit:?}; saw {:?}", t.types());
}

/// Reads until the first message of `kind` from now on.
pub async fn read_until(client: &mut Client, t: &mut Transcript, kind: &str, limit: Duration) {
    read_until_match(client, t, limit, kind, |m| m["type"] == kind).await;
}

/// Reads everything until the server closes (or `limit` passes).
pub async fn read_to_close(client: &mut Client, t: &mut Transcript, limit: Duration) {
    read_into(client, t, limit, |_| false).await;
}
