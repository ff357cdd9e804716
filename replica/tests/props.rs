//! Property tests of the replica's parsers of untrusted or foreign bytes: the fMP4 box
//! splitter, the worker IPC frame codec and the YAML configuration.
//!
//! - Boxes: arbitrary byte streams, fed in arbitrary pieces, never panic the splitter and
//!   give the same chunks (or the same error) as one push; generated valid streams split
//!   into exactly the chunks they were built from.
//! - IPC: frames written by `write_frame` read back equal through any chunking; a stream cut
//!   anywhere gives back the whole frames before the cut, then a clean end or an error;
//!   arbitrary bytes never panic `read_frame`, and it never allocates more than the frame's
//!   announced (and limited) sizes, nothing at all for a frame over the limits.
//! - Configuration: no YAML text panics the loader; every error names the file and the
//!   field; whatever loads is usable (every timeout makes a deadline).
//!
//! `scripts/fuzz` runs the coverage-guided counterparts (`fuzz/fuzz_targets/`).

// The counting allocator below is the only unsafe code: `GlobalAlloc` is an unsafe trait.
// It forwards every call to the system allocator unchanged.
#![allow(unsafe_code)]

#[path = "../../common/tests/support/yaml_gen.rs"]
mod yaml_gen;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use framecast_common::config::{ConfigError, LayeredConfig};
use framecast_common::protocol::{ContinuationState, ErrorCode};
use framecast_replica::config::{ENV_PREFIX, ReplicaConfig};
use framecast_replica::generate::GenerateError;
use framecast_replica::media::boxes::{
    BoxChunk, ChunkKind, ChunkSplitter, find_box, tfdt_decode_times, top_level_boxes,
};
use framecast_replica::pipeline::PipelineEvent;
use framecast_replica::pool::ipc::{
    Frame, FromWorker, IpcError, MAX_BODY_BYTES, MAX_HEADER_BYTES, MetricOp, ToWorker, read_frame,
    write_frame,
};
use framecast_replica::store::StoreError;
use proptest::prelude::*;
use tokio::io::{AsyncRead, ReadBuf};

/// Records the largest single allocation the current thread makes while tracking is on.
mod alloc_tracking {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static TRACKING: Cell<bool> = const { Cell::new(false) };
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        let _ = TRACKING.try_with(|on| {
            if on.get() {
                let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
            }
        });
    }

    /// The system allocator, watched.
    pub struct Counting;

    // SAFETY: every method forwards to `System` with the caller's arguments unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: as above.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            // SAFETY: as above.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Runs `f` and returns its result with the largest single allocation it made.
    pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LARGEST.with(|l| l.set(0));
        TRACKING.with(|t| t.set(true));
        let result = f();
        TRACKING.with(|t| t.set(false));
        (result, LARGEST.with(Cell::get))
    }
}

#[global_allocator]
static ALLOCATOR: alloc_tracking::Counting = alloc_tracking::Counting;

fn config() -> ProptestConfig {
    yaml_gen::cases(256)
}

/// Splits `data` into pieces of the given sizes, cycled (0 counts as 1).
fn pieces<'a>(data: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = data;
    let mut i = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = sizes[i % sizes.len()].clamp(1, rest.len());
        i += 1;
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        Some(piece)
    })
}

fn piece_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        1 => Just(vec![usize::MAX]),
        1 => Just(vec![1]),
        4 => prop::collection::vec(1usize..64, 1..12),
    ]
}

// ---------------------------------------------------------------------------------------
// fMP4 boxes

/// One box: its type, its payload and whether its header uses the 64-bit size form.
#[derive(Debug, Clone)]
struct Mp4Box {
    kind: [u8; 4],
    payload: Vec<u8>,
    large: bool,
}

impl Mp4Box {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.large {
            out.extend_from_slice(&1u32.to_be_bytes());
            out.extend_from_slice(&self.kind);
            out.extend_from_slice(&(self.payload.len() as u64 + 16).to_be_bytes());
        } else {
            out.extend_from_slice(&(self.payload.len() as u32 + 8).to_be_bytes());
            out.extend_from_slice(&self.kind);
        }
        out.extend_from_slice(&self.payload);
        out
    }
}

fn mp4_box(kinds: &'static [&'static [u8; 4]]) -> impl Strategy<Value = Mp4Box> {
    (
        prop::sample::select(kinds),
        prop::collection::vec(any::<u8>(), 0..48),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(kind, payload, large)| Mp4Box {
            kind: *kind,
            payload,
            large,
        })
}

