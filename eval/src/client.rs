//! One eval stream over the real `/v1/stream` protocol: open a session, ask for each segment
//! with its prompt, and record the fMP4 bytes and the timings a viewer would see.
//!
//! Each segment's first binary frame repeats the stream's init segment (so a segment alone
//! plays); the recording keeps it once, which makes the whole stream one playable file.

use std::time::{Duration, Instant};

use framecast_common::protocol::ServerMessage;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Why a stream could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket could not be opened or broke.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server sent an `error` frame.
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    /// The stream ended or the connection closed before every segment arrived.
    #[error("stream ended after {got} of {want} segments: {why}")]
    Ended { got: u32, want: u32, why: String },
    /// The whole stream took longer than allowed.
    #[error("no complete stream within {0:?}")]
    Timeout(Duration),
    /// Media arrived before the stream's geometry or init segment.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// What to ask the server for.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    /// `ws://host:port/v1/stream` (router or replica).
    pub url: String,
    /// The prompt of each segment, in order.
    pub prompts: Vec<String>,
    /// Noise seed of every segment request.
    pub seed: u64,
    /// Denoising steps; the server's default when `None`.
    pub steps: Option<u32>,
    /// Classifier-free guidance scale; the server's default when `None`.
    pub guidance_scale: Option<f32>,
    /// Longest time the whole stream may take.
    pub timeout: Duration,
}

/// A recorded stream.
#[derive(Debug, Clone)]
pub struct Recording {
    /// The stream as one fMP4 file: init segment once, then every fragment.
    pub fmp4: Vec<u8>,
    /// Frame size.
    pub width: u32,
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Frames per segment.
    pub frames_per_segment: u32,
    /// From sending `session_init_v2` to the first media byte.
    pub time_to_first_media: Duration,
    /// When each segment's `media_segment_complete` arrived, from `session_init_v2`.
    pub segment_done: Vec<Duration>,
    /// The server's generation time of each segment.
    pub generation_ms: Vec<u64>,
}

impl Recording {
    /// Media seconds in one segment.
    pub fn segment_seconds(&self) -> f64 {
        f64::from(self.frames_per_segment) / f64::from(self.fps.max(1))
    }

    /// Media seconds delivered per wall second once streaming: segments 1.. over the time
    /// between the first and the last segment's completion. Above 1 the viewer never waits.
    pub fn realtime_factor(&self) -> Option<f64> {
        let (first, last) = (self.segment_done.first()?, self.segment_done.last()?);
        let wall = last.saturating_sub(*first).as_secs_f64();
        let media = (self.segment_done.len() - 1) as f64 * self.segment_seconds();
        (wall > 0.0).then(|| media / wall)
    }
}

/// Leading `ftyp`/`moov` boxes of an fMP4 chunk: the init segment.
fn init_segment(chunk: &[u8]) -> Option<&[u8]> {
    let mut at = 0usize;
    while chunk.len() >= at + 8 {
        let size = u32::from_be_bytes(chunk[at..at + 4].try_into().ok()?) as usize;
        let kind = &chunk[at + 4..at + 8];
        if kind != b"ftyp" && kind != b"moov" || size < 8 {
            break;
        }
        at += size;
    }
    (at > 0 && at <= chunk.len()).then(|| &chunk[..at])
}

/// Runs one session to the end of its last segment.
pub async fn record(plan: &StreamPlan) -> Result<Recording, ClientError> {
    match tokio::time::timeout(plan.timeout, record_inner(plan)).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout(plan.timeout)),
    }
}

fn segment_request(plan: &StreamPlan, idx: usize) -> Message {
    let mut body = json!({
        "type": "segment_prompt_source",
        "prompt": plan.prompts[idx],
        "source": "user",
        "seed": plan.seed,
    });
    if let Some(steps) = plan.steps {
        body["num_inference_steps"] = json!(steps);
    }
    if let Some(scale) = plan.guidance_scale {
        body["guidance_scale"] = json!(scale);
    }
    Message::text(body.to_string())
}

