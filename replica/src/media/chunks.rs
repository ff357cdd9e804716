//! The muxer side: typed chunks, which segment each fragment belongs to, and the appsink
//! handler that frames the muxer's bytes and hands chunks to the encoder's owner.

use std::collections::VecDeque;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;

use super::MediaError;
use super::boxes::{ChunkKind, ChunkSplitter};

/// Polling step while waiting for room in the chunk queue.
const POLL: Duration = Duration::from_millis(2);

/// One piece of fMP4 output, cut on box boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaChunk {
    /// Init segment (`ftyp`+`moov`) or fragment (`moof`+`mdat`).
    pub kind: ChunkKind,
    /// Segment the chunk belongs to (the init segment: the first segment).
    pub segment_idx: u32,
    /// 0-based fragment number within its segment (0 for the init segment).
    pub fragment_idx: u32,
    /// Media time the fragment covers (zero for the init segment).
    pub duration: Duration,
    /// The bytes to append to the SourceBuffer.
    pub bytes: Vec<u8>,
    /// When the muxer finished the chunk (for latency metrics and benchmarks).
    pub emitted_at: Instant,
}

impl MediaChunk {
    /// Length in bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }
}

/// What the muxer thread hands to the encoder's owner.
#[derive(Debug)]
pub(super) enum Output {
    /// A finished chunk.
    Chunk(MediaChunk),
    /// The muxer output could not be framed.
    Failed(MediaError),
}

/// Maps fragment start times to the segment they belong to.
#[derive(Debug, Default)]
pub(super) struct Timeline {
    /// `(start time in ns, segment index)` of segments begun and not yet fully emitted.
    pub(super) segments: VecDeque<(u64, u32)>,
    current: Option<(u32, u32)>, // (segment, next fragment index)
}

impl Timeline {
    fn locate(&mut self, start_ns: u64) -> (u32, u32) {
        while self.segments.len() > 1 && self.segments[1].0 <= start_ns {
            self.segments.pop_front();
        }
        let segment = self.segments.front().map_or(0, |s| s.1);
        let fragment = match self.current {
            Some((s, next)) if s == segment => next,
            _ => 0,
        };
        self.current = Some((segment, fragment + 1));
        (segment, fragment)
    }
}

/// Splits the muxer output into chunks and forwards them; runs on the streaming thread.
pub(super) struct ChunkSink {
    splitter: ChunkSplitter,
    open_start: Option<u64>,
    open_duration: u64,
    timeline: Arc<Mutex<Timeline>>,
    tx: SyncSender<Output>,
}

impl ChunkSink {
    pub(super) fn on_buffer(&mut self, buffer: &gst::BufferRef) -> Result<(), gst::FlowError> {
        let is_header = buffer.flags().contains(gst::BufferFlags::HEADER);
        if !is_header && self.open_start.is_none() {
            self.open_start = buffer.pts().map(gst::ClockTime::nseconds);
            self.open_duration = 0;
        }
        if !is_header {
            self.open_duration += buffer.duration().map_or(0, gst::ClockTime::nseconds);
        }
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let chunks = match self.splitter.push(map.as_slice()) {
            Ok(chunks) => chunks,
            Err(err) => {
                let _ = self.tx.try_send(Output::Failed(MediaError::Element {
                    element: "isofmp4mux".into(),
                    message: err.to_string(),
                }));
                return Err(gst::FlowError::Error);
            }
        };
        for chunk in chunks {
            let (segment_idx, fragment_idx, duration) = match chunk.kind {
                ChunkKind::Init => (
                    self.timeline
                        .lock()
                        .map_or(0, |t| t.segments.front().map_or(0, |s| s.1)),
                    0,
                    Duration::ZERO,
                ),
                ChunkKind::Fragment => {
                    let start = self.open_start.take().unwrap_or(0);
                    let (s, f) = self
                        .timeline
                        .lock()
                        .map_err(|_| gst::FlowError::Error)?
                        .locate(start);
                    (
                        s,
                        f,
                        Duration::from_nanos(std::mem::take(&mut self.open_duration)),
                    )
                }
            };
            self.send(Output::Chunk(MediaChunk {
                kind: chunk.kind,
                segment_idx,
                fragment_idx,
                duration,
                bytes: chunk.bytes,
                emitted_at: Instant::now(),
            }))?;
        }
        Ok(())
    }

    /// Waits for room in the queue, so a slow consumer slows the whole pipeline down and the
    /// producer's bounded `push_frame` reports it. Dropping the encoder disconnects the queue,
    /// which ends this wait.
    fn send(&self, mut item: Output) -> Result<(), gst::FlowError> {
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(gst::FlowError::Flushing),
                Err(TrySendError::Full(back)) => {
                    item = back;
                    std::thread::sleep(POLL);
                }
            }
        }
    }
}

impl ChunkSink {
    /// A handler at the start of a stream that sends chunks on `tx`.
    pub(super) fn new(timeline: Arc<Mutex<Timeline>>, tx: SyncSender<Output>) -> Self {
        Self {
            splitter: ChunkSplitter::new(),
            open_start: None,
            open_duration: 0,
            timeline,
            tx,
        }
    }
}
