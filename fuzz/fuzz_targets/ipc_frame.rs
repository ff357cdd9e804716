//! The worker IPC codec on arbitrary bytes, delivered in pieces (size from the first input
//! byte, whose top bit picks the server's or the worker's header type): `read_frame` never
//! panics, never allocates more than a frame's announced sizes (nothing for a frame over
//! `MAX_HEADER_BYTES`/`MAX_BODY_BYTES`), and every frame it accepts is written back and
//! read again unchanged in kind and body.
//!
//! Needs the replica crate (libtorch, GStreamer), so it builds only with `--features
//! replica`; `scripts/fuzz ipc_frame` passes it and puts libtorch on the library path.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use framecast_replica::pool::ipc::{
    Frame, FromWorker, IpcError, MAX_BODY_BYTES, MAX_HEADER_BYTES, ToWorker, read_frame,
    write_frame,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, ReadBuf};

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

/// The system allocator, recording the largest single allocation while tracking is on.
struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Hands out its bytes `piece` at a time.
struct PieceReader<'a> {
    data: &'a [u8],
    pos: usize,
    piece: usize,
}

impl AsyncRead for PieceReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .piece
            .min(self.data.len() - self.pos)
            .min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

/// Slack for serde_json's and the runtime's own small allocations.
const SMALL: usize = 64 << 10;

fn frames<H: Serialize + DeserializeOwned + std::fmt::Debug>(stream: &[u8], piece: usize) {
    let mut reader = PieceReader {
        data: stream,
        pos: 0,
        piece,
    };
    for _ in 0..16 {
        // What the next prefix announces, to hold the allocations to it.
        let announced = stream.get(reader.pos..reader.pos + 8).map(|p| {
            let h = u32::from_be_bytes(p[..4].try_into().unwrap()) as usize;
            let b = u32::from_be_bytes(p[4..].try_into().unwrap()) as usize;
            (h, b)
        });
        LARGEST.with(|l| l.set(0));
        TRACKING.with(|t| t.set(true));
        let result = runtime().block_on(read_frame::<H>(&mut reader));
        TRACKING.with(|t| t.set(false));
        let largest = LARGEST.with(Cell::get);
        match announced {
            Some((h, b)) if h > MAX_HEADER_BYTES || b > MAX_BODY_BYTES => {
                assert!(
                    matches!(result, Err(IpcError::TooLarge { .. })),
                    "{result:?}"
                );
                assert!(largest < SMALL, "allocated {largest} for a refused frame");
            }
            Some((h, b)) => assert!(
                largest <= (2 * h).max(b).max(SMALL),
                "allocated {largest} for a frame of {h} + {b}"
            ),
            None => assert!(largest < SMALL, "allocated {largest} with no prefix"),
        }
        let frame = match result {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                assert_eq!(reader.pos, stream.len(), "a clean end only at the end");
                return;
            }
            Err(_) => return,
        };
        // Written back and read again: the same kind of message, the same body.
        let again = runtime().block_on(async {
            let mut bytes = Vec::new();
            write_frame(&mut bytes, &frame)
                .await
                .expect("an accepted frame is written");
            read_frame::<H>(&mut bytes.as_slice()).await
        });
        let again: Frame<H> = again
            .unwrap_or_else(|e| panic!("{frame:?} was written back and refused: {e}"))
            .expect("a written frame is not an end");
        assert_eq!(again.body, frame.body);
        let kind = |h: &H| {
            serde_json::to_value(h)
                .ok()
                .and_then(|v| v.get("type").cloned())
        };
        assert_eq!(kind(&again.header), kind(&frame.header));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let piece = match usize::from(first & 0x7f) {
        0 => usize::MAX,
        n => n,
    };
    if first & 0x80 == 0 {
        frames::<FromWorker>(stream, piece);
    } else {
        frames::<ToWorker>(stream, piece);
    }
});
