//! Rewrites what the pipeline sends (the `/v1/stream` frames of
//! [`framecast_common::protocol`]: 0-based segments, one `media_init` per stream, a
//! `step_complete` per denoising step) into Dreamverse frames: 1-based segments within the
//! Dreamverse stream, a `media_init` before every segment's first byte with its own
//! `segNNN-xxxxxxxx` stream id, one `step_complete` with latencies per segment.
//!
//! Media bytes pass through unchanged. The pipeline's encoder runs for the whole socket, so
//! there is one init segment (`ftyp`+`moov`) for all its segments; a segment whose bytes do
//! not start with it gets a copy of it first, so each Dreamverse segment is a playable fMP4
//! on its own, as the web app expects after each `ltx2_stream_start` (it builds a new media
//! pipeline then; `SourceBuffer.mode = "sequence"` re-times the fragments).

use std::collections::HashMap;

use framecast_common::dreamverse::{STREAM_MODE, ServerMessage, StepLatency, round_ms};
use framecast_common::protocol::ServerMessage as PipelineMessage;

use crate::pipeline::Outgoing;
use crate::store::random_token;

/// What a pipeline segment is called on the Dreamverse side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentLabel {
    /// 1-based within the Dreamverse stream.
    pub segment_idx: u32,
    pub total_segments: u32,
}

/// The segment whose media is going out.
#[derive(Debug)]
struct MediaSegment {
    segment_idx: u32,
    stream_id: String,
    /// Binary frames sent for it so far.
    chunks: u32,
}

/// The translator of one session's pipeline output.
#[derive(Debug)]
pub struct Translator {
    /// By the pipeline's segment index, from when the session submits the segment until its
    /// `ltx2_segment_complete`.
    labels: HashMap<u32, SegmentLabel>,
    /// The codec string of the pipeline's `media_init`.
    mime: String,
    /// The stream's init segment, repeated before each later segment's first fragment.
    init_segment: Option<Vec<u8>>,
    media: Option<MediaSegment>,
    /// The pipeline segment whose media comes next (the media thread goes in order).
    next_media: u32,
}

impl Default for Translator {
    fn default() -> Self {
        Self {
            labels: HashMap::new(),
            mime: "video/mp4".into(),
            init_segment: None,
            media: None,
            next_media: 0,
        }
    }
}

impl Translator {
    /// Names pipeline segment `pipeline_idx` before it is submitted.
    pub fn label(&mut self, pipeline_idx: u32, label: SegmentLabel) {
        self.labels.insert(pipeline_idx, label);
    }

    /// The pipeline segment whose media `frame` starts, if it starts one (its `media_init`
    /// goes out before it).
    pub fn begins_segment(&self, frame: &Outgoing) -> Option<u32> {
        if self.media.is_some() {
            return None;
        }
        match frame {
            Outgoing::Binary(_) => Some(self.next_media),
            Outgoing::Text(text) => match serde_json::from_str::<PipelineMessage>(text) {
                Ok(PipelineMessage::MediaSegmentComplete { segment_idx, .. }) => Some(segment_idx),
                _ => None,
            },
            Outgoing::Close(..) | Outgoing::Ping | Outgoing::Written(_) | Outgoing::Encoded(_) => {
                None
            }
        }
    }

    /// The Dreamverse frames for one pipeline frame (none, one or several).
    pub fn translate(&mut self, frame: Outgoing) -> Vec<Outgoing> {
        match frame {
            Outgoing::Text(text) => match serde_json::from_str::<PipelineMessage>(&text) {
                Ok(message) => self.translate_message(message),
                Err(e) => {
                    tracing::warn!(error = %e, "pipeline frame not understood; dropped");
                    Vec::new()
                }
            },
            Outgoing::Binary(bytes) => self.media_bytes(bytes),
            // Markers for the socket writer (`Encoded`; the pipeline sends no others): passed on.
            other @ (Outgoing::Close(..)
            | Outgoing::Ping
            | Outgoing::Written(_)
            | Outgoing::Encoded(_)) => vec![other],
        }
    }

    fn translate_message(&mut self, message: PipelineMessage) -> Vec<Outgoing> {
        match message {
            PipelineMessage::MediaInit { mime, .. } => {
                // Announced per segment, before its first byte.
                self.mime = mime;
                Vec::new()
            }
            PipelineMessage::MediaSegmentComplete { segment_idx, .. } => {
                let mut out = Vec::new();
                if self.media.is_none() {
                    out.push(self.announce(segment_idx));
                }
                let media = self.media.take().expect("announced");
                self.next_media = segment_idx + 1;
                out.push(text(&ServerMessage::MediaSegmentComplete {
                    segment_idx: media.segment_idx,
                    stream_id: media.stream_id,
                    chunks: media.chunks,
                }));
                out
            }
            PipelineMessage::Ltx2SegmentComplete {
                segment_idx,
                generation_time_ms,
                e2e_latency_ms,
            } => {
                let label = self.labels.remove(&segment_idx).unwrap_or_else(|| {
                    tracing::warn!(segment_idx, "segment completed without a label");
                    fallback_label(segment_idx)
                });
                let total = e2e_latency_ms as f64;
                let worker = generation_time_ms as f64;
                vec![
                    text(&ServerMessage::StepComplete {
                        latency_ms: StepLatency {
                            total: round_ms(total),
                            worker_e2e: round_ms(worker),
                            main_user_step: round_ms(total),
                            overhead: round_ms((total - worker).max(0.0)),
                        },
                    }),
                    text(&ServerMessage::Ltx2SegmentComplete {
                        segment_idx: label.segment_idx,
                        total_segments: label.total_segments,
                    }),
                ]
            }
            // The session announces segments itself (with their prompt source), and
            // Dreamverse reports one step per segment, not one per denoising step.
            PipelineMessage::Ltx2SegmentStart { .. } | PipelineMessage::StepComplete { .. } => {
                Vec::new()
            }
            other => {
                tracing::warn!(message = ?other, "unexpected pipeline frame; dropped");
                Vec::new()
            }
        }
    }

