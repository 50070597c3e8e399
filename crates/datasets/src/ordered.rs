//! Work spread over threads and handed on in the order it came: one thread produces items,
//! several map them, and the caller's thread takes the results in the items' order.

use std::ops::ControlFlow;
use std::sync::mpsc::sync_channel;

/// Maps the items `produce` yields (until it yields `None`) on `workers` threads, handing each
/// result to `consume` on the caller's thread in the order the items came, until `consume`
/// breaks. `produce` runs on a thread of its own.
///
/// Items go round the workers in turn and results are taken from them in the same turn, so no
/// result waits in a buffer to be put back in order. Every hand-off is a rendezvous: besides
/// the item being produced and the result being consumed, each worker holds at most one item
/// and its result. When `consume` breaks, the workers' next hand-off fails, they stop, and so
/// does `produce` at its next; the call returns once every thread has.
pub(crate) fn ordered_map<I: Send, O: Send>(
    workers: usize,
    mut produce: impl FnMut() -> Option<I> + Send,
    map: impl Fn(I) -> O + Sync,
    mut consume: impl FnMut(O) -> ControlFlow<()>,
) {
    std::thread::scope(|scope| {
        let map = &map;
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for _ in 0..workers.max(1) {
            let (to_worker, items) = sync_channel::<I>(0);
            let (results, from_worker) = sync_channel::<O>(0);
            scope.spawn(move || {
                for item in items {
                    if results.send(map(item)).is_err() {
                        return;
                    }
                }
            });
            inputs.push(to_worker);
            outputs.push(from_worker);
        }
        scope.spawn(move || {
            for worker in inputs.iter().cycle() {
                let Some(item) = produce() else { return };
                if worker.send(item).is_err() {
                    return;
                }
            }
        });
        // The producer stops after its last item, each worker after its last result: the
        // worker whose turn it is has nothing more to send exactly when the items ended.
        for worker in outputs.iter().cycle() {
            let Ok(result) = worker.recv() else { break };
            if consume(result).is_break() {
                break;
            }
        }
        drop(outputs);
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Items mapped at random speeds come out in order, whatever the number of workers.
    #[test]
    fn results_come_in_the_order_of_the_items() {
        for workers in [1, 2, 3, 5] {
            let mut next = 0..200u64;
            let mut seen = Vec::new();
            ordered_map(
                workers,
                || next.next(),
                |i| {
                    std::thread::sleep(Duration::from_micros((i * 7919) % 300));
                    i * 2
                },
                |r| {
                    seen.push(r);
                    ControlFlow::Continue(())
                },
            );
            assert_eq!(
                seen,
                (0..200).map(|i| i * 2).collect::<Vec<_>>(),
                "{workers}"
            );
        }
    }

    /// A consumer that breaks stops the producer: it produces at most one item per worker
    /// and one more beyond what was consumed, and the call returns.
    #[test]
    fn a_consumer_that_breaks_stops_the_producer() {
        let produced = AtomicUsize::new(0);
        let mut seen = 0;
        ordered_map(
            2,
            || Some(produced.fetch_add(1, Ordering::SeqCst)),
            |i| i,
            |_| {
                seen += 1;
                if seen == 10 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        );
        assert_eq!(seen, 10);
        let produced = produced.load(Ordering::SeqCst);
        assert!((10..=14).contains(&produced), "{produced} produced");
    }

    /// No items: nothing consumed, and the call returns.
    #[test]
    fn no_items_end_at_once() {
        let mut seen = 0;
        ordered_map(
            3,
            || None::<u8>,
            |i| i,
            |_| {
                seen += 1;
                ControlFlow::Continue(())
            },
        );
        assert_eq!(seen, 0);
    }
}