async fn record_inner(plan: &StreamPlan) -> Result<Recording, ClientError> {
    let want = plan.prompts.len() as u32;
    let (mut ws, _) = tokio_tungstenite::connect_async(plan.url.as_str()).await?;
    let started = Instant::now();
    let init = json!({
        "type": "session_init_v2",
        "client_id": "framecast-eval",
        "auto_extension_enabled": false,
        "loop_generation_enabled": false,
    });
    ws.send(Message::text(init.to_string())).await?;
    ws.send(segment_request(plan, 0)).await?;
    let mut rec = Recording {
        fmp4: Vec::new(),
        width: 0,
        height: 0,
        fps: 0,
        frames_per_segment: 0,
        time_to_first_media: Duration::ZERO,
        segment_done: Vec::new(),
        generation_ms: Vec::new(),
    };
    let mut init_bytes: Option<Vec<u8>> = None;
    let mut requested = 1usize;
    let ended = |got: u32, why: String| ClientError::Ended { got, want, why };
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Binary(chunk) => {
                if rec.fps == 0 {
                    return Err(ClientError::Protocol(
                        "media before ltx2_stream_start".into(),
                    ));
                }
                if rec.fmp4.is_empty() {
                    rec.time_to_first_media = started.elapsed();
                    let init = init_segment(&chunk).ok_or_else(|| {
                        ClientError::Protocol("first media frame has no init segment".into())
                    })?;
                    init_bytes = Some(init.to_vec());
                    rec.fmp4.extend_from_slice(&chunk);
                } else {
                    let init = init_bytes.as_deref().unwrap_or_default();
                    rec.fmp4
                        .extend_from_slice(chunk.strip_prefix(init).unwrap_or(&chunk));
                }
            }
            Message::Text(text) => match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::Ltx2StreamStart {
                    width,
                    height,
                    fps,
                    num_frames,
                    ..
                }) => {
                    (rec.width, rec.height, rec.fps) = (width, height, fps);
                    rec.frames_per_segment = num_frames;
                }
                Ok(ServerMessage::Ltx2SegmentStart { segment_idx, .. }) => {
                    // Keep the next request queued, so generation of k+1 overlaps k's media.
                    let next = segment_idx as usize + 1;
                    if next == requested && next < plan.prompts.len() {
                        ws.send(segment_request(plan, next)).await?;
                        requested += 1;
                    }
                }
                Ok(ServerMessage::MediaSegmentComplete { .. }) => {
                    rec.segment_done.push(started.elapsed());
                    if rec.segment_done.len() as u32 == want
                        && rec.generation_ms.len() as u32 == want
                    {
                        break;
                    }
                }
                Ok(ServerMessage::Ltx2SegmentComplete {
                    generation_time_ms, ..
                }) => {
                    rec.generation_ms.push(generation_time_ms);
                    if rec.segment_done.len() as u32 == want
                        && rec.generation_ms.len() as u32 == want
                    {
                        break;
                    }
                }
                Ok(ServerMessage::Error { code, message, .. }) => {
                    return Err(ClientError::Server {
                        code: code.as_str().to_string(),
                        message,
                    });
                }
                Ok(ServerMessage::Ltx2StreamComplete { reason }) => {
                    return Err(ended(
                        rec.segment_done.len() as u32,
                        format!("ltx2_stream_complete {reason:?}"),
                    ));
                }
                // Progress, queue and resume messages need no answer.
                Ok(_) => {}
                Err(e) => return Err(ClientError::Protocol(format!("bad server message: {e}"))),
            },
            Message::Close(frame) => {
                return Err(ended(
                    rec.segment_done.len() as u32,
                    format!("closed: {frame:?}"),
                ));
            }
            _ => {}
        }
    }
    if (rec.segment_done.len() as u32) < want {
        return Err(ended(
            rec.segment_done.len() as u32,
            "connection ended".into(),
        ));
    }
    let _ = ws.close(None).await;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut b = ((body + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend(std::iter::repeat_n(7u8, body));
        b
    }

    #[test]
    fn the_init_segment_is_the_leading_ftyp_and_moov() {
        let mut chunk = boxed(b"ftyp", 12);
        chunk.extend(boxed(b"moov", 40));
        let init_len = chunk.len();
        chunk.extend(boxed(b"moof", 20));
        assert_eq!(init_segment(&chunk).map(<[u8]>::len), Some(init_len));
        assert_eq!(init_segment(&boxed(b"moof", 20)), None);
        // A box claiming more bytes than there are is not an init segment.
        let mut short = boxed(b"ftyp", 12);
        short[3] = 200;
        assert_eq!(init_segment(&short), None);
        assert_eq!(init_segment(&[]), None);
    }

    #[test]
    fn realtime_factor_is_media_over_wall_time_after_the_first_segment() {
        let rec = Recording {
            fmp4: Vec::new(),
            width: 64,
            height: 64,
            fps: 12,
            frames_per_segment: 12,
            time_to_first_media: Duration::ZERO,
            segment_done: vec![Duration::from_secs(2), Duration::from_millis(2500)],
            generation_ms: vec![],
        };
        assert!((rec.realtime_factor().unwrap() - 2.0).abs() < 1e-9);
    }
}
