//! Holds a segment's `media_segment_complete` until the resume record covering the next
//! segment is in the session store.
//!
//! A client resumes at the first segment whose `media_segment_complete` it did not get, so
//! that message is a promise: another replica can continue right after this segment. The
//! session saves its record when segment k is generated (the record then covers k + 1), and
//! a store that writes behind (Redis) lands it a little later; a replica killed in between
//! used to leave the client with segment k complete and a record that could only resume at
//! k, and the resume was refused. The media thread puts [`Outgoing::Encoded`] before each
//! segment's completion messages; the socket writer meets it with [`ResumeGate::hold`],
//! which waits until the record landed.
//!
//! A store that is slow or down must not cost the stream its pace: the wait is bounded
//! (`store.resume.record_wait_ms`), and after a wait timed out or a save failed the gate
//! stops waiting until a record lands again (the client may then lack a resume point, as
//! it would without the gate).
//!
//! [`Outgoing::Encoded`]: crate::pipeline::Outgoing::Encoded

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::Landed;

/// How far a session's stored resume records reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordProgress {
    /// Segments generated as of the newest record that landed: a resume may start at any
    /// segment up to this index.
    pub covered: u32,
    /// Saves that failed or were dropped so far.
    pub failures: u64,
    /// The session saves no more records (it ended, or resumes are off): nothing to wait
    /// for.
    pub stopped: bool,
}

/// The session's side: reports each save's outcome to the gate.
#[derive(Debug, Clone)]
pub struct RecordTracker {
    progress: Arc<watch::Sender<RecordProgress>>,
}

impl RecordTracker {
    /// What the store calls once the record covering `generated` segments landed or failed.
    pub fn landed(&self, generated: u32) -> Landed {
        let progress = self.progress.clone();
        Box::new(move |ok| {
            progress.send_modify(|p| {
                if ok {
                    p.covered = p.covered.max(generated);
                } else {
                    p.failures += 1;
                }
            });
        })
    }

    /// No more records will be saved: the gate lets everything through.
    pub fn stop(&self) {
        self.progress.send_modify(|p| p.stopped = true);
    }
}

/// The socket writer's side: holds completions until their record landed.
#[derive(Debug)]
pub struct ResumeGate {
    progress: watch::Receiver<RecordProgress>,
    limit: Duration,
    /// A wait timed out or a save failed, and no record landed since: do not wait.
    degraded: bool,
}

impl ResumeGate {
    /// A gate waiting at most `limit` per segment, and the tracker that opens it.
    pub fn new(limit: Duration) -> (Self, RecordTracker) {
        let (tx, rx) = watch::channel(RecordProgress::default());
        let gate = Self {
            progress: rx,
            limit,
            degraded: false,
        };
        (
            gate,
            RecordTracker {
                progress: Arc::new(tx),
            },
        )
    }

    /// Returns once the record covering the segment after `segment` landed, the wait is
    /// given up (see the module docs), or the session stopped saving.
    pub async fn hold(&mut self, segment: u32) {
        let needed = segment.saturating_add(1);
        let now = *self.progress.borrow();
        if now.covered >= needed {
            self.degraded = false;
            return;
        }
        if now.stopped || self.degraded || self.limit.is_zero() {
            return;
        }
        let waited = tokio::time::timeout(
            self.limit,
            self.progress
                .wait_for(|p| p.covered >= needed || p.failures > now.failures || p.stopped),
        )
        .await;
        let why = match waited {
            Ok(Ok(p)) if p.covered >= needed || p.stopped => return,
            // The session is gone.
            Ok(Err(_)) => return,
            Ok(Ok(_)) => "the save failed",
            Err(_) => "no answer in time",
        };
        self.degraded = true;
        tracing::warn!(
            segment,
            why,
            limit = ?self.limit,
            "resume record not stored; segments are reported complete without waiting for it \
             until a record lands again (a resume after a crash may restart the stream)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> Duration {
        Duration::from_millis(200)
    }

    #[tokio::test]
    async fn a_completion_waits_for_the_record_covering_the_next_segment() {
        let (mut gate, tracker) = ResumeGate::new(Duration::from_secs(10));
        let landed = tracker.landed(3);
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            landed(true);
        });
        gate.hold(2).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!gate.degraded);
        // Already covered: no wait at all.
        tokio::time::timeout(Duration::from_millis(1), gate.hold(1))
            .await
            .expect("covered segments pass at once");
    }

    #[tokio::test]
    async fn an_older_record_landing_does_not_open_the_gate() {
        let (mut gate, tracker) = ResumeGate::new(limit());
        tracker.landed(2)(true);
        let started = tokio::time::Instant::now();
        gate.hold(2).await;
        // It waited the whole limit, then gave up.
        assert!(started.elapsed() >= limit());
        assert!(gate.degraded);
    }

    #[tokio::test]
    async fn after_a_timeout_nothing_waits_until_a_record_lands_again() {
        let (mut gate, tracker) = ResumeGate::new(limit());
        gate.hold(0).await;
        assert!(gate.degraded);
        let started = tokio::time::Instant::now();
        for segment in 1..5 {
            gate.hold(segment).await;
        }
        assert!(started.elapsed() < limit(), "degraded: no waits");
        tracker.landed(6)(true);
        gate.hold(5).await;
        assert!(!gate.degraded, "a record landed: waits again");
        let started = tokio::time::Instant::now();
        gate.hold(6).await;
        assert!(started.elapsed() >= limit());
    }

    #[tokio::test]
    async fn a_failed_save_releases_the_wait_at_once() {
        let (mut gate, tracker) = ResumeGate::new(Duration::from_secs(10));
        let landed = tracker.landed(1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            landed(false);
        });
        let started = tokio::time::Instant::now();
        gate.hold(0).await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(gate.degraded);
    }

    #[tokio::test]
    async fn a_session_that_stopped_saving_or_is_gone_holds_nothing() {
        let (mut gate, tracker) = ResumeGate::new(Duration::from_secs(10));
        tracker.stop();
        tokio::time::timeout(Duration::from_secs(1), gate.hold(7))
            .await
            .expect("stopped: no wait");
        let (mut gate, tracker) = ResumeGate::new(Duration::from_secs(10));
        drop(tracker);
        tokio::time::timeout(Duration::from_secs(1), gate.hold(7))
            .await
            .expect("gone: no wait");
    }
}
