//! One rendition of a broadcast: its queue, its codec invariant, and its output directory
//! (`init.mp4`, `seg00000.m4s`…, `index.m3u8`), which is what viewers fetch.
//!
//! Workers finish segments out of order; the playlist lists them in order (a segment is
//! listed once every earlier one is), slides over the newest `window` segments, and the
//! files of segments that left it are deleted a little later (a player that has just read
//! the previous playlist may still fetch them).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::invariant::RungInvariant;
use super::playlist::{MediaPlaylist, MediaSegment, Reorder};
use super::queue::RungQueue;

/// Segments past the window whose files are kept for players reading an older playlist.
const KEEP_BEHIND_WINDOW: u64 = 2;
/// Completions held out of order before the rung gives up on the missing one.
const REORDER_BOUND: usize = 64;

/// The name of segment `idx`'s file.
pub fn segment_file(idx: u64) -> String {
    format!("seg{idx:05}.m4s")
}

/// Writes files atomically: a reader sees the old or the new file, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[derive(Debug)]
struct Listing {
    playlist: MediaPlaylist,
    window: u64,
    reorder: Reorder<(Duration, Instant)>,
    /// Time from a segment's frames being handed over to it being listed, per segment.
    latencies: Vec<Duration>,
}

/// A rung's output directory and playlist.
#[derive(Debug)]
pub struct RungOutput {
    dir: PathBuf,
    listing: Mutex<Listing>,
}

impl RungOutput {
    /// Output into `dir` (created), listing the newest `window` segments of at most
    /// `segment_seconds` each, from segment `first` on (a resumed stream starts later).
    pub fn new(
        dir: PathBuf,
        window: usize,
        segment_seconds: f64,
        first: u32,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let target = segment_seconds.ceil().max(1.0) as u32;
        let playlist =
            MediaPlaylist::new(window, target, "init.mp4").map_err(std::io::Error::other)?;
        Ok(Self {
            dir,
            listing: Mutex::new(Listing {
                playlist,
                window: window as u64,
                reorder: Reorder::new(u64::from(first), REORDER_BOUND),
                latencies: Vec::new(),
            }),
        })
    }

    /// The directory the rung's files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores the rung's init segment (the first worker's, which set the invariant).
    pub fn write_init(&self, init: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.dir.join("init.mp4"), init)
    }

    /// Stores segment `idx` and lists every segment that is now contiguous.
    pub fn write_segment(
        &self,
        idx: u32,
        bytes: &[u8],
        duration: Duration,
        submitted_at: Instant,
    ) -> std::io::Result<()> {
        write_atomic(&self.dir.join(segment_file(u64::from(idx))), bytes)?;
        let mut listing = self.listing.lock();
        let ready = listing
            .reorder
            .insert(u64::from(idx), (duration, submitted_at))
            .map_err(std::io::Error::other)?;
        if ready.is_empty() {
            return Ok(());
        }
        for (seq, (duration, submitted_at)) in ready {
            listing
                .playlist
                .push(MediaSegment {
                    sequence: seq,
                    duration_s: duration.as_secs_f64(),
                    uri: segment_file(seq),
                })
                .map_err(std::io::Error::other)?;
            listing.latencies.push(submitted_at.elapsed());
            // What fell out of the window a while ago is no longer fetched.
            let first = (seq + 1).saturating_sub(listing.window);
            if let Some(old) = first.checked_sub(KEEP_BEHIND_WINDOW + 1) {
                let _ = std::fs::remove_file(self.dir.join(segment_file(old)));
            }
        }
        write_atomic(
            &self.dir.join("index.m3u8"),
            listing.playlist.render().as_bytes(),
        )
    }

    /// Marks the playlist ended (`#EXT-X-ENDLIST`).
    pub fn end(&self) -> std::io::Result<()> {
        let mut listing = self.listing.lock();
        listing.playlist.end();
        write_atomic(
            &self.dir.join("index.m3u8"),
            listing.playlist.render().as_bytes(),
        )
    }

    /// Segments listed so far.
    pub fn listed(&self) -> u64 {
        self.listing.lock().latencies.len() as u64
    }

    /// How long each listed segment took from hand-over to listing.
    pub fn latencies(&self) -> Vec<Duration> {
        self.listing.lock().latencies.clone()
    }
}

/// One rendition: what its workers share.
#[derive(Debug)]
pub struct Rung {
    /// Its path component.
    pub name: String,
    /// Generated frame size, which the workers scale from.
    pub source_size: (u32, u32),
    pub frames_per_segment: u32,
    pub queue: RungQueue,
    pub invariant: RungInvariant,
    pub output: RungOutput,
    failure: Mutex<Option<String>>,
}

impl Rung {
    /// A rung named `name`, its files in `output`.
    pub fn new(
        name: String,
        source_size: (u32, u32),
        frames_per_segment: u32,
        queue_segments: usize,
        output: RungOutput,
    ) -> Self {
        Self {
            name,
            source_size,
            frames_per_segment,
            queue: RungQueue::new(queue_segments),
            invariant: RungInvariant::default(),
            output,
            failure: Mutex::new(None),
        }
    }

    /// Fails the rung: no more segments are encoded for it.
    pub fn fail(&self, why: String) {
        self.failure.lock().get_or_insert(why);
        self.queue.close();
    }

    /// Whether the rung has failed.
    pub fn failed(&self) -> bool {
        self.failure.lock().is_some()
    }

    /// Why the rung failed.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }
}
