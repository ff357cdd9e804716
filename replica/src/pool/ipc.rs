//! The wire between the server and its worker processes: a Unix socket carrying
//! length-prefixed frames, each a JSON header plus an optional raw body.
//!
//! ```text
//! | header length: u32 BE | body length: u32 BE | header: JSON | body: bytes |
//! ```
//!
//! Bulk bytes (fMP4 chunks, blob payloads, an initial image's pixels) travel in the body
//! untouched, so no media is ever re-encoded as JSON; headers stay small.

use framecast_common::protocol::ContinuationState;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::generate::{GenerateError, SegmentRequest, StreamFormat};
use crate::pipeline::PipelineEvent;

/// Largest JSON header accepted (a continuation state's payload is the biggest).
pub const MAX_HEADER_BYTES: usize = 16 << 20;
/// Largest body accepted.
pub const MAX_BODY_BYTES: usize = 1 << 30;

/// The socket failed or the peer broke the framing.
#[derive(Debug, thiserror::Error)]
pub enum IpcError {
    /// Reading or writing the socket failed (the peer went away).
    #[error("worker socket: {0}")]
    Io(#[from] std::io::Error),
    /// A frame was larger than allowed.
    #[error("worker frame of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Announced size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A header was not the JSON expected.
    #[error("malformed worker frame header: {0}")]
    Header(#[from] serde_json::Error),
}

/// One message with its bulk bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<H> {
    /// What the message is.
    pub header: H,
    /// Bulk bytes belonging to it (empty when it has none).
    pub body: Vec<u8>,
}

impl<H> Frame<H> {
    /// A message without bulk bytes.
    pub fn new(header: H) -> Self {
        Self {
            header,
            body: Vec::new(),
        }
    }

    /// A message with `body` attached.
    pub fn with_body(header: H, body: Vec<u8>) -> Self {
        Self { header, body }
    }
}

/// Writes one frame.
pub async fn write_frame<H: Serialize>(
    w: &mut (impl AsyncWrite + Unpin),
    frame: &Frame<H>,
) -> Result<(), IpcError> {
    let header = serde_json::to_vec(&frame.header)?;
    for (size, limit) in [
        (header.len(), MAX_HEADER_BYTES),
        (frame.body.len(), MAX_BODY_BYTES),
    ] {
        if size > limit {
            return Err(IpcError::TooLarge { size, limit });
        }
    }
    let mut prefix = [0u8; 8];
    prefix[..4].copy_from_slice(&(header.len() as u32).to_be_bytes());
    prefix[4..].copy_from_slice(&(frame.body.len() as u32).to_be_bytes());
    w.write_all(&prefix).await?;
    w.write_all(&header).await?;
    w.write_all(&frame.body).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub async fn read_frame<H: for<'de> Deserialize<'de>>(
    r: &mut (impl AsyncRead + Unpin),
) -> Result<Option<Frame<H>>, IpcError> {
    let mut prefix = [0u8; 8];
    // Only an end before the first byte is clean; one inside the prefix cut a frame short.
    let mut filled = 0;
    while filled < prefix.len() {
        match r.read(&mut prefix[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("stream ended {filled} bytes into a frame prefix"),
                )
                .into());
            }
            n => filled += n,
        }
    }
    let header_len = u32::from_be_bytes(prefix[..4].try_into().expect("4 bytes")) as usize;
    let body_len = u32::from_be_bytes(prefix[4..].try_into().expect("4 bytes")) as usize;
    for (size, limit) in [(header_len, MAX_HEADER_BYTES), (body_len, MAX_BODY_BYTES)] {
        if size > limit {
            return Err(IpcError::TooLarge { size, limit });
        }
    }
    let mut header = vec![0u8; header_len];
    r.read_exact(&mut header).await?;
    let mut body = vec![0u8; body_len];
    r.read_exact(&mut body).await?;
    Ok(Some(Frame {
        header: serde_json::from_slice(&header)?,
        body,
    }))
}

/// Server → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Generate the two warmup segments; answered by `warmed_up`.
    Warmup {
        /// What to generate.
        request: SegmentRequest,
    },
    /// Check a client's continuation state; answered by `validated`.
    Validate {
        /// Matches the answer.
        call: u64,
        /// The state.
        state: ContinuationState,
    },
    /// A session starts streaming on this worker.
    Start {
        /// The server's tag for this session's messages.
        session: u64,
        /// The session id (also the fMP4 stream id).
        session_id: String,
        /// Where the stream continues from.
        initial_state: Option<ContinuationState>,
        /// Also publish the stream as a broadcast (the worker's `broadcast` settings).
        #[serde(default)]
        broadcast: bool,
    },
    /// A segment to generate; an initial image's RGB bytes are the body.
    Submit {
        /// The session tag.
        session: u64,
        /// What to generate (its `initial_image` travels as the body).
        request: SegmentRequest,
        /// `(width, height)` of the image in the body, if any.
        image_size: Option<(u32, u32)>,
        /// How long ago the controller scheduled it, in microseconds.
        scheduled_us_ago: u64,
    },
    /// Export the session's newest state (answered by an `exported` event).
    Export {
        /// The session tag.
        session: u64,
    },
    /// The session ended; stop within a denoising step.
    Cancel {
        /// The session tag.
        session: u64,
    },
    /// The answer to a `blob_put`.
    BlobStored {
        /// Matches the request.
        call: u64,
        /// The blob id, or why it was refused (the store's own error, so the generator can
        /// say which setting to raise).
        result: Result<String, crate::store::StoreError>,
    },
    /// The answer to a `blob_get`; the payload is the body.
    BlobLoaded {
        /// Matches the request.
        call: u64,
        /// Whether the blob exists (`Ok(false)`: expired or evicted), or the store's error.
        result: Result<bool, String>,
    },
}

