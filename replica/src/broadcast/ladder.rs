//! The orchestrator of one broadcast: a rung per rendition of the configured ladder, each
//! with its queue and encoder workers, all fed the same generated segments, and the master
//! playlist that lists the rungs once each has a codec (from its invariant) and a segment.
//!
//! Files, under `broadcast.dir/<stream id>/`: `master.m3u8`, and per rung
//! `<rung>/index.m3u8`, `<rung>/init.mp4`, `<rung>/seg00000.m4s`… The replica serves them at
//! `/v1/broadcast/<stream id>/…`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use framecast_common::protocol::valid_broadcast_id;
use parking_lot::Mutex;

use super::playlist::{RungInfo, master_playlist};
use super::queue::{PushError, SegmentChunk};
use super::rung::{Rung, RungOutput, write_atomic};
use super::worker::{WorkerOutput, run_worker};
use crate::config::{BroadcastSettings, RungSettings};
use crate::media::EncoderSettings;

/// Longest a segment waits for room in a rung's queue before that rung is failed as stalled.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Broadcasts running in this process, against `broadcast.max_broadcasts`.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Why a broadcast cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// `broadcast.max_broadcasts` are running already.
    #[error("{0} broadcasts are running already (broadcast.max_broadcasts)")]
    Busy(usize),
    /// The stream id cannot name a directory.
    #[error("stream id `{0}` is not a valid broadcast id")]
    BadId(String),
    /// The output directory cannot be written.
    #[error("broadcast output {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every rung failed.
    #[error("every rung failed; the first: {0}")]
    Failed(String),
}

/// What a broadcast is built from.
#[derive(Debug, Clone)]
pub struct LadderPlan {
    pub stream_id: String,
    pub settings: BroadcastSettings,
    /// The session's encoder settings at the generated size; each rung scales them.
    pub encoder: EncoderSettings,
    pub frames_per_segment: u32,
    /// The first segment the ladder gets (later than 0 for a resumed stream).
    pub first_segment: u32,
}

impl LadderPlan {
    /// Encoder settings of `rung`: the generated size divided by its divisor (even, at
    /// least 16x16), its bitrate.
    fn rung_encoder(&self, rung: &RungSettings) -> EncoderSettings {
        let scaled = |v: u32| ((v / rung.divisor.max(1)) & !1).max(16);
        EncoderSettings {
            width: scaled(self.encoder.width),
            height: scaled(self.encoder.height),
            bitrate_kbps: rung.bitrate_kbps,
            audio: None,
            ..self.encoder.clone()
        }
    }
}

/// A running broadcast.
#[derive(Debug)]
pub struct Ladder {
    id: String,
    root: PathBuf,
    fps: u32,
    rungs: Vec<(Arc<Rung>, RungSettings, EncoderSettings)>,
    workers: Mutex<Vec<JoinHandle<WorkerOutput>>>,
    /// Workers started per rung (their numbers).
    started: Vec<AtomicUsize>,
    master_written: AtomicBool,
    finished: AtomicBool,
}

impl Ladder {
    /// Creates the output directories and starts `workers_per_rung` workers per rung.
    pub fn start(plan: &LadderPlan) -> Result<Self, BroadcastError> {
        if !valid_broadcast_id(&plan.stream_id) {
            return Err(BroadcastError::BadId(plan.stream_id.clone()));
        }
        let max = plan.settings.max_broadcasts;
        if RUNNING.fetch_add(1, Ordering::AcqRel) >= max {
            RUNNING.fetch_sub(1, Ordering::AcqRel);
            return Err(BroadcastError::Busy(max));
        }
        let root = plan.settings.dir.join(&plan.stream_id);
        let segment_seconds =
            f64::from(plan.frames_per_segment) / f64::from(plan.encoder.fps.max(1));
        let mut rungs = Vec::new();
        for spec in &plan.settings.ladder {
            let dir = root.join(&spec.name);
            let output = RungOutput::new(
                dir.clone(),
                plan.settings.window_segments,
                segment_seconds,
                plan.first_segment,
            )
            .map_err(|source| {
                RUNNING.fetch_sub(1, Ordering::AcqRel);
                BroadcastError::Io { path: dir, source }
            })?;
            let rung = Rung::new(
                spec.name.clone(),
                (plan.encoder.width, plan.encoder.height),
                plan.frames_per_segment,
                plan.settings.queue_segments,
                output,
            );
            rungs.push((Arc::new(rung), spec.clone(), plan.rung_encoder(spec)));
        }
        let ladder = Self {
            id: plan.stream_id.clone(),
            root,
            fps: plan.encoder.fps,
            started: rungs.iter().map(|_| AtomicUsize::new(0)).collect(),
            rungs,
            workers: Mutex::new(Vec::new()),
            master_written: AtomicBool::new(false),
            finished: AtomicBool::new(false),
        };
        for rung in 0..ladder.rungs.len() {
            for _ in 0..plan.settings.workers_per_rung {
                ladder.add_worker(rung);
            }
        }
        Ok(ladder)
    }

