//! Workers that live in this process: one generator per worker, handed out whole to one
//! session at a time through a FIFO queue.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};

use super::{PoolError, PoolStatus, QueuePosition, WorkerLease, WorkerPool, WorkerStatus};
use crate::generate::{Generator, SegmentRequest};

type Grant = (u32, Box<dyn Generator>);

struct Slot {
    generator: Option<Box<dyn Generator>>,
    ready: bool,
    warmup: Option<Result<(), String>>,
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

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Gives a worker back: to the first waiter still waiting, else to the free list.
    fn release(self: &Arc<Self>, gpu_id: u32, mut generator: Box<dyn Generator>) {
        let mut inner = self.lock();
        while let Some(waiter) = inner.waiters.pop_front() {
            match waiter.tx.send((gpu_id, generator)) {
                Ok(()) => {
                    drop(inner);
                    self.notify();
                    return;
                }
                // That waiter gave up; try the next one.
                Err((_, back)) => generator = back,
            }
        }
        inner.slots[gpu_id as usize].generator = Some(generator);
        drop(inner);
        self.notify();
    }

    fn lease(self: &Arc<Self>, (gpu_id, generator): Grant) -> WorkerLease {
        let shared = self.clone();
        WorkerLease::new(gpu_id, generator, move |g| shared.release(gpu_id, g))
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
            if let Ok((gpu_id, generator)) = rx.try_recv() {
                self.shared.release(gpu_id, generator);
            }
        }
        self.shared.notify();
    }
}

/// A pool of in-process generators.
#[derive(Clone)]
pub struct InProcessPool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for InProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessPool")
            .field("status", &self.status())
            .finish()
    }
}

impl InProcessPool {
    /// One worker per generator. With `warmup` the workers are not ready until
    /// [`InProcessPool::warm_up`] has run; without it they are ready at once.
    pub fn new(generators: Vec<Box<dyn Generator>>, warmup: bool) -> Self {
        let slots = generators
            .into_iter()
            .map(|g| Slot {
                generator: Some(g),
                ready: !warmup,
                warmup: None,
            })
            .collect();
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    slots,
                    ..Inner::default()
                }),
                changed: watch::channel(0).0,
                warmup_enabled: warmup,
            }),
        }
    }

    /// Generates two segments (a first one and its continuation) on every worker, blocking,
    /// and marks each ready or failed. Returns how many workers are ready.
    pub fn warm_up(&self, request: &SegmentRequest) -> usize {
        let count = self.shared.lock().slots.len();
        let mut ready = 0;
        for i in 0..count {
            let Some(mut generator) = self.shared.lock().slots[i].generator.take() else {
                continue;
            };
            let result = (|| {
                let go_on = &mut |_| std::ops::ControlFlow::Continue(());
                let first = generator.generate(request, None, go_on)?;
                let mut next = request.clone();
                next.segment_idx += 1;
                generator.generate(&next, Some(&first.next_state), go_on)?;
                Ok::<(), crate::generate::GenerateError>(())
            })();
            let mut inner = self.shared.lock();
            let slot = &mut inner.slots[i];
            slot.generator = Some(generator);
            slot.ready = result.is_ok();
            if let Err(e) = &result {
                tracing::error!(worker = i, error = %e, "worker warmup failed");
            }
            slot.warmup = Some(result.map_err(|e| e.to_string()));
            ready += usize::from(slot.ready);
        }
        self.shared.notify();
        ready
    }
}

