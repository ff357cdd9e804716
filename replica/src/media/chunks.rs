//! The muxer side: typed chunks and the appsink handler that frames a segment muxer's bytes
//! and hands chunks to the encoder's owner.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
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
    /// Segment the chunk belongs to (the init segment: the first segment). A segment's
    /// sound may start a little before its video: the end of the previous segment's sound
    /// that the audio encoder still held when that segment ended (less than one audio
    /// frame, plus the encoder's own delay).
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

/// Splits one segment muxer's output into chunks and forwards them; runs on that muxer's
/// streaming thread.
pub(super) struct ChunkSink {
    splitter: ChunkSplitter,
    segment_idx: u32,
    next_fragment: u32,
    /// Media time of the fragment being received, from its header buffer.
    open_duration: u64,
    /// Whether the stream's init segment went out: every segment's muxer writes one, and
    /// only the first is passed on (later ones differ only in their creation time).
    init_sent: Arc<AtomicBool>,
    tx: SyncSender<Output>,
}

impl ChunkSink {
    pub(super) fn on_buffer(&mut self, buffer: &gst::BufferRef) -> Result<(), gst::FlowError> {
        let flags = buffer.flags();
        // The fragment header (`moof`) is HEADER; the init segment is HEADER | DISCONT.
        if flags.contains(gst::BufferFlags::HEADER) && !flags.contains(gst::BufferFlags::DISCONT) {
            self.open_duration = buffer.duration().map_or(0, gst::ClockTime::nseconds);
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
            let (fragment_idx, duration) = match chunk.kind {
                ChunkKind::Init => {
                    if self.init_sent.swap(true, Ordering::AcqRel) {
                        continue;
                    }
                    (0, Duration::ZERO)
                }
                ChunkKind::Fragment => {
                    self.next_fragment += 1;
                    (
                        self.next_fragment - 1,
                        Duration::from_nanos(std::mem::take(&mut self.open_duration)),
                    )
                }
            };
            self.send(Output::Chunk(MediaChunk {
                kind: chunk.kind,
                segment_idx: self.segment_idx,
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
    /// A handler for segment `segment_idx`'s muxer that sends chunks on `tx`.
    pub(super) fn new(
        segment_idx: u32,
        init_sent: Arc<AtomicBool>,
        tx: SyncSender<Output>,
    ) -> Self {
        Self {
            splitter: ChunkSplitter::new(),
            segment_idx,
            next_fragment: 0,
            open_duration: 0,
            init_sent,
            tx,
        }
    }
}
