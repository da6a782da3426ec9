//! What the harness counts: latency histograms (HDR, microseconds), and per-pair sequence
//! accounting that tells loss, duplicates and reordering apart.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram in microseconds.
pub(crate) type Hist = Histogram<u64>;

/// Highest latency a histogram holds, microseconds (larger values are clamped to it).
const MAX_LATENCY_US: u64 = 120_000_000;

/// A new latency histogram: 1 µs to 120 s, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy `new_with_bounds`' rules (low ≥ 1, high ≥ 2·low,
    // sigfig ≤ 5).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Latency histograms shared by many connection tasks: sharded to keep lock contention low.
/// Every value goes to two sets: `window` (taken per ramp step or per run) and `tick` (taken
/// every second for the time series).
#[derive(Debug)]
pub(crate) struct Recorder {
    shards: Vec<Mutex<Shard>>,
}

#[derive(Debug)]
struct Shard {
    window: Histogram<u64>,
    tick: Histogram<u64>,
}

impl Recorder {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| {
                    Mutex::new(Shard {
                        window: new_histogram(),
                        tick: new_histogram(),
                    })
                })
                .collect(),
        }
    }

    /// Records one latency in microseconds (clamped to 1 µs … 120 s).
    pub(crate) fn record(&self, shard: usize, micros: u64) {
        let value = micros.clamp(1, MAX_LATENCY_US);
        let mut shard = lock(&self.shards[shard % self.shards.len()]);
        shard.window.saturating_record(value);
        shard.tick.saturating_record(value);
    }

    /// Everything recorded since the last `take_window`, and starts a new window.
    pub(crate) fn take_window(&self) -> Histogram<u64> {
        self.take(|shard| &mut shard.window)
    }

    /// Everything recorded since the last `take_tick`, and starts a new tick.
    pub(crate) fn take_tick(&self) -> Histogram<u64> {
        self.take(|shard| &mut shard.tick)
    }

    fn take(&self, pick: impl Fn(&mut Shard) -> &mut Histogram<u64>) -> Histogram<u64> {
        let mut total = new_histogram();
        for shard in &self.shards {
            let mut shard = lock(shard);
            let histogram = pick(&mut shard);
            // Same bounds on both sides, so adding cannot fail.
            total
                .add(&*histogram)
                .expect("histograms with equal bounds");
            histogram.reset();
        }
        total
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A histogram is valid whatever a panicking thread left in it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Latency percentiles in milliseconds, as the reports show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Latency {
    /// Number of values.
    pub(crate) count: u64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

impl Latency {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: histogram.len(),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// One point of a latency distribution, for the HTML plots.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Bucket {
    /// Upper edge of the bucket, milliseconds.
    pub(crate) le_ms: f64,
    /// Values in the bucket.
    pub(crate) count: u64,
}

/// The histogram as logarithmic buckets (two per power of two), empty ones left out.
pub(crate) fn buckets(histogram: &Histogram<u64>) -> Vec<Bucket> {
    if histogram.is_empty() {
        return Vec::new();
    }
    histogram
        .iter_log(10, 2f64.sqrt())
        .filter(|v| v.count_since_last_iteration() > 0)
        .map(|v| Bucket {
            le_ms: v.value_iterated_to() as f64 / 1000.0,
            count: v.count_since_last_iteration(),
        })
        .collect()
}

/// What a receiver saw of one sender's sequence numbers (which start at 0).
#[derive(Debug, Default, Clone)]
pub(crate) struct PairReceipt {
    /// One more than the highest sequence number received.
    next: u64,
    /// Numbers below `next` not received yet (lost so far, or overtaken).
    missing: BTreeSet<u64>,
}

/// How one received sequence number relates to the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The next one expected.
    InOrder,
    /// Later numbers are still missing (a gap opened).
    Ahead,
    /// It fills a gap: it was overtaken by a later message.
    Late,
    /// Received before.
    Duplicate,
}

impl PairReceipt {
    pub(crate) fn arrive(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            Arrival::InOrder
        } else if seq > self.next {
            // Bounded by the sender's real sequence numbers; a gap larger than this means the
            // data is corrupt, and is then counted as one gap entry per number anyway.
            self.missing.extend(self.next..seq);
            self.next = seq + 1;
            Arrival::Ahead
        } else if self.missing.remove(&seq) {
            Arrival::Late
        } else {
            Arrival::Duplicate
        }
    }

    /// Distinct sequence numbers received.
    pub(crate) fn unique(&self) -> u64 {
        self.next - self.missing.len() as u64
    }
}

