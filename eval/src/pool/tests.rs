//! The pool under slow, failing, panicking and abandoned loads, and under many consumers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::*;

/// A deterministic pseudo-random delay per input, so loaders finish out of order.
fn jitter(i: usize) -> Duration {
    let x = (i as u64)
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    Duration::from_millis((x >> 59) + 1)
}

#[test]
fn into_ordered_returns_input_order_when_loaders_finish_out_of_order() {
    let inputs: Vec<usize> = (0..40).collect();
    let pool = VideoPool::new(inputs, 4, 3, |&i| {
        std::thread::sleep(jitter(i));
        Ok::<_, String>(i * 10)
    })
    .unwrap();
    let out = pool.into_ordered().unwrap();
    assert_eq!(out, (0..40).map(|i| i * 10).collect::<Vec<_>>());
}

#[test]
fn get_tags_each_item_with_its_input_index() {
    let inputs: Vec<String> = (0..25).map(|i| format!("video-{i}")).collect();
    let pool = VideoPool::new(inputs, 3, 2, |name: &String| {
        std::thread::sleep(jitter(name.len()));
        Ok::<_, String>(name.clone())
    })
    .unwrap();
    let mut seen = HashSet::new();
    while let Some(item) = pool.get() {
        let (index, payload) = item.unwrap();
        assert_eq!(payload, format!("video-{index}"));
        assert!(seen.insert(index), "index {index} delivered twice");
    }
    assert_eq!(seen.len(), 25);
    assert!(pool.get().is_none(), "an exhausted pool stays exhausted");
}

#[test]
fn decoded_items_waiting_never_exceed_the_bound() {
    const MAX_SIZE: usize = 2;
    const LOADERS: usize = 3;
    /// Counts decoded items not yet dropped by the consumer.
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let live = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (live2, peak2) = (Arc::clone(&live), Arc::clone(&peak));
    let pool = VideoPool::new((0..30).collect(), LOADERS, MAX_SIZE, move |_: &usize| {
        let now = live2.fetch_add(1, Ordering::SeqCst) + 1;
        peak2.fetch_max(now, Ordering::SeqCst);
        Ok::<_, String>(Tracked(Arc::clone(&live2)))
    })
    .unwrap();
    let mut count = 0;
    while let Some(item) = pool.get() {
        // A slow consumer: the loaders fill the queue and must wait for room.
        std::thread::sleep(Duration::from_millis(3));
        // The item in hand is the one extra a consumer may hold.
        assert!(live.load(Ordering::SeqCst) <= MAX_SIZE + LOADERS + 1);
        drop(item.unwrap());
        count += 1;
    }
    assert_eq!(count, 30);
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak <= MAX_SIZE + LOADERS + 1,
        "peak {peak} decoded items alive"
    );
    assert!(
        peak >= MAX_SIZE,
        "the loaders should have filled the queue (peak {peak})"
    );
}

#[test]
fn a_failed_load_is_returned_to_the_consumer_and_the_rest_still_arrive() {
    let pool = VideoPool::new((0..10).collect(), 2, 2, |&i: &usize| {
        if i == 6 {
            Err(format!("corrupt file {i}"))
        } else {
            Ok(i)
        }
    })
    .unwrap();
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for item in pool.iter() {
        match item {
            Ok((index, value)) => {
                assert_eq!(index, value);
                ok.push(index);
            }
            Err(e) => errors.push(e),
        }
    }
    ok.sort_unstable();
    assert_eq!(ok, [0, 1, 2, 3, 4, 5, 7, 8, 9]);
    assert_eq!(errors.len(), 1);
    match &errors[0] {
        PoolError::Load { index, message } => {
            assert_eq!(*index, 6);
            assert_eq!(message, "corrupt file 6");
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn into_ordered_fails_with_the_load_error() {
    let pool = VideoPool::new((0..5).collect(), 2, 2, |&i: &usize| {
        if i == 3 { Err("bad") } else { Ok(i) }
    })
    .unwrap();
    let err = pool.into_ordered().unwrap_err();
    assert!(matches!(err, PoolError::Load { index: 3, .. }), "{err}");
    assert_eq!(err.to_string(), "loading input 3 failed: bad");
}

#[test]
fn a_panicking_loader_becomes_an_error_not_a_hang() {
    let pool = VideoPool::new((0..4).collect(), 2, 1, |&i: &usize| {
        assert!(i != 1, "boom");
        Ok::<_, String>(i)
    })
    .unwrap();
    let results: Vec<_> = pool.iter().collect();
    assert_eq!(results.len(), 4);
    let failed: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            Err(PoolError::Load { index, message }) => Some((*index, message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, 1);
    assert!(failed[0].1.contains("boom"), "{}", failed[0].1);
}

#[test]
fn dropping_early_stops_and_joins_loaders_blocked_on_a_full_queue() {
    // The closure holds `alive`; once every loader thread has exited and the pool is
    // gone, nothing else holds it.
    let alive = Arc::new(());
    let held = Arc::clone(&alive);
    let pool = VideoPool::new((0..1000).collect(), 4, 2, move |&i: &usize| {
        let _ = &held;
        Ok::<_, String>(vec![i as u8; 1024])
    })
    .unwrap();
    let first = pool.get().unwrap().unwrap();
    assert_eq!(first.1.len(), 1024);
    // Let every loader reach the full queue and block there.
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    drop(pool);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );
    assert_eq!(
        Arc::strong_count(&alive),
        1,
        "a loader thread outlived the pool"
    );
}

#[test]
fn dropping_waits_for_a_load_in_progress_then_stops() {
    let loads = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&loads);
    let pool = VideoPool::new((0..100).collect(), 2, 1, move |_: &usize| {
        counted.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
        Ok::<_, String>(())
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));
    drop(pool);
    let after_drop = loads.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        loads.load(Ordering::SeqCst),
        after_drop,
        "a loader kept claiming inputs"
    );
    assert!(after_drop <= 4, "{after_drop} loads started");
}

#[test]
fn more_consumers_than_items_each_item_once_and_no_deadlock() {
    let pool = Arc::new(
        VideoPool::new((0..3).collect(), 2, 1, |&i: &usize| {
            std::thread::sleep(jitter(i));
            Ok::<_, String>(i)
        })
        .unwrap(),
    );
    let consumers: Vec<_> = (0..8)
        .map(|_| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(item) = pool.get() {
                    got.push(item.unwrap().0);
                }
                got
            })
        })
        .collect();
    let mut all: Vec<usize> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2]);
}

#[test]
fn zero_loader_threads_or_zero_capacity_is_an_error() {
    let load = |&i: &usize| Ok::<_, String>(i);
    assert!(matches!(
        VideoPool::new(vec![1, 2], 0, 4, load),
        Err(PoolError::NoLoaders)
    ));
    assert!(matches!(
        VideoPool::new(vec![1, 2], 2, 0, load),
        Err(PoolError::NoCapacity)
    ));
}

#[test]
fn no_inputs_returns_none_at_once() {
    let pool = VideoPool::new(Vec::<usize>::new(), 3, 2, |&i: &usize| Ok::<_, String>(i)).unwrap();
    assert!(pool.is_empty());
    assert!(pool.get().is_none());
    assert_eq!(pool.into_ordered().unwrap(), Vec::<usize>::new());
}

#[test]
fn pool_is_send_and_sync() {
    fn assert_send_sync<S: Send + Sync>() {}
    assert_send_sync::<VideoPool<Vec<u8>>>();
}
