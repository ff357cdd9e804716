//! The FIFO queue both pools share: worker slots, waiting sessions in arrival order, and the
//! hand-off of a returned worker to the first session still waiting.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{oneshot, watch};

use super::{PoolError, PoolStatus, QueuePosition, Worker, WorkerLease, WorkerStatus};

type Grant = (u32, Worker);

/// What `/status` says of one slot besides whether its worker is leased.
#[derive(Debug, Clone, Default)]
pub(super) struct SlotInfo {
    /// May be handed to sessions.
    pub ready: bool,
    /// Not ready yet but will be soon (a worker process restarting); sessions queue for it
    /// instead of being refused.
    pub pending: bool,
    /// Its process is running.
    pub alive: bool,
    /// Its process id, when it has its own.
    pub pid: Option<u32>,
    /// Restarts after crashes.
    pub restarts: u32,
    /// `cpu`, `cuda:0`, ...
    pub device: String,
    /// Outcome of the last warmup.
    pub warmup: Option<Result<(), String>>,
}

struct Slot {
    worker: Option<Worker>,
    info: SlotInfo,
}

struct Waiter {
    ticket: u64,
    tx: oneshot::Sender<Grant>,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Slot>,
    waiters: VecDeque<Waiter>,
    next_ticket: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Bumped whenever the queue changes, so waiters can report their new position.
    changed: watch::Sender<u64>,
    warmup_enabled: bool,
}

/// Worker slots and the sessions waiting for them.
#[derive(Clone)]
pub(super) struct WorkerQueue {
    shared: Arc<Shared>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // parking_lot does not poison: a panic while holding the lock leaves plain data
        // behind, and the queue keeps serving.
        self.inner.lock()
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Gives a worker back: to the first waiter still waiting if the slot is ready, else to
    /// the slot.
    fn release(self: &Arc<Self>, gpu_id: u32, mut worker: Worker) {
        let mut inner = self.lock();
        if inner.slots[gpu_id as usize].info.ready {
            while let Some(waiter) = inner.waiters.pop_front() {
                match waiter.tx.send((gpu_id, worker)) {
                    Ok(()) => {
                        drop(inner);
                        self.notify();
                        return;
                    }
                    // That waiter gave up; try the next one.
                    Err((_, back)) => worker = back,
                }
            }
        }
        inner.slots[gpu_id as usize].worker = Some(worker);
        drop(inner);
        self.notify();
    }

    fn lease(self: &Arc<Self>, (gpu_id, worker): Grant) -> WorkerLease {
        let shared = self.clone();
        WorkerLease::new(gpu_id, worker, move |w| shared.release(gpu_id, w))
    }

    fn position(&self, ticket: u64) -> Option<QueuePosition> {
        let inner = self.lock();
        let index = inner.waiters.iter().position(|w| w.ticket == ticket)?;
        Some(QueuePosition {
            position: index as u32 + 1,
            queue_depth: inner.waiters.len() as u32,
        })
    }
}

/// Removes a waiter that stops waiting (timeout or cancelled session) and returns any worker
/// that was granted to it in the meantime.
struct Ticket {
    shared: Arc<Shared>,
    ticket: u64,
    rx: Option<oneshot::Receiver<Grant>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        {
            let mut inner = self.shared.lock();
            inner.waiters.retain(|w| w.ticket != self.ticket);
        }
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok((gpu_id, worker)) = rx.try_recv() {
                self.shared.release(gpu_id, worker);
            }
        }
        self.shared.notify();
    }
}

impl std::fmt::Debug for WorkerQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerQueue")
            .field("status", &self.status())
            .finish()
    }
}