/// Sequence accounting of a whole run: what each sender sent to each receiver, what each
/// receiver got from each sender.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// (sender, receiver) → messages sent.
    pub(crate) sent: HashMap<(u32, u32), u64>,
    /// (sender, receiver) → receipt.
    pub(crate) received: HashMap<(u32, u32), PairReceipt>,
}

/// The verdict of a [`Ledger`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Delivery {
    /// Messages sent.
    pub(crate) sent: u64,
    /// Distinct messages received.
    pub(crate) delivered: u64,
    /// Sent and never received.
    pub(crate) lost: u64,
    /// Received more than once (extra copies).
    pub(crate) duplicates: u64,
    /// Received after a later message of the same pair.
    pub(crate) reordered: u64,
    /// Pairs (sender, receiver) that lost at least one message.
    pub(crate) pairs_with_loss: u64,
    /// Pairs that exchanged messages.
    pub(crate) pairs: u64,
    /// Received with a sequence number the sender never sent (must stay 0).
    pub(crate) unexpected: u64,
}

impl Ledger {
    /// Compares sent and received per pair; `duplicates` and `reordered` are counted by the
    /// receivers as messages arrive.
    pub(crate) fn verdict(&self, duplicates: u64, reordered: u64) -> Delivery {
        let mut delivery = Delivery {
            duplicates,
            reordered,
            ..Delivery::default()
        };
        for (pair, &sent) in &self.sent {
            delivery.pairs += 1;
            delivery.sent += sent;
            let receipt = self.received.get(pair);
            let unique = receipt.map_or(0, PairReceipt::unique);
            let seen_up_to = receipt.map_or(0, |r| r.next);
            let delivered = unique.min(sent);
            delivery.delivered += delivered;
            if delivered < sent {
                delivery.lost += sent - delivered;
                delivery.pairs_with_loss += 1;
            }
            if seen_up_to > sent {
                delivery.unexpected += seen_up_to - sent;
            }
        }
        for (pair, receipt) in &self.received {
            if !self.sent.contains_key(pair) {
                delivery.unexpected += receipt.unique();
            }
        }
        delivery
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_tell_loss_duplicates_and_reordering_apart() {
        let mut receipt = PairReceipt::default();
        let arrivals: Vec<Arrival> = [0, 1, 3, 2, 2, 5, 6, 6]
            .into_iter()
            .map(|seq| receipt.arrive(seq))
            .collect();
        assert_eq!(
            arrivals,
            [
                Arrival::InOrder,
                Arrival::InOrder,
                Arrival::Ahead,
                Arrival::Late,
                Arrival::Duplicate,
                Arrival::Ahead,
                Arrival::InOrder,
                Arrival::Duplicate,
            ]
        );
        // 0,1,2,3,5,6 received; 4 missing.
        assert_eq!(receipt.unique(), 6);
        let mut ledger = Ledger::default();
        ledger.sent.insert((1, 2), 8);
        ledger.received.insert((1, 2), receipt);
        ledger.sent.insert((2, 1), 3);
        let verdict = ledger.verdict(2, 1);
        assert_eq!(
            verdict,
            Delivery {
                sent: 11,
                delivered: 6,
                lost: 5,
                duplicates: 2,
                reordered: 1,
                pairs_with_loss: 2,
                pairs: 2,
                unexpected: 0,
            }
        );
    }

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let recorder = Recorder::new(4);
        // 1..=1000 ms, one value each, spread over the shards.
        for (i, ms) in (1..=1000u64).enumerate() {
            recorder.record(i, ms * 1000);
        }
        let window = recorder.take_window();
        let latency = Latency::of(&window);
        assert_eq!(latency.count, 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(latency.p50_ms, 500.0), "{latency:?}");
        assert!(close(latency.p90_ms, 900.0), "{latency:?}");
        assert!(close(latency.p99_ms, 990.0), "{latency:?}");
        assert!(close(latency.max_ms, 1000.0), "{latency:?}");
        assert!(close(latency.mean_ms, 500.5), "{latency:?}");
        // Taking the window empties it; the tick set is separate.
        assert!(recorder.take_window().is_empty());
        assert_eq!(recorder.take_tick().len(), 1000);
        let total: u64 = buckets(&window).iter().map(|b| b.count).sum();
        assert_eq!(total, 1000);
    }
}
