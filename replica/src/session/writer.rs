//! The one task that writes to a session's WebSocket: it drains the bounded send queue one
//! message at a time and gives up on a client that takes longer than the write timeout to
//! accept a message, which is how a client that stops reading gets disconnected.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio::sync::mpsc;

use super::Outgoing;

/// Writes queued messages until the queue closes, a `Close` went out, or the client stalls.
pub async fn write_to_client(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outgoing>,
    write_timeout: Duration,
) {
    while let Some(item) = queue.recv().await {
        let (message, last) = match item {
            Outgoing::Text(t) => (Message::Text(Utf8Bytes::from(t)), false),
            Outgoing::Binary(b) => (Message::Binary(b.into()), false),
            Outgoing::Ping => (Message::Ping(Default::default()), false),
            Outgoing::Close(code, reason) => (
                Message::Close(Some(CloseFrame {
                    code,
                    reason: Utf8Bytes::from(reason),
                })),
                true,
            ),
        };
        match tokio::time::timeout(write_timeout, sink.send(message)).await {
            Ok(Ok(())) if !last => {}
            Ok(Ok(())) | Ok(Err(_)) => break,
            Err(_) => {
                tracing::warn!(?write_timeout, "client too slow to read; disconnecting");
                break;
            }
        }
    }
    // Stop accepting output first: senders blocked on a full queue fail at once and the
    // session notices, even when closing a stalled socket takes a while.
    drop(queue);
    let _ = tokio::time::timeout(write_timeout, sink.close()).await;
}
