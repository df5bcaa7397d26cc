//! Order-preserving parallel map over the machine's cores, on scoped std threads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Applies `f` to every item on all available cores and returns the results in input order.
/// `on_done` is called (from worker threads) with the number of items finished so far.
pub fn map_ordered<T, R, F>(items: &[T], f: F, on_done: &(dyn Fn(usize) + Sync)) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = f(item);
                    *slots[i]
                        .lock()
                        .expect("no worker panics while holding a slot") = Some(result);
                    on_done(done.fetch_add(1, Ordering::Relaxed) + 1);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .expect("no worker panicked")
                .expect("every slot was filled")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_input_order() {
        let items: Vec<u64> = (0..500).collect();
        let out = super::map_ordered(&items, |x| x * x, &|_| {});
        assert_eq!(out, items.iter().map(|x| x * x).collect::<Vec<_>>());
    }
}
