//! A bounded prefetch pool: loader threads decode inputs ahead of the consumers, modelled on
//! FastVideo's eval `VideoPool`.
//!
//! Decoding a recording takes far longer than measuring it, so a few loader threads keep a
//! small queue of decoded items ready while one or more consumers work through it. The queue
//! is bounded because decoded video is large: a loader that finds it full waits for a
//! consumer. A loader's failure is not lost on its thread; it travels through the queue and
//! is returned to whichever consumer takes that item. Dropping the pool stops the loaders
//! and joins them, so an early exit never leaks a thread or hangs on a full queue.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

/// Why a pool could not start, or why one of its items could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// With no loader nothing would ever be decoded and every consumer would wait forever.
    #[error("a video pool needs at least one loader thread")]
    NoLoaders,
    /// A queue of zero items would block every loader before its first hand-over.
    #[error("a video pool needs room for at least one decoded item")]
    NoCapacity,
    /// The OS refused a thread; the loaders already started have been joined.
    #[error("cannot start a loader thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The loader of input `index` failed (or panicked); re-raised on the consumer that took
    /// the item so that the failure is reported next to the input it belongs to.
    #[error("loading input {index} failed: {message}")]
    Load { index: usize, message: String },
}

/// A loaded item tagged with its input index, or the loader's message.
type Loaded<T> = (usize, Result<T, String>);

/// What loaders and consumers share under one lock.
struct State<T> {
    queue: VecDeque<Loaded<T>>,
    /// The next input a loader claims.
    next: usize,
    /// Items handed to consumers; once it reaches the input count every `get` returns `None`.
    taken: usize,
    /// Set on drop: loaders stop claiming and stop waiting for room.
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when an item is queued, and to everyone once the last item is taken.
    ready: Condvar,
    /// Signalled when a consumer makes room, and to everyone on close.
    room: Condvar,
    max_size: usize,
}

/// Decodes `inputs` on `loader_threads` threads into a queue of at most `max_size` items,
/// handed out by [`get`](Self::get) in completion order, each tagged with its input index.
///
/// `VideoPool` is `Sync`: several consumer threads may call `get` on one pool, and each item
/// goes to exactly one of them.
pub struct VideoPool<T> {
    shared: Arc<Shared<T>>,
    loaders: Vec<JoinHandle<()>>,
    total: usize,
}

impl<T: Send + 'static> VideoPool<T> {
    /// Starts the loaders. At most `max_size` decoded items wait in the queue, plus one
    /// finished item per loader waiting for room, so memory stays bounded however slowly
    /// the consumers go.
    pub fn new<I, E, F>(
        inputs: Vec<I>,
        loader_threads: usize,
        max_size: usize,
        load: F,
    ) -> Result<Self, PoolError>
    where
        I: Send + Sync + 'static,
        E: fmt::Display,
        F: Fn(&I) -> Result<T, E> + Send + Sync + 'static,
    {
        if loader_threads == 0 {
            return Err(PoolError::NoLoaders);
        }
        if max_size == 0 {
            return Err(PoolError::NoCapacity);
        }
        let mut pool = VideoPool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::with_capacity(max_size),
                    next: 0,
                    taken: 0,
                    closed: false,
                }),
                ready: Condvar::new(),
                room: Condvar::new(),
                max_size,
            }),
            loaders: Vec::with_capacity(loader_threads),
            total: inputs.len(),
        };
        let job = Arc::new((inputs, load));
        // No more loaders than inputs: an idle thread would only be started to exit.
        for n in 0..loader_threads.min(pool.total) {
            let shared = Arc::clone(&pool.shared);
            let job = Arc::clone(&job);
            let handle = std::thread::Builder::new()
                .name(format!("video-pool-{n}"))
                .spawn(move || run_loader(&shared, &job.0, &job.1))
                // Dropping `pool` here closes it and joins the loaders already started.
                .map_err(PoolError::Spawn)?;
            pool.loaders.push(handle);
        }
        Ok(pool)
    }
}

impl<T> VideoPool<T> {
    /// Waits for the next decoded item. `None` once every input has been handed out, to
    /// every consumer, however many there are; `Some(Err(PoolError::Load))` for an input
    /// whose loader failed, after which the other inputs are still delivered.
    pub fn get(&self) -> Option<Result<(usize, T), PoolError>> {
        let mut state = self.shared.state.lock();
        loop {
            if let Some((index, loaded)) = state.queue.pop_front() {
                state.taken += 1;
                if state.taken == self.total {
                    // Wake the consumers still waiting: there is nothing left for them.
                    self.shared.ready.notify_all();
                }
                drop(state);
                self.shared.room.notify_one();
                return Some(match loaded {
                    Ok(item) => Ok((index, item)),
                    Err(message) => Err(PoolError::Load { index, message }),
                });
            }
            if state.taken == self.total {
                return None;
            }
            self.shared.ready.wait(&mut state);
        }
    }

    /// Iterates over [`get`](Self::get) until it returns `None`.
    pub fn iter(&self) -> impl Iterator<Item = Result<(usize, T), PoolError>> + '_ {
        std::iter::from_fn(|| self.get())
    }

    /// Consumes every item and returns them in input order: the order the caller listed its
    /// inputs in, whichever loader finished first. Fails fast with the first load error a
    /// consumer sees; dropping the pool then stops the loads still to come.
    pub fn into_ordered(self) -> Result<Vec<T>, PoolError> {
        let mut slots: Vec<Option<T>> = std::iter::repeat_with(|| None).take(self.total).collect();
        for item in self.iter() {
            let (index, value) = item?;
            slots[index] = Some(value);
        }
        // Every index is delivered exactly once before `get` returns `None`.
        Ok(slots.into_iter().flatten().collect())
    }

    /// The number of inputs, whether or not they have been consumed yet.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the pool was given no inputs (its `get` returns `None` at once).
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl<T> Drop for VideoPool<T> {
    /// Stops the loaders and joins them. A loader in the middle of a load finishes that one
    /// load first (it cannot be interrupted); one waiting for room in the queue stops at once.
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.room.notify_all();
        for loader in self.loaders.drain(..) {
            // A loader's panics are caught around `load`, so a join error cannot carry news.
            let _ = loader.join();
        }
    }
}

impl<T> fmt::Debug for VideoPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("VideoPool")
            .field("inputs", &self.total)
            .field("loaders", &self.loaders.len())
            .field("max_size", &self.shared.max_size)
            .field("queued", &state.queue.len())
            .field("taken", &state.taken)
            .finish()
    }
}

/// One loader: claims inputs until none are left or the pool closes, and queues each result.
fn run_loader<I, T, E, F>(shared: &Shared<T>, inputs: &[I], load: &F)
where
    E: fmt::Display,
    F: Fn(&I) -> Result<T, E>,
{
    loop {
        let index = {
            let mut state = shared.state.lock();
            if state.closed || state.next == inputs.len() {
                return;
            }
            state.next += 1;
            state.next - 1
        };
        // A panicking load becomes that item's error: otherwise its item would never arrive
        // and the consumers would wait for it forever.
        let loaded = match catch_unwind(AssertUnwindSafe(|| load(&inputs[index]))) {
            Ok(Ok(item)) => Ok(item),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(panic) => Err(format!("loader panicked: {}", panic_message(&*panic))),
        };
        let mut state = shared.state.lock();
        while state.queue.len() >= shared.max_size && !state.closed {
            shared.room.wait(&mut state);
        }
        if state.closed {
            return;
        }
        state.queue.push_back((index, loaded));
        drop(state);
        shared.ready.notify_one();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests;