impl WorkerQueue {
    /// One slot per worker, each starting with `info`.
    pub fn new(workers: Vec<(Worker, SlotInfo)>, warmup_enabled: bool) -> Self {
        let slots = workers
            .into_iter()
            .map(|(worker, info)| Slot {
                worker: Some(worker),
                info,
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    slots,
                    ..Inner::default()
                }),
                changed: watch::channel(0).0,
                warmup_enabled,
            }),
        }
    }

    /// Slots in all.
    pub fn len(&self) -> usize {
        self.shared.lock().slots.len()
    }

    /// Takes slot `index`'s idle worker out (e.g. to warm it up); `None` while leased.
    pub fn take(&self, index: usize) -> Option<Worker> {
        self.shared.lock().slots[index].worker.take()
    }

    /// Puts a worker taken with [`WorkerQueue::take`] back.
    pub fn put_back(&self, index: usize, worker: Worker) {
        self.shared.release(index as u32, worker);
    }

    /// Changes what slot `index` reports; a slot that became ready serves the first waiter.
    pub fn update(&self, index: usize, change: impl FnOnce(&mut SlotInfo)) {
        let worker = {
            let mut inner = self.shared.lock();
            let slot = &mut inner.slots[index];
            change(&mut slot.info);
            if slot.info.ready && !inner.waiters.is_empty() {
                inner.slots[index].worker.take()
            } else {
                None
            }
        };
        match worker {
            Some(worker) => self.shared.release(index as u32, worker),
            None => self.shared.notify(),
        }
    }

    /// Waits up to `timeout` for a worker, reporting queue positions to `on_queued`.
    pub async fn acquire(
        &self,
        timeout: Duration,
        on_queued: &mut (dyn FnMut(QueuePosition) + Send),
    ) -> Result<WorkerLease, PoolError> {
        let shared = &self.shared;
        let mut ticket = {
            let mut inner = shared.lock();
            if !inner.slots.iter().any(|s| s.info.ready || s.info.pending) {
                return Err(PoolError::NoneReady);
            }
            if inner.waiters.is_empty()
                && let Some(i) = inner
                    .slots
                    .iter()
                    .position(|s| s.info.ready && s.worker.is_some())
            {
                let worker = inner.slots[i].worker.take().expect("checked above");
                drop(inner);
                shared.notify();
                return Ok(shared.lease((i as u32, worker)));
            }
            let (tx, rx) = oneshot::channel();
            let id = inner.next_ticket;
            inner.next_ticket += 1;
            inner.waiters.push_back(Waiter { ticket: id, tx });
            Ticket {
                shared: shared.clone(),
                ticket: id,
                rx: Some(rx),
            }
        };
        shared.notify();

        let mut changes = shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        loop {
            let position = shared.position(ticket.ticket);
            if let Some(p) = position
                && position != last
            {
                on_queued(p);
                last = position;
            }
            let rx = ticket.rx.as_mut().expect("present until drop");
            tokio::select! {
                grant = rx => {
                    ticket.rx = None;
                    return match grant {
                        Ok(grant) => Ok(shared.lease(grant)),
                        // The pool never drops a waiter's sender without sending; be safe.
                        Err(_) => Err(PoolError::NoneReady),
                    };
                }
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(deadline) => return Err(PoolError::Timeout(timeout)),
            }
        }
    }

    /// A snapshot for `/status` and metrics.
    pub fn status(&self) -> PoolStatus {
        let inner = self.shared.lock();
        let gpu_status: BTreeMap<String, WorkerStatus> = inner
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let busy = s.worker.is_none();
                let info = &s.info;
                (
                    i.to_string(),
                    WorkerStatus {
                        ready: info.ready,
                        available: info.ready && !busy,
                        client_count: u32::from(busy && info.ready),
                        process_alive: info.alive,
                        pid: info.pid,
                        restarts: info.restarts,
                        device: info.device.clone(),
                        warmup_success: info.warmup.as_ref().map(Result::is_ok),
                        warmup_error: info.warmup.as_ref().and_then(|w| w.clone().err()),
                    },
                )
            })
            .collect();
        let warmups = || inner.slots.iter().filter_map(|s| s.info.warmup.as_ref());
        PoolStatus {
            total_gpus: inner.slots.len() as u32,
            available_gpus: gpu_status.values().filter(|w| w.available).count() as u32,
            queue_size: inner.waiters.len() as u32,
            warmup_enabled: self.shared.warmup_enabled,
            warmup_successful_gpus: warmups().filter(|w| w.is_ok()).count() as u32,
            warmup_failed_gpus: warmups().filter(|w| w.is_err()).count() as u32,
            gpu_status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::mock::MockGenerator;

    fn worker() -> Worker {
        Worker::Local(Box::new(MockGenerator::tiny()))
    }

    fn ready() -> SlotInfo {
        SlotInfo {
            ready: true,
            alive: true,
            ..SlotInfo::default()
        }
    }

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_session_waits_for_a_restarting_worker_and_gets_it_when_ready() {
        let queue = WorkerQueue::new(vec![(worker(), ready())], false);
        let lease = queue.acquire(LONG, &mut |_| {}).await.unwrap();
        // The process dies under the session: not ready, but coming back.
        queue.update(0, |i| {
            i.ready = false;
            i.pending = true;
            i.alive = false;
        });
        drop(lease);
        let s = queue.status();
        assert_eq!(
            (s.available_gpus, s.gpu_status["0"].process_alive),
            (0, false)
        );

        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.acquire(LONG, &mut |_| {}).await })
        };
        while queue.status().queue_size == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(!waiting.is_finished(), "a dead worker is not handed out");
        queue.update(0, |i| {
            i.ready = true;
            i.pending = false;
            i.alive = true;
            i.restarts = 1;
        });
        let lease = waiting.await.unwrap().expect("granted once ready");
        assert_eq!(lease.gpu_id(), 0);
        assert_eq!(queue.status().gpu_status["0"].restarts, 1);
    }

    #[tokio::test]
    async fn no_ready_or_pending_worker_refuses_at_once() {
        let dead = SlotInfo {
            warmup: Some(Err("boom".into())),
            ..SlotInfo::default()
        };
        let queue = WorkerQueue::new(vec![(worker(), dead)], true);
        assert_eq!(
            queue.acquire(LONG, &mut |_| {}).await.unwrap_err(),
            PoolError::NoneReady
        );
        let s = queue.status();
        assert_eq!((s.warmup_failed_gpus, s.warmup_successful_gpus), (1, 0));
        assert_eq!(s.gpu_status["0"].warmup_error.as_deref(), Some("boom"));
    }
}