const EXTRA_KINDS: &[&[u8; 4]] = &[b"free", b"skip", b"styp", b"sidx", b"prft", b"uuid"];

/// A valid stream with the chunks the splitter must cut it into, and the trailing bytes
/// (boxes that close no chunk) it must hold back.
fn valid_stream() -> impl Strategy<Value = (Vec<u8>, Vec<BoxChunk>, usize)> {
    let init = (
        prop::collection::vec(mp4_box(EXTRA_KINDS), 0..2),
        prop::option::of(mp4_box(&[b"ftyp"])),
        prop::collection::vec(mp4_box(EXTRA_KINDS), 0..2),
        mp4_box(&[b"moov"]),
    )
        .prop_map(|(a, ftyp, b, moov)| {
            a.into_iter()
                .chain(ftyp)
                .chain(b)
                .chain([moov])
                .collect::<Vec<_>>()
        });
    let fragment = (
        prop::collection::vec(mp4_box(EXTRA_KINDS), 0..3),
        mp4_box(&[b"moof"]),
        prop::collection::vec(mp4_box(EXTRA_KINDS), 0..2),
        mp4_box(&[b"mdat"]),
    )
        .prop_map(|(a, moof, b, mdat)| {
            a.into_iter()
                .chain([moof])
                .chain(b)
                .chain([mdat])
                .collect::<Vec<_>>()
        });
    (
        init,
        prop::collection::vec(fragment, 0..5),
        prop::collection::vec(mp4_box(&[b"mfra", b"free"]), 0..2),
    )
        .prop_map(|(init, fragments, trailer)| {
            let concat = |boxes: &[Mp4Box]| boxes.iter().flat_map(Mp4Box::bytes).collect();
            let mut chunks = vec![BoxChunk {
                kind: ChunkKind::Init,
                bytes: concat(&init),
            }];
            chunks.extend(fragments.iter().map(|f| BoxChunk {
                kind: ChunkKind::Fragment,
                bytes: concat(f),
            }));
            let trailer: Vec<u8> = concat(&trailer);
            let mut stream: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.clone()).collect();
            stream.extend_from_slice(&trailer);
            (stream, chunks, trailer.len())
        })
}