    /// The stream id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the master playlist is served, relative to the replica's origin.
    pub fn master_path(&self) -> String {
        format!("/v1/broadcast/{}/master.m3u8", self.id)
    }

    /// The rungs, in ladder order.
    pub fn rungs(&self) -> impl Iterator<Item = &Arc<Rung>> {
        self.rungs.iter().map(|(r, _, _)| r)
    }

    /// Adds an encoder worker to rung `rung` (by ladder position), mid-stream if need be:
    /// it starts popping from the queue's current head.
    pub fn add_worker(&self, rung: usize) {
        if let Some((_, _, settings)) = self.rungs.get(rung) {
            self.add_worker_with(rung, settings.clone());
        }
    }

    /// [`Ladder::add_worker`] with encoder settings of its own (tests use this to bring a
    /// worker whose codec configuration disagrees with the rung's).
    pub fn add_worker_with(&self, rung: usize, settings: EncoderSettings) {
        let Some((r, _, _)) = self.rungs.get(rung) else {
            return;
        };
        let n = self.started[rung].fetch_add(1, Ordering::AcqRel);
        let r = r.clone();
        let handle = std::thread::Builder::new()
            .name(format!("fc-bcast-{}-{n}", r.name))
            .spawn(move || run_worker(r, n, settings))
            .expect("spawn broadcast encoder worker");
        self.workers.lock().push(handle);
    }

    /// Hands segment `segment_idx`'s frames to every rung that has not failed, waiting for
    /// room in each queue (back-pressure); a rung whose workers take nothing for 30 s is
    /// failed. An error only when every rung has failed. The caller writes the master
    /// playlist ([`Ladder::write_master_if_ready`]) when it wants to tell viewers.
    pub fn push_segment(
        &self,
        segment_idx: u32,
        frames: Arc<Vec<Vec<u8>>>,
    ) -> Result<(), BroadcastError> {
        let chunk = SegmentChunk {
            segment_idx,
            frames,
            submitted_at: Instant::now(),
        };
        for (rung, _, _) in &self.rungs {
            if rung.failed() {
                continue;
            }
            match rung.queue.push(chunk.clone(), PUSH_TIMEOUT) {
                Ok(()) => {}
                Err(PushError::Timeout(after)) => {
                    rung.fail(format!("no encoder worker took a segment for {after:?}"))
                }
                Err(PushError::Closed) => {}
            }
        }
        match self.rungs.iter().all(|(r, _, _)| r.failed()) {
            true => Err(BroadcastError::Failed(
                self.rungs[0].0.failure().unwrap_or_default(),
            )),
            false => Ok(()),
        }
    }

    /// Writes `master.m3u8` once every live rung has its codec and a listed segment (so a
    /// player never finds a rung without a playlist); true when it is written.
    pub fn write_master_if_ready(&self) -> bool {
        if self.master_written.load(Ordering::Acquire) {
            return true;
        }
        let mut infos = Vec::new();
        for (rung, spec, enc) in &self.rungs {
            if rung.failed() {
                continue;
            }
            let Some(inv) = rung.invariant.get() else {
                return false;
            };
            if rung.output.listed() == 0 {
                return false;
            }
            infos.push(RungInfo {
                name: spec.name.clone(),
                width: enc.width,
                height: enc.height,
                bandwidth_bps: u64::from(spec.bitrate_kbps) * 1000,
                average_bandwidth_bps: None,
                codecs: inv.codec_string(),
            });
        }
        if infos.is_empty() {
            return false;
        }
        let written = master_playlist(&infos, f64::from(self.fps))
            .map_err(std::io::Error::other)
            .and_then(|text| write_atomic(&self.root.join("master.m3u8"), text.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write the broadcast's master playlist");
            return false;
        }
        self.master_written.store(true, Ordering::Release);
        true
    }

    /// Ends the broadcast: the queues close, the workers finish what is queued, the
    /// playlists end (`#EXT-X-ENDLIST`). Returns what each worker did.
    pub fn finish(&self) -> Vec<WorkerOutput> {
        if self.finished.swap(true, Ordering::AcqRel) {
            return Vec::new();
        }
        for (rung, _, _) in &self.rungs {
            rung.queue.close();
        }
        let handles = std::mem::take(&mut *self.workers.lock());
        let outputs: Vec<WorkerOutput> =
            handles.into_iter().filter_map(|h| h.join().ok()).collect();
        self.write_master_if_ready();
        for (rung, _, _) in &self.rungs {
            let _ = rung.output.end();
        }
        outputs
    }

    /// Deletes the broadcast's files after `after` (viewers may still be fetching the end).
    pub fn remove_later(&self, after: Duration) {
        let root = self.root.clone();
        let _ = std::thread::Builder::new()
            .name("fc-bcast-cleanup".into())
            .spawn(move || {
                std::thread::sleep(after);
                let _ = std::fs::remove_dir_all(root);
            });
    }
}

impl Drop for Ladder {
    fn drop(&mut self) {
        self.finish();
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}
