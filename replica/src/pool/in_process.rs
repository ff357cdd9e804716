//! Workers that live in this process: one generator per worker, handed out whole to one
//! session at a time through the shared FIFO queue.

use std::time::Duration;

use async_trait::async_trait;

use super::queue::{SlotInfo, WorkerQueue};
use super::{PoolError, PoolStatus, QueuePosition, Worker, WorkerLease, WorkerPool};
use crate::generate::{GenerateError, Generator, SegmentRequest};

/// A pool of in-process generators.
#[derive(Debug, Clone)]
pub struct InProcessPool {
    queue: WorkerQueue,
}

impl InProcessPool {
    /// One worker per generator. With `warmup` the workers are not ready until
    /// [`InProcessPool::warm_up`] has run; without it they are ready at once.
    pub fn new(generators: Vec<Box<dyn Generator>>, warmup: bool) -> Self {
        Self::on_devices(
            generators.into_iter().map(|g| (g, "cpu".into())).collect(),
            warmup,
        )
    }

    /// Like [`InProcessPool::new`], naming each worker's device for `/status`.
    pub fn on_devices(generators: Vec<(Box<dyn Generator>, String)>, warmup: bool) -> Self {
        let workers = generators
            .into_iter()
            .map(|(g, device)| {
                let info = SlotInfo {
                    ready: !warmup,
                    alive: true,
                    device,
                    ..SlotInfo::default()
                };
                (Worker::Local(g), info)
            })
            .collect();
        Self {
            queue: WorkerQueue::new(workers, warmup),
        }
    }

    /// Generates two segments (a first one and its continuation) on every worker, blocking,
    /// and marks each ready or failed. Returns how many workers are ready.
    pub fn warm_up(&self, request: &SegmentRequest) -> usize {
        let mut ready = 0;
        for i in 0..self.queue.len() {
            let Some(mut worker) = self.queue.take(i) else {
                continue;
            };
            let Worker::Local(generator) = &mut worker else {
                unreachable!("an in-process pool holds local workers only");
            };
            let result = warm_up(generator.as_mut(), request);
            if let Err(e) = &result {
                tracing::error!(worker = i, error = %e, "worker warmup failed");
            }
            ready += usize::from(result.is_ok());
            self.queue.update(i, |info| {
                info.ready = result.is_ok();
                info.warmup = Some(result.map_err(|e| e.to_string()));
            });
            self.queue.put_back(i, worker);
        }
        ready
    }
}

/// A first segment and its continuation, so both code paths have run before serving.
pub fn warm_up(
    generator: &mut dyn Generator,
    request: &SegmentRequest,
) -> Result<(), GenerateError> {
    let go_on = &mut |_| std::ops::ControlFlow::Continue(());
    let first = generator.generate(request, None, go_on)?;
    let mut next = request.clone();
    next.segment_idx += 1;
    generator.generate(&next, Some(&first.next_state), go_on)?;
    Ok(())
}

#[async_trait]
impl WorkerPool for InProcessPool {
    async fn acquire(
        &self,
        timeout: Duration,
        on_queued: &mut (dyn FnMut(QueuePosition) + Send),
    ) -> Result<WorkerLease, PoolError> {
        self.queue.acquire(timeout, on_queued).await
    }

    fn status(&self) -> PoolStatus {
        self.queue.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::mock::MockGenerator;

    fn mock() -> Box<dyn Generator> {
        Box::new(MockGenerator::tiny())
    }

    fn request() -> SegmentRequest {
        SegmentRequest {
            fresh_stream: false,
            checkpoint_max_bytes: None,
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