/// Bytes that look like boxes (interesting types, sizes right, wrong or extreme), mixed
/// with plain random bytes.
fn box_soup() -> impl Strategy<Value = Vec<u8>> {
    let kinds: &'static [&'static [u8; 4]] = &[
        b"ftyp",
        b"moov",
        b"moof",
        b"mdat",
        b"traf",
        b"tfdt",
        b"free",
        b"mfra",
        b"\0\0\0\0",
    ];
    let size = prop_oneof![
        4 => Just(None),
        1 => prop::sample::select(&[0u32, 1, 7, 8, 9, 16, u32::MAX][..]).prop_map(Some),
        1 => any::<u32>().prop_map(Some),
    ];
    let large = prop_oneof![
        Just(None),
        prop::sample::select(&[0u64, 15, 16, 17, u64::MAX, u64::MAX - 7, 1 << 63][..])
            .prop_map(Some),
        any::<u64>().prop_map(Some),
    ];
    let piece = (
        prop::sample::select(kinds),
        size,
        large,
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(kind, size, large, payload)| {
            let mut out = Vec::new();
            match large {
                Some(size64) => {
                    out.extend_from_slice(&1u32.to_be_bytes());
                    out.extend_from_slice(kind);
                    out.extend_from_slice(&size64.to_be_bytes());
                }
                None => {
                    let size = size.unwrap_or(payload.len() as u32 + 8);
                    out.extend_from_slice(&size.to_be_bytes());
                    out.extend_from_slice(kind);
                }
            }
            out.extend_from_slice(&payload);
            out
        });
    prop_oneof![
        3 => prop::collection::vec(piece, 0..8).prop_map(|p| p.concat()),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

/// Pushes `stream` in pieces; returns the chunks and the first error (pushing stops there).
fn split(stream: &[u8], sizes: &[usize]) -> (Vec<BoxChunk>, Option<String>, ChunkSplitter) {
    let mut splitter = ChunkSplitter::new();
    let mut chunks = Vec::new();
    for piece in pieces(stream, sizes) {
        match splitter.push(piece) {
            Ok(out) => chunks.extend(out),
            Err(e) => {
                // Errors stick: the same bytes give the same error again.
                assert_eq!(splitter.push(&[]).unwrap_err(), e);
                return (chunks, Some(e.to_string()), splitter);
            }
        }
    }
    (chunks, None, splitter)
}

/// What every chunk must be: whole boxes, ending with the box that closes its kind.
fn check_chunk(chunk: &BoxChunk) {
    let boxes = top_level_boxes(&chunk.bytes).expect("a chunk holds whole boxes");
    let (last, _, _) = boxes.last().expect("a chunk is not empty");
    match chunk.kind {
        ChunkKind::Init => assert_eq!(last, b"moov"),
        ChunkKind::Fragment => assert_eq!(last, b"mdat"),
    }
}

/// `moof` payloads with one `traf`/`tfdt` per track (either size form, either version).
fn moof_with_times() -> impl Strategy<Value = (Vec<u8>, Vec<u64>)> {
    let traf = (
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..12),
    )
        .prop_map(|(time, v1, large_tfdt, large_traf, before)| {
            let (payload, time) = if v1 {
                (
                    [[1, 0, 0, 0].as_slice(), &time.to_be_bytes()].concat(),
                    time,
                )
            } else {
                let t = time as u32;
                (
                    [[0, 0, 0, 0].as_slice(), &t.to_be_bytes()].concat(),
                    u64::from(t),
                )
            };
            let tfdt = Mp4Box {
                kind: *b"tfdt",
                payload,
                large: large_tfdt,
            };
            let tfhd = Mp4Box {
                kind: *b"tfhd",
                payload: before,
                large: false,
            };
            let traf = Mp4Box {
                kind: *b"traf",
                payload: [tfhd.bytes(), tfdt.bytes()].concat(),
                large: large_traf,
            };
            (traf.bytes(), time)
        });
    (
        prop::collection::vec(any::<u8>(), 0..16),
        prop::collection::vec(traf, 0..4),
    )
        .prop_map(|(mfhd, trafs)| {
            let mfhd = Mp4Box {
                kind: *b"mfhd",
                payload: mfhd,
                large: false,
            };
            let mut payload = mfhd.bytes();
            let mut times = Vec::new();
            for (bytes, time) in trafs {
                payload.extend_from_slice(&bytes);
                times.push(time);
            }
            (payload, times)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn valid_streams_split_into_their_chunks_in_any_pieces(
        (stream, expected, trailer) in valid_stream(),
        sizes in piece_sizes(),
    ) {
        let mut whole = ChunkSplitter::new();
        prop_assert_eq!(&whole.push(&stream).unwrap(), &expected);
        prop_assert_eq!(whole.buffered(), trailer);
        let (chunks, error, splitter) = split(&stream, &sizes);
        prop_assert_eq!(error, None);
        prop_assert_eq!(&chunks, &expected);
        prop_assert_eq!(splitter.buffered(), trailer);
    }

    #[test]
    fn any_bytes_in_any_pieces_split_like_one_push(
        stream in box_soup(),
        sizes in piece_sizes(),
    ) {
        let whole = ChunkSplitter::new().push(&stream);
        let (chunks, error, splitter) = split(&stream, &sizes);
        for chunk in &chunks {
            check_chunk(chunk);
        }
        let emitted: Vec<u8> = chunks.iter().flat_map(|c| c.bytes.clone()).collect();
        prop_assert!(stream.starts_with(&emitted));
        match whole {
            Ok(whole_chunks) => {
                prop_assert_eq!(error, None);
                prop_assert_eq!(&chunks, &whole_chunks);
                prop_assert_eq!(emitted.len() + splitter.buffered(), stream.len());
            }
            Err(e) => prop_assert_eq!(error, Some(e.to_string())),
        }
    }

    #[test]
    fn box_readers_never_panic_on_any_bytes(bytes in box_soup()) {
        if let Ok(boxes) = top_level_boxes(&bytes) {
            let mut end = 0;
            for (_, offset, size) in boxes {
                prop_assert_eq!(offset, end);
                end = offset + size;
            }
            prop_assert_eq!(end, bytes.len());
        }
        let _ = find_box(&bytes, &[b"moov", b"mvex"]);
        let _ = find_box(&bytes, &[b"moof", b"traf", b"tfdt"]);
        let _ = tfdt_decode_times(&bytes);
    }

    #[test]
    fn decode_times_are_read_back_in_either_size_form((moof, times) in moof_with_times()) {
        prop_assert_eq!(tfdt_decode_times(&moof), times);
    }
}

// ---------------------------------------------------------------------------------------
// Worker IPC frames

/// An in-memory reader handing out its bytes in pieces of the given sizes, optionally
/// answering `Pending` before every piece (waking itself) like a socket that is not ready.
struct PieceReader {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    next: usize,
    stall: bool,
    stalled: bool,
}

impl PieceReader {
    fn new(data: Vec<u8>, sizes: Vec<usize>, stall: bool) -> Self {
        Self {
            data,
            pos: 0,
            sizes,
            next: 0,
            stall,
            stalled: false,
        }
    }
}

impl AsyncRead for PieceReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.stall && !this.stalled {
            this.stalled = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.stalled = false;
        let size = this.sizes[this.next % this.sizes.len()].max(1);
        this.next += 1;
        let n = size.min(this.data.len() - this.pos).min(buf.remaining());
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
        .block_on(f)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z0-9_]{0,8}"]
}

fn continuation_state() -> impl Strategy<Value = ContinuationState> {
    (text(), any::<u64>(), text(), prop::option::of(text())).prop_map(|(kind, n, s, signature)| {
        ContinuationState {
            kind,
            payload: serde_json::json!({"segment": n, "blob": s, "nested": [n, null, true]}),
            signature,
        }
    })
}

fn store_error() -> impl Strategy<Value = StoreError> {
    prop_oneof![
        (any::<usize>(), any::<usize>())
            .prop_map(|(size, capacity)| StoreError::TooLarge { size, capacity }),
        (any::<usize>(), any::<usize>())
            .prop_map(|(size, quota)| StoreError::OverQuota { size, quota }),
        text().prop_map(StoreError::Backend),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(&ErrorCode::ALL[..])
}

fn generate_error() -> impl Strategy<Value = GenerateError> {
    prop_oneof![
        text().prop_map(GenerateError::InvalidState),
        text().prop_map(GenerateError::InvalidRequest),
        text().prop_map(GenerateError::Failed),
        Just(GenerateError::Cancelled),
    ]
}

fn pipeline_event() -> impl Strategy<Value = PipelineEvent> {
    prop_oneof![
        (
            any::<u32>(),
            continuation_state(),
            proptest::option::of(continuation_state())
        )
            .prop_map(|(segment_idx, next_state, checkpoint)| {
                PipelineEvent::Generated {
                    segment_idx,
                    next_state,
                    checkpoint,
                }
            }),
        any::<u32>().prop_map(|segment_idx| PipelineEvent::MediaDone { segment_idx }),
        continuation_state().prop_map(|state| PipelineEvent::Exported { state }),
        text().prop_map(|message| PipelineEvent::ExportFailed { message }),
        (error_code(), text()).prop_map(|(code, message)| PipelineEvent::Failed { code, message }),
    ]
}

/// Finite (JSON has no NaN or infinity: `write_frame` sends them as `null`, which the
/// reader then refuses) and of few digits: serde_json, without its `float_roundtrip`
/// feature, may give back a long decimal one bit off.
fn metric_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<i32>().prop_map(|i| f64::from(i) / 64.0),
        any::<i32>().prop_map(|i| f64::from(i) * 1000.0),
        prop::sample::select(&[0.0, -0.0, 0.001, 1e-9, 1e300, f64::MIN_POSITIVE][..]),
    ]
}

