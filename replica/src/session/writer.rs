//! The one task that writes to a session's WebSocket: it drains the bounded send queue one
//! message at a time and gives up on a client that takes longer than the write timeout to
//! accept a message, which is how a client that stops reading gets disconnected.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::Outgoing;
use super::resume_gate::ResumeGate;

/// Writes queued messages until the queue closes, a `Close` went out, or the client stalls;
/// reports through `written` how many segments' media went out ([`Outgoing::Written`]), and
/// holds each segment's completion at its [`Outgoing::Encoded`] in `gate`, when the session
/// has one.
pub async fn write_to_client(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outgoing>,
    write_timeout: Duration,
    written: watch::Sender<u32>,
    mut gate: Option<ResumeGate>,
) {
    while let Some(item) = queue.recv().await {
        let (message, last) = match item {
            Outgoing::Written(segment) => {
                written.send_replace(segment + 1);
                continue;
            }
            Outgoing::Encoded(segment) => {
                if let Some(gate) = &mut gate {
                    gate.hold(segment).await;
                }
                continue;
            }
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

/// How long the socket writer may take to flush the last frames once the session is over.
const WRITER_DRAIN: Duration = Duration::from_secs(5);
/// How long a client may take to answer the server's close frame.
const LINGER: Duration = Duration::from_secs(2);

/// Ends a session's socket: lets `writer` flush the last frames (the close frame among
/// them), then [`linger`]s, so what was just sent is not lost to a connection reset.
pub async fn finish(mut writer: JoinHandle<()>, stream: &mut SplitStream<WebSocket>) {
    if tokio::time::timeout(WRITER_DRAIN, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    linger(stream).await;
}

/// Reads and drops what the client still sends until it answers the close frame, leaves, or
/// [`LINGER`] passes. Closing the socket with the client's frames unread makes the kernel
/// reset the connection, and the client often loses the error and close frames just sent
/// (seen in the live fuzzer: a capped stream ending while the client sent a prompt lost its
/// `ltx2_stream_complete` and close frame 7 times in 20).
pub(super) async fn linger(stream: &mut SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Close(_) = message {
                break;
            }
        }
    })
    .await;
}