    fn media_bytes(&mut self, bytes: Vec<u8>) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let init = init_segment(&bytes);
        if let Some(init) = init {
            self.init_segment = Some(init.to_vec());
        }
        if self.media.is_none() {
            out.push(self.announce(self.next_media));
            if init.is_none()
                && let Some(init) = &self.init_segment
            {
                out.push(Outgoing::Binary(init.clone()));
                self.count_chunk();
            }
        }
        self.count_chunk();
        out.push(Outgoing::Binary(bytes));
        out
    }

    fn count_chunk(&mut self) {
        if let Some(media) = &mut self.media {
            media.chunks += 1;
        }
    }

    /// Starts pipeline segment `pipeline_idx`'s media: its `media_init`.
    fn announce(&mut self, pipeline_idx: u32) -> Outgoing {
        let label = self
            .labels
            .get(&pipeline_idx)
            .copied()
            .unwrap_or_else(|| fallback_label(pipeline_idx));
        let stream_id = stream_id(label.segment_idx);
        let frame = text(&ServerMessage::MediaInit {
            segment_idx: label.segment_idx,
            mime: self.mime.clone(),
            stream_id: stream_id.clone(),
            mode: STREAM_MODE,
        });
        self.media = Some(MediaSegment {
            segment_idx: label.segment_idx,
            stream_id,
            chunks: 0,
        });
        frame
    }
}

/// `seg` + the 3-digit segment index + `-` + 8 random hex digits, as Dreamverse names them.
pub fn stream_id(segment_idx: u32) -> String {
    format!("seg{segment_idx:03}-{}", &random_token()[..8])
}

/// The init segment (`ftyp` and the boxes up to and including `moov`) that `bytes` start
/// with, if they do; a fragment (`moof`+`mdat`) may follow it in the same frame.
fn init_segment(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.get(4..8) != Some(b"ftyp") {
        return None;
    }
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 8) {
        let size = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
        let size = match size {
            0 => bytes.len() - at,
            1 => bytes
                .get(at + 8..at + 16)
                .map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
                .and_then(|s| usize::try_from(s).ok())?,
            n => n as usize,
        };
        if size < 8 {
            return None;
        }
        let end = at.checked_add(size)?.min(bytes.len());
        if &header[4..8] == b"moov" {
            return Some(&bytes[..end]);
        }
        at = end;
    }
    // No `moov` in this frame: the whole frame is the start of the init segment.
    Some(bytes)
}

fn fallback_label(pipeline_idx: u32) -> SegmentLabel {
    SegmentLabel {
        segment_idx: pipeline_idx + 1,
        total_segments: pipeline_idx + 1,
    }
}