fn metric_op() -> impl Strategy<Value = MetricOp> {
    prop_oneof![
        any::<u64>().prop_map(MetricOp::Increment),
        any::<u64>().prop_map(MetricOp::Absolute),
        metric_value().prop_map(MetricOp::GaugeIncrement),
        metric_value().prop_map(MetricOp::GaugeDecrement),
        metric_value().prop_map(MetricOp::GaugeSet),
        metric_value().prop_map(MetricOp::Record),
    ]
}

/// Worker → server headers (all but `hello`, whose stream format needs a generator).
fn from_worker() -> impl Strategy<Value = FromWorker> {
    prop_oneof![
        text().prop_map(|error| FromWorker::BuildFailed { error }),
        prop::result::maybe_ok(Just(()), text()).prop_map(|result| FromWorker::WarmedUp { result }),
        (
            any::<u64>(),
            prop::result::maybe_ok(Just(()), generate_error())
        )
            .prop_map(|(call, result)| FromWorker::Validated { call, result }),
        (any::<u64>(), text()).prop_map(|(session, text)| FromWorker::Text { session, text }),
        any::<u64>().prop_map(|session| FromWorker::Media { session }),
        (any::<u64>(), pipeline_event())
            .prop_map(|(session, event)| FromWorker::Event { session, event }),
        (any::<u64>(), text()).prop_map(|(call, owner)| FromWorker::BlobPut { call, owner }),
        (any::<u64>(), text()).prop_map(|(call, id)| FromWorker::BlobGet { call, id }),
        text().prop_map(|owner| FromWorker::BlobDropOwner { owner }),
        (
            text(),
            prop::collection::vec((text(), text()), 0..3),
            metric_op()
        )
            .prop_map(|(name, labels, op)| FromWorker::Metric { name, labels, op }),
    ]
}