#[async_trait]
impl WorkerPool for InProcessPool {
    async fn acquire(
        &self,
        timeout: Duration,
        on_queued: &mut (dyn FnMut(QueuePosition) + Send),
    ) -> Result<WorkerLease, PoolError> {
        let shared = &self.shared;
        let mut ticket = {
            let mut inner = shared.lock();
            if !inner.slots.iter().any(|s| s.ready) {
                return Err(PoolError::NoneReady);
            }
            if inner.waiters.is_empty()
                && let Some(i) = inner
                    .slots
                    .iter()
                    .position(|s| s.ready && s.generator.is_some())
            {
                let generator = inner.slots[i].generator.take().expect("checked above");
                drop(inner);
                shared.notify();
                return Ok(shared.lease((i as u32, generator)));
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

    fn status(&self) -> PoolStatus {
        let inner = self.shared.lock();
        let gpu_status: BTreeMap<String, WorkerStatus> = inner
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let busy = s.generator.is_none();
                (
                    i.to_string(),
                    WorkerStatus {
                        ready: s.ready,
                        available: s.ready && !busy,
                        client_count: u32::from(busy && s.ready),
                        process_alive: true,
                        warmup_success: s.warmup.as_ref().map(Result::is_ok),
                        warmup_error: s.warmup.as_ref().and_then(|w| w.clone().err()),
                    },
                )
            })
            .collect();
        PoolStatus {
            total_gpus: inner.slots.len() as u32,
            available_gpus: gpu_status.values().filter(|w| w.available).count() as u32,
            queue_size: inner.waiters.len() as u32,
            warmup_enabled: self.shared.warmup_enabled,
            warmup_successful_gpus: inner
                .slots
                .iter()
                .filter(|s| matches!(s.warmup, Some(Ok(()))))
                .count() as u32,
            warmup_failed_gpus: inner
                .slots
                .iter()
                .filter(|s| matches!(s.warmup, Some(Err(_))))
                .count() as u32,
            gpu_status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::StreamFormat;
    use crate::generate::mock::{MockGenerator, MockSettings};

    fn mock() -> Box<dyn Generator> {
        Box::new(MockGenerator::new(MockSettings {
            format: StreamFormat {
                width: 16,
                height: 16,
                fps: 8,
                frames_per_segment: 2,
                audio: None,
            },
            latency: Duration::from_millis(1),
        }))
    }

    fn request() -> SegmentRequest {
        SegmentRequest {
            segment_idx: 0,
            prompt: "warmup".into(),
            negative_prompt: None,
            seed: 0,
            num_inference_steps: 2,
            guidance_scale: 1.0,
            initial_image: None,
        }
    }

    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn warmup_gates_readiness_and_is_reported() {
        let pool = InProcessPool::new(vec![mock(), mock()], true);
        assert!(!pool.is_ready());
        assert_eq!(
            pool.acquire(LONG, &mut |_| {}).await.unwrap_err(),
            PoolError::NoneReady
        );
        assert_eq!(pool.warm_up(&request()), 2);
        assert!(pool.is_ready());
        let s = pool.status();
        assert_eq!(
            (
                s.total_gpus,
                s.available_gpus,
                s.warmup_successful_gpus,
                s.warmup_failed_gpus
            ),
            (2, 2, 2, 0)
        );
        assert_eq!(s.gpu_status["1"].warmup_success, Some(true));
    }

    #[tokio::test]
    async fn a_free_worker_is_granted_without_queueing_and_comes_back_on_drop() {
        let pool = InProcessPool::new(vec![mock()], false);
        let mut queued = Vec::new();
        let lease = pool.acquire(LONG, &mut |p| queued.push(p)).await.unwrap();
        assert!(queued.is_empty());
        assert_eq!(lease.gpu_id(), 0);
        let s = pool.status();
        assert_eq!((s.available_gpus, s.gpu_status["0"].client_count), (0, 1));
        drop(lease);
        assert_eq!(pool.status().available_gpus, 1);
    }

    #[tokio::test]
    async fn waiters_are_served_in_order_with_live_positions() {
        let pool = InProcessPool::new(vec![mock()], false);
        let first = pool.acquire(LONG, &mut |_| {}).await.unwrap();

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for name in ["a", "b", "c"] {
            let task_pool = pool.clone();
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                let mut positions = Vec::new();
                let lease = task_pool
                    .acquire(LONG, &mut |p| positions.push(p.position))
                    .await
                    .unwrap();
                tx.send(name).unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(lease);
                positions
            }));
            // Let each one enter the queue before the next.
            while pool.status().queue_size < tasks.len() as u32 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        assert_eq!(pool.status().queue_size, 3);
        drop(first);
        let order: Vec<&str> = vec![
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
        ];
        assert_eq!(order, ["a", "b", "c"]);
        // Each waiter hears its place move up one by one (updates also go out when only the
        // queue depth changes, so consecutive repeats are folded here).
        let mut positions: Vec<Vec<u32>> = futures_join(tasks).await;
        for p in &mut positions {
            p.dedup();
        }
        assert_eq!(positions[0], vec![1]);
        assert_eq!(positions[1], vec![2, 1]);
        assert_eq!(positions[2], vec![3, 2, 1]);
        assert_eq!(pool.status().available_gpus, 1);
    }

    async fn futures_join(tasks: Vec<tokio::task::JoinHandle<Vec<u32>>>) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_waiter_that_times_out_or_leaves_loses_nothing() {
        let pool = InProcessPool::new(vec![mock()], false);
        let held = pool.acquire(LONG, &mut |_| {}).await.unwrap();
        let err = pool
            .acquire(Duration::from_millis(30), &mut |_| {})
            .await
            .unwrap_err();
        assert_eq!(err, PoolError::Timeout(Duration::from_millis(30)));
        assert_eq!(
            pool.status().queue_size,
            0,
            "the timed-out waiter left the queue"
        );

        // A waiter whose session goes away (future dropped) while queued.
        let p = pool.clone();
        let waiting = tokio::spawn(async move { p.acquire(LONG, &mut |_| {}).await });
        while pool.status().queue_size == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        waiting.abort();
        let _ = waiting.await;
        drop(held);
        assert_eq!(
            pool.status().available_gpus,
            1,
            "the worker came back to the pool"
        );
        assert!(pool.acquire(LONG, &mut |_| {}).await.is_ok());
    }
}