/// Worker → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The generator is loaded.
    Hello {
        /// What it generates.
        format: StreamFormat,
        /// The device it runs on.
        device: String,
    },
    /// The generator could not be built; the worker exits next.
    BuildFailed {
        /// Why.
        error: String,
    },
    /// The warmup's outcome.
    WarmedUp {
        /// `Err(why)` when it failed.
        result: Result<(), String>,
    },
    /// The answer to `validate`.
    Validated {
        /// Matches the request.
        call: u64,
        /// Why the state is rejected.
        result: Result<(), GenerateError>,
    },
    /// A JSON control message for the session's client.
    Text {
        /// The session tag.
        session: u64,
        /// The message.
        text: String,
    },
    /// fMP4 bytes for the session's client (the body).
    Media {
        /// The session tag.
        session: u64,
    },
    /// The session's segment is encoded: its completion messages follow
    /// ([`Outgoing::Encoded`](crate::pipeline::Outgoing::Encoded)).
    Encoded {
        /// The session tag.
        session: u64,
        /// The segment.
        segment: u32,
    },
    /// A pipeline event for the session's controller.
    Event {
        /// The session tag.
        session: u64,
        /// The event.
        event: PipelineEvent,
    },
    /// Store the body as a blob of `owner`; answered by `blob_stored`.
    BlobPut {
        /// Matches the answer.
        call: u64,
        /// The owning session.
        owner: String,
    },
    /// Fetch a blob; answered by `blob_loaded`.
    BlobGet {
        /// Matches the answer.
        call: u64,
        /// The blob id.
        id: String,
    },
    /// Drop every blob of `owner`.
    BlobDropOwner {
        /// The owning session.
        owner: String,
    },
    /// A metric update, applied to the server's registry so `/metrics` covers workers.
    Metric {
        /// Metric name.
        name: String,
        /// Label pairs.
        labels: Vec<(String, String)>,
        /// The update.
        op: MetricOp,
    },
}

/// One update of a counter, gauge or histogram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricOp {
    /// Counter += n.
    Increment(u64),
    /// Counter = n.
    Absolute(u64),
    /// Gauge += x.
    GaugeIncrement(f64),
    /// Gauge -= x.
    GaugeDecrement(f64),
    /// Gauge = x.
    GaugeSet(f64),
    /// Histogram observation.
    Record(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_with_their_bodies() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let sent = Frame::with_body(
            FromWorker::Media { session: 7 },
            (0..100_000u32).map(|i| i as u8).collect(),
        );
        let writer = tokio::spawn(async move {
            write_frame(&mut a, &sent).await.unwrap();
            write_frame(
                &mut a,
                &Frame::new(FromWorker::BlobDropOwner { owner: "s".into() }),
            )
            .await
            .unwrap();
            sent
        });
        let first: Frame<FromWorker> = read_frame(&mut b).await.unwrap().unwrap();
        let second: Frame<FromWorker> = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(first, writer.await.unwrap());
        assert_eq!(
            second.header,
            FromWorker::BlobDropOwner { owner: "s".into() }
        );
        assert!(second.body.is_empty());
        assert!(read_frame::<FromWorker>(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_and_malformed_frames_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            a.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
            a.write_all(&0u32.to_be_bytes()).await.unwrap();
        });
        let err = read_frame::<FromWorker>(&mut b).await.unwrap_err();
        assert!(matches!(err, IpcError::TooLarge { .. }), "{err}");

        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            a.write_all(&2u32.to_be_bytes()).await.unwrap();
            a.write_all(&0u32.to_be_bytes()).await.unwrap();
            a.write_all(b"{]").await.unwrap();
        });
        let err = read_frame::<FromWorker>(&mut b).await.unwrap_err();
        assert!(matches!(err, IpcError::Header(_)), "{err}");
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_prefix_is_an_error_not_a_clean_end() {
        // This read as `Ok(None)` ("the worker exited") before.
        let mut cut: &[u8] = &[0, 0, 0];
        let err = read_frame::<FromWorker>(&mut cut).await.unwrap_err();
        assert!(
            matches!(&err, IpcError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof),
            "{err}"
        );
        let mut empty: &[u8] = &[];
        assert!(
            read_frame::<FromWorker>(&mut empty)
                .await
                .unwrap()
                .is_none()
        );
    }
}