/// Server → worker headers (all but those carrying a segment request).
fn to_worker() -> impl Strategy<Value = ToWorker> {
    prop_oneof![
        (any::<u64>(), continuation_state())
            .prop_map(|(call, state)| ToWorker::Validate { call, state }),
        (
            any::<u64>(),
            text(),
            prop::option::of(continuation_state()),
            any::<bool>()
        )
            .prop_map(
                |(session, session_id, initial_state, broadcast)| ToWorker::Start {
                    session,
                    session_id,
                    initial_state,
                    broadcast,
                }
            ),
        any::<u64>().prop_map(|session| ToWorker::Export { session }),
        any::<u64>().prop_map(|session| ToWorker::Cancel { session }),
        (any::<u64>(), prop::result::maybe_ok(text(), store_error()))
            .prop_map(|(call, result)| ToWorker::BlobStored { call, result }),
        (any::<u64>(), prop::result::maybe_ok(any::<bool>(), text()))
            .prop_map(|(call, result)| ToWorker::BlobLoaded { call, result }),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), prop::collection::vec(any::<u8>(), 0..600),]
}

/// Writes `frames` back to back, as the peer would.
fn encode<H: serde::Serialize>(frames: &[Frame<H>]) -> (Vec<u8>, Vec<usize>) {
    block_on(async {
        let mut out = Vec::new();
        let mut ends = Vec::new();
        for frame in frames {
            write_frame(&mut out, frame).await.unwrap();
            ends.push(out.len());
        }
        (out, ends)
    })
}

/// Reads frames until the end or an error.
fn decode<H: for<'de> serde::Deserialize<'de>>(
    reader: &mut PieceReader,
) -> (Vec<Frame<H>>, Option<IpcError>) {
    block_on(async {
        let mut frames = Vec::new();
        loop {
            match read_frame::<H>(reader).await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, None),
                Err(e) => return (frames, Some(e)),
            }
        }
    })
}

/// A frame prefix that announces sizes around the limits as well as anywhere.
fn prefix() -> impl Strategy<Value = [u8; 8]> {
    let header = prop_oneof![
        2 => 0u32..64,
        1 => (MAX_HEADER_BYTES as u32 - 1)..=(MAX_HEADER_BYTES as u32 + 1),
        1 => any::<u32>(),
    ];
    let body = prop_oneof![
        2 => 0u32..64,
        1 => (MAX_BODY_BYTES as u32 - 1)..=(MAX_BODY_BYTES as u32 + 1),
        1 => any::<u32>(),
    ];
    (header, body).prop_map(|(h, b)| {
        let mut p = [0u8; 8];
        p[..4].copy_from_slice(&h.to_be_bytes());
        p[4..].copy_from_slice(&b.to_be_bytes());
        p
    })
}

fn announced(prefix: &[u8]) -> (usize, usize) {
    let h = u32::from_be_bytes(prefix[..4].try_into().unwrap()) as usize;
    let b = u32::from_be_bytes(prefix[4..8].try_into().unwrap()) as usize;
    (h, b)
}

/// Slack for the runtime's and serde_json's own small allocations.
const SMALL: usize = 64 << 10;