fn text(message: &ServerMessage) -> Outgoing {
    Outgoing::Text(message.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pipeline(message: PipelineMessage) -> Outgoing {
        Outgoing::text(&message)
    }

    /// A frame as JSON, or `"binary:<first box type>"`.
    fn show(frames: &[Outgoing]) -> Vec<Value> {
        frames
            .iter()
            .map(|f| match f {
                Outgoing::Text(t) => serde_json::from_str(t).unwrap(),
                Outgoing::Binary(b) => {
                    json!(format!("binary:{}", String::from_utf8_lossy(&b[4..8])))
                }
                other => json!(format!("{other:?}")),
            })
            .collect()
    }

    fn boxed(kind: &[u8; 4]) -> Vec<u8> {
        let mut b = vec![0, 0, 0, 12];
        b.extend_from_slice(kind);
        b.extend_from_slice(b"body");
        b
    }

    /// An init segment as the muxer writes it.
    fn init() -> Vec<u8> {
        [boxed(b"ftyp"), boxed(b"moov")].concat()
    }

    /// Runs one pipeline segment's media through `t`.
    fn segment(t: &mut Translator, idx: u32, first: bool) -> Vec<Value> {
        let mut out = Vec::new();
        let mut frames = vec![pipeline(PipelineMessage::Ltx2SegmentStart {
            segment_idx: idx,
            prompt: "p".into(),
            total_steps: 2,
        })];
        for step in 1..=2 {
            frames.push(pipeline(PipelineMessage::StepComplete {
                segment_idx: idx,
                step,
                total_steps: 2,
                stage: "denoise".into(),
            }));
        }
        if first {
            frames.push(pipeline(PipelineMessage::MediaInit {
                segment_idx: idx,
                mime: "video/mp4; codecs=\"avc1.42C01E\"".into(),
                stream_id: "session".into(),
                mode: "av_fmp4".into(),
            }));
            frames.push(Outgoing::Binary(init()));
        }
        frames.push(Outgoing::Binary(boxed(b"moof")));
        frames.push(Outgoing::Binary(boxed(b"moof")));
        frames.push(pipeline(PipelineMessage::MediaSegmentComplete {
            segment_idx: idx,
            stream_id: "session".into(),
            chunks: 3,
            duration_ms: 500,
        }));
        frames.push(pipeline(PipelineMessage::Ltx2SegmentComplete {
            segment_idx: idx,
            generation_time_ms: 5,
            e2e_latency_ms: 125,
        }));
        for f in frames {
            out.extend(t.translate(f));
        }
        show(&out)
    }

    #[test]
    fn segments_become_dreamverse_segments_each_with_its_init_segment() {
        let mut t = Translator::default();
        t.label(
            0,
            SegmentLabel {
                segment_idx: 1,
                total_segments: 2,
            },
        );
        t.label(
            1,
            SegmentLabel {
                segment_idx: 2,
                total_segments: 2,
            },
        );
        let first = segment(&mut t, 0, true);
        let stream_id = first[0]["stream_id"].as_str().unwrap().to_string();
        assert!(
            stream_id.len() == 15 && stream_id.starts_with("seg001-"),
            "{stream_id}"
        );
        assert_eq!(
            first,
            [
                json!({"type": "media_init", "segment_idx": 1, "mime": "video/mp4; codecs=\"avc1.42C01E\"",
                       "stream_id": stream_id, "mode": "av_fmp4"}),
                json!("binary:ftyp"),
                json!("binary:moof"),
                json!("binary:moof"),
                json!({"type": "media_segment_complete", "segment_idx": 1, "stream_id": stream_id, "chunks": 3}),
                json!({"type": "step_complete", "latency_ms": {"total": 125.0, "worker_e2e": 5.0,
                       "main_user_step": 125.0, "overhead": 120.0}}),
                json!({"type": "ltx2_segment_complete", "segment_idx": 1, "total_segments": 2}),
            ]
        );
        let second = segment(&mut t, 1, false);
        let id = second[0]["stream_id"].as_str().unwrap();
        assert!(id.starts_with("seg002-") && id != stream_id, "{id}");
        assert_eq!(second[0]["mime"], first[0]["mime"]);
        assert_eq!(
            second[1..4],
            [
                json!("binary:ftyp"),
                json!("binary:moof"),
                json!("binary:moof")
            ],
            "the init segment again before the fragments"
        );
        assert_eq!(second[4]["chunks"], 3);
        assert_eq!(second[6]["segment_idx"], 2);
    }

    #[test]
    fn an_init_segment_is_found_in_front_of_a_fragment() {
        let frame = [init(), boxed(b"moof"), boxed(b"mdat")].concat();
        assert_eq!(init_segment(&frame), Some(&init()[..]));
        assert_eq!(init_segment(&boxed(b"moof")), None);
        assert_eq!(init_segment(&[0, 0, 0, 3, b'f', b't', b'y', b'p']), None);

        // A pipeline that opens every segment with the init segment gets no second copy.
        let mut t = Translator::default();
        for segment_idx in 0..2 {
            let out = show(&t.translate(Outgoing::Binary(frame.clone())));
            assert_eq!(out.len(), 2, "media_init and the frame: {out:?}");
            assert_eq!(out[1], json!("binary:ftyp"));
            t.translate(pipeline(PipelineMessage::MediaSegmentComplete {
                segment_idx,
                stream_id: "s".into(),
                chunks: 1,
                duration_ms: 500,
            }));
        }
        // One that does not gets the cached init segment alone, not the fragment after it.
        let out = t.translate(Outgoing::Binary(boxed(b"moof")));
        assert_eq!(out[1], Outgoing::Binary(init()));
    }

    #[test]
    fn a_restarted_stream_counts_from_its_own_labels() {
        let mut t = Translator::default();
        for (pipeline_idx, dv) in [(0, 1), (1, 1)] {
            t.label(
                pipeline_idx,
                SegmentLabel {
                    segment_idx: dv,
                    total_segments: 1,
                },
            );
        }
        segment(&mut t, 0, true);
        let again = segment(&mut t, 1, false);
        assert_eq!(again[0]["segment_idx"], 1);
        assert!(
            again[0]["stream_id"]
                .as_str()
                .unwrap()
                .starts_with("seg001-")
        );
        assert_eq!(again.last().unwrap()["segment_idx"], 1);
    }

    #[test]
    fn unexpected_pipeline_frames_are_dropped() {
        let mut t = Translator::default();
        let out = t.translate(pipeline(PipelineMessage::QueueStatus {
            position: 1,
            queue_depth: 1,
        }));
        assert!(out.is_empty());
        assert!(t.translate(Outgoing::Text("not json".into())).is_empty());
    }
}
