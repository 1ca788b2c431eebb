//! Up to `forks` hosts at once, each on its own thread.
//!
//! A host's work is mostly waiting on SSH, so it gets a plain OS thread that blocks, rather than
//! a slot in a work-stealing pool: idle work-stealing threads spin looking for work while the
//! others wait on the network, and with a hundred hosts that spinning costs more CPU than the
//! engine itself. Threads take the next item off a shared counter and exit when none is left.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Call `f` on every item, on at most `workers` threads; returns when all calls have returned.
pub(super) fn for_each<T: Send>(items: Vec<T>, workers: usize, f: impl Fn(T) + Sync) {
    let workers = workers.clamp(1, items.len().max(1));
    if workers == 1 {
        items.into_iter().for_each(f);
        return;
    }
    let slots: Vec<std::sync::Mutex<Option<T>>> = items
        .into_iter()
        .map(|t| std::sync::Mutex::new(Some(t)))
        .collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = slots.get(i) else { break };
                let item = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(item) = item {
                    f(item);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn every_item_once_on_bounded_threads() {
        let seen = Mutex::new(Vec::new());
        let threads = Mutex::new(std::collections::HashSet::new());
        for_each((0..50).collect(), 4, |i| {
            seen.lock().unwrap().push(i);
            threads.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_millis(1));
        });
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        let n = threads.into_inner().unwrap().len();
        assert!((1..=4).contains(&n), "{n} threads");
    }

    #[test]
    fn runs_in_parallel_up_to_the_limit() {
        // Four items that each wait for all four to have started: only completes in parallel.
        let started = AtomicUsize::new(0);
        for_each(vec![(); 4], 4, |()| {
            started.fetch_add(1, Ordering::SeqCst);
            let t = std::time::Instant::now();
            while started.load(Ordering::SeqCst) < 4 {
                assert!(t.elapsed().as_secs() < 10, "items did not run at once");
                std::thread::yield_now();
            }
        });
    }

    #[test]
    fn no_items_no_threads() {
        for_each(Vec::<u8>::new(), 8, |_| panic!("called"));
    }
}