proptest! {
    #![proptest_config(config())]

    #[test]
    fn worker_frames_round_trip_in_any_pieces(
        frames in prop::collection::vec((from_worker(), body()), 1..4),
        sizes in piece_sizes(),
        stall in any::<bool>(),
    ) {
        let frames: Vec<_> = frames.into_iter().map(|(h, b)| Frame::with_body(h, b)).collect();
        let (bytes, _) = encode(&frames);
        let (back, error) = decode::<FromWorker>(&mut PieceReader::new(bytes, sizes, stall));
        prop_assert!(error.is_none(), "{error:?}");
        prop_assert_eq!(back, frames);
    }

    #[test]
    fn server_frames_round_trip_in_any_pieces(
        frames in prop::collection::vec((to_worker(), body()), 1..4),
        sizes in piece_sizes(),
        stall in any::<bool>(),
    ) {
        let frames: Vec<_> = frames.into_iter().map(|(h, b)| Frame::with_body(h, b)).collect();
        let (bytes, _) = encode(&frames);
        let (back, error) = decode::<ToWorker>(&mut PieceReader::new(bytes, sizes, stall));
        prop_assert!(error.is_none(), "{error:?}");
        prop_assert_eq!(back, frames);
    }

    #[test]
    fn a_cut_stream_gives_its_whole_frames_then_an_end_or_an_error(
        frames in prop::collection::vec((from_worker(), body()), 1..4),
        cut in any::<prop::sample::Index>(),
        sizes in piece_sizes(),
    ) {
        let frames: Vec<_> = frames.into_iter().map(|(h, b)| Frame::with_body(h, b)).collect();
        let (mut bytes, ends) = encode(&frames);
        let cut = cut.index(bytes.len() + 1);
        bytes.truncate(cut);
        let whole = ends.iter().filter(|&&end| end <= cut).count();
        let (back, error) = decode::<FromWorker>(&mut PieceReader::new(bytes, sizes, false));
        prop_assert_eq!(&back[..], &frames[..whole]);
        let at_boundary = cut == 0 || ends.contains(&cut);
        prop_assert_eq!(
            error.is_none(),
            at_boundary,
            "cut at {} of frames ending at {:?}: {:?}", cut, ends, error
        );
    }

    #[test]
    fn any_bytes_read_as_frames_or_an_error_within_the_limits(
        first in prefix(),
        rest in prop::collection::vec(any::<u8>(), 0..96),
        sizes in piece_sizes(),
    ) {
        let mut bytes = first.to_vec();
        bytes.extend_from_slice(&rest);
        let (h, b) = announced(&first);
        let (result, largest) = alloc_tracking::largest_allocation(|| {
            block_on(read_frame::<FromWorker>(&mut PieceReader::new(bytes.clone(), sizes, false)))
        });
        if h > MAX_HEADER_BYTES || b > MAX_BODY_BYTES {
            prop_assert!(matches!(result, Err(IpcError::TooLarge { .. })), "{result:?}");
            prop_assert!(largest < SMALL, "allocated {largest} bytes for a refused frame");
        } else {
            // The header and body buffers (the header's JSON may take twice its size).
            prop_assert!(
                largest <= (2 * h).max(b).max(SMALL),
                "allocated {largest} bytes for a frame of {h} + {b}"
            );
        }
        // Whatever follows, reading on never panics.
        let _ = decode::<serde_json::Value>(&mut PieceReader::new(bytes, vec![7], false));
    }
}

// ---------------------------------------------------------------------------------------
// Configuration

/// Every section and field name of `ReplicaConfig`, at any level.
const REPLICA_FIELDS: &[&str] = &[
    "server",
    "streaming",
    "pool",
    "generator",
    "media",
    "store",
    "limits",
    "host",
    "port",
    "shutdown_grace_seconds",
    "session_timeout_seconds",
    "max_session_seconds",
    "generation_segment_cap",
    "max_sessions",
    "max_message_bytes",
    "max_init_image_bytes",
    "init_timeout_seconds",
    "client_write_timeout_seconds",
    "send_queue_messages",
    "ping_interval_seconds",
    "pong_timeout_seconds",
    "session_log_dir",
    "max_inference_steps",
    "max_guidance_scale",
    "max_prompt_chars",
    "max_queued_prompts",
    "max_seed_prompts",
    "max_image_pixels",
    "num_workers",
    "acquire_timeout_seconds",
    "warmup",
    "mode",
    "devices",
    "restart_backoff_seconds",
    "stall_timeout_seconds",
    "kind",
    "model_path",
    "device",
    "width",
    "height",
    "fps",
    "frames_per_segment",
    "num_inference_steps",
    "mock_latency_ms",
    "mock_audio",
    "video_encoder",
    "audio_encoder",
    "h264_profile",
    "x264_speed_preset",
    "bitrate_kbps",
    "fragment_duration_ms",
    "ttl_seconds",
    "blob_capacity_bytes",
    "max_blob_bytes_per_session",
    "state_secret",
    "prompt",
    "safety",
    "enabled",
    "providers",
    "timeout_ms",
    "operation_timeout_ms",
    "temperature",
    "max_tokens",
    "system_prompt_dir",
    "block_threshold",
    "unsafe_label",
    "dreamverse",
    "session_lifetime_seconds",
    "web_root",
    "backend",
    "redis",
    "url",
    "key_prefix",
];

