//! A rung's queue of segments waiting for an encoder worker: bounded (the producer waits when
//! it is full), closable (workers exit once it is closed and drained), and with a requeue
//! that puts a segment back at the head for another worker, past the bound, since the
//! segment was already admitted once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// One generated segment, shared by every rung: its frames at the generated size (RGB24).
#[derive(Debug, Clone)]
pub struct SegmentChunk {
    /// 0-based segment number: names the output file and fixes its decode time.
    pub segment_idx: u32,
    /// The segment's frames, shared by the rungs (each scales its own copy).
    pub frames: Arc<Vec<Vec<u8>>>,
    /// When the segment's frames were handed to the ladder (for the latency figures).
    pub submitted_at: Instant,
}

/// Why a push did not go in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue was closed.
    #[error("the rung's queue is closed")]
    Closed,
    /// No worker took anything for the whole wait.
    #[error("no encoder worker took a segment for {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<SegmentChunk>,
    closed: bool,
}

/// The bounded queue between the ladder and a rung's workers.
#[derive(Debug)]
pub struct RungQueue {
    state: Mutex<State>,
    /// Signalled when an item arrives or the queue closes.
    ready: Condvar,
    /// Signalled when an item leaves.
    room: Condvar,
    capacity: usize,
}

impl RungQueue {
    /// A queue holding at most `capacity` (at least 1) segments from the producer.
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            room: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds a segment, waiting up to `timeout` for room.
    pub fn push(&self, chunk: SegmentChunk, timeout: Duration) -> Result<(), PushError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.state.lock();
        while state.items.len() >= self.capacity && !state.closed {
            if self.room.wait_until(&mut state, deadline).timed_out() {
                return Err(PushError::Timeout(timeout));
            }
        }
        if state.closed {
            return Err(PushError::Closed);
        }
        state.items.push_back(chunk);
        self.ready.notify_one();
        Ok(())
    }

    /// Puts a segment a worker could not encode back at the head, for another worker.
    pub fn requeue(&self, chunk: SegmentChunk) {
        let mut state = self.state.lock();
        state.items.push_front(chunk);
        self.ready.notify_one();
    }

    /// The next segment; waits while the queue is open and empty; `None` once it is closed
    /// and drained.
    pub fn pop(&self) -> Option<SegmentChunk> {
        let mut state = self.state.lock();
        loop {
            if let Some(chunk) = state.items.pop_front() {
                self.room.notify_one();
                return Some(chunk);
            }
            if state.closed {
                return None;
            }
            self.ready.wait(&mut state);
        }
    }

    /// No more pushes; workers finish what is queued and exit.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_all();
        self.room.notify_all();
    }

    /// Segments waiting.
    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u32) -> SegmentChunk {
        SegmentChunk {
            segment_idx: i,
            frames: Arc::new(Vec::new()),
            submitted_at: Instant::now(),
        }
    }

    #[test]
    fn fifo_with_requeue_at_the_head_and_drain_after_close() {
        let q = RungQueue::new(2);
        q.push(chunk(0), Duration::from_secs(1)).unwrap();
        q.push(chunk(1), Duration::from_secs(1)).unwrap();
        assert_eq!(
            q.push(chunk(2), Duration::from_millis(20)),
            Err(PushError::Timeout(Duration::from_millis(20)))
        );
        let first = q.pop().unwrap();
        assert_eq!(first.segment_idx, 0);
        q.requeue(first);
        q.close();
        assert_eq!(
            q.push(chunk(3), Duration::from_secs(1)),
            Err(PushError::Closed)
        );
        let order: Vec<u32> = std::iter::from_fn(|| q.pop())
            .map(|c| c.segment_idx)
            .collect();
        assert_eq!(order, vec![0, 1]);
    }

    #[test]
    fn a_waiting_producer_goes_on_when_a_worker_takes_one() {
        let q = Arc::new(RungQueue::new(1));
        q.push(chunk(0), Duration::from_secs(1)).unwrap();
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || q.push(chunk(1), Duration::from_secs(5)))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.pop().unwrap().segment_idx, 0);
        producer.join().unwrap().unwrap();
        assert_eq!(q.pop().unwrap().segment_idx, 1);
    }

    #[test]
    fn close_wakes_idle_workers() {
        let q = Arc::new(RungQueue::new(1));
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || q.pop().is_none())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        assert!(workers.into_iter().all(|w| w.join().unwrap()));
    }
}