const SHIPPED_REPLICA: &str = include_str!("../../config/replica.yaml");

fn load_replica(path: &std::path::Path) -> Result<ReplicaConfig, ConfigError> {
    LayeredConfig::new(ENV_PREFIX)
        .env_vars(std::iter::empty())
        .file(Some(path))
        .load()
}

/// Every error names the file; an invalid value also names its field.
fn check_config_error(err: &ConfigError, path: &std::path::Path, text: &str) {
    let shown = path.display().to_string();
    let message = err.to_string();
    assert!(message.contains(&shown), "{message}\n--- text:\n{text}");
    if let ConfigError::Invalid { origin, field, .. } = err {
        assert_eq!(origin, &shown, "{message}\n--- text:\n{text}");
        assert!(!field.is_empty(), "{message}\n--- text:\n{text}");
    }
}

/// What the replica does with its timeouts: deadlines `now + timeout`, which must not
/// overflow (`Instant + Duration` panics).
fn check_usable(c: &ReplicaConfig) {
    let now = std::time::Instant::now();
    for (field, seconds) in [
        (
            "server.shutdown_grace_seconds",
            c.server.shutdown_grace_seconds,
        ),
        (
            "streaming.session_timeout_seconds",
            c.streaming.session_timeout_seconds,
        ),
        (
            "streaming.max_session_seconds",
            c.streaming.max_session_seconds,
        ),
        (
            "streaming.init_timeout_seconds",
            c.streaming.init_timeout_seconds,
        ),
        (
            "streaming.client_write_timeout_seconds",
            c.streaming.client_write_timeout_seconds,
        ),
        (
            "streaming.ping_interval_seconds",
            c.streaming.ping_interval_seconds,
        ),
        (
            "streaming.pong_timeout_seconds",
            c.streaming.pong_timeout_seconds,
        ),
        (
            "pool.acquire_timeout_seconds",
            c.pool.acquire_timeout_seconds,
        ),
        (
            "pool.restart_backoff_seconds",
            c.pool.restart_backoff_seconds,
        ),
        ("pool.stall_timeout_seconds", c.pool.stall_timeout_seconds),
        ("store.ttl_seconds", c.store.ttl_seconds),
    ] {
        assert!(
            now.checked_add(std::time::Duration::from_secs(seconds))
                .is_some(),
            "{field} = {seconds} loads but overflows a deadline"
        );
    }
    assert!(
        now.checked_add(std::time::Duration::from_millis(
            c.generator.mock_latency_ms
        ))
        .is_some(),
        "generator.mock_latency_ms = {} loads but overflows a deadline",
        c.generator.mock_latency_ms
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_replica_yaml_loads_or_names_the_file_and_field(
        text in yaml_gen::yaml_text(REPLICA_FIELDS, SHIPPED_REPLICA),
    ) {
        let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(file.path(), &text).unwrap();
        match load_replica(file.path()) {
            Ok(config) => check_usable(&config),
            Err(err) => check_config_error(&err, file.path(), &text),
        }
    }
}

#[test]
fn timeouts_too_long_for_a_deadline_are_refused() {
    for (section, field) in [
        ("server", "shutdown_grace_seconds"),
        ("streaming", "session_timeout_seconds"),
        ("streaming", "max_session_seconds"),
        ("pool", "restart_backoff_seconds"),
        ("store", "ttl_seconds"),
    ] {
        let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(
            file.path(),
            format!("{section}:\n  {field}: 9223372036854775807\n"),
        )
        .unwrap();
        let err = load_replica(file.path()).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { field: f, .. } if *f == format!("{section}.{field}")),
            "{err}"
        );
    }
}

#[test]
fn the_shipped_replica_config_loads() {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), SHIPPED_REPLICA).unwrap();
    check_usable(&load_replica(file.path()).unwrap());
}
