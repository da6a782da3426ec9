//! Counters: [`Stats`] (a snapshot of one relay) and [`DirectionStats`] (one direction of it),
//! plus the atomic counters the relay's tasks update.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// A snapshot of a relay's counters, from [`Relay::stats`](crate::Relay::stats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Client to upstream.
    pub to_upstream: DirectionStats,
    /// Upstream to client.
    pub to_client: DirectionStats,
    /// Client mappings alive now (one upstream socket each).
    pub mappings: u64,
    /// Whether the link is cut now.
    pub cut: bool,
}

/// The counters of one direction. Every datagram the relay reads ends up either forwarded or
/// dropped, or is still queued; `dropped_datagrams` is the sum of the per-cause counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DirectionStats {
    /// Datagrams sent on.
    pub forwarded_datagrams: u64,
    /// Payload bytes sent on.
    pub forwarded_bytes: u64,
    /// Datagrams dropped, for any cause.
    pub dropped_datagrams: u64,
    /// Payload bytes dropped, for any cause.
    pub dropped_bytes: u64,
    /// Datagrams dropped by random loss.
    pub dropped_loss: u64,
    /// Datagrams dropped because the link was cut when they arrived or were due to leave.
    pub dropped_cut: u64,
    /// Datagrams dropped because the direction's queue was full.
    pub dropped_queue_full: u64,
    /// Datagrams dropped for another reason: no mapping could be made (the mapping table is
    /// full or a socket could not be bound), or sending failed.
    pub dropped_other: u64,
    /// Payload bytes waiting in the queue now.
    pub queued_bytes: u64,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropCause {
    Loss,
    Cut,
    QueueFull,
    Other,
}

/// The live counters of one direction, shared by the tasks that move its datagrams.
#[derive(Debug, Default)]
pub(crate) struct DirectionCounters {
    forwarded_datagrams: AtomicU64,
    forwarded_bytes: AtomicU64,
    dropped_datagrams: AtomicU64,
    dropped_bytes: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_cut: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_other: AtomicU64,
    /// Bytes admitted to the queue and not yet sent or dropped; also the admission gate.
    pub(crate) queued_bytes: AtomicU64,
}

impl DirectionCounters {
    pub(crate) fn forwarded(&self, bytes: usize) {
        self.forwarded_datagrams.fetch_add(1, Ordering::Relaxed);
        self.forwarded_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, bytes: usize, cause: DropCause) {
        self.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
        self.dropped_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let counter = match cause {
            DropCause::Loss => &self.dropped_loss,
            DropCause::Cut => &self.dropped_cut,
            DropCause::QueueFull => &self.dropped_queue_full,
            DropCause::Other => &self.dropped_other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reserves room for `bytes` in the queue; `false` if that would exceed `limit`.
    pub(crate) fn try_reserve(&self, bytes: usize, limit: u64) -> bool {
        let bytes = bytes as u64;
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let total = queued.saturating_add(bytes);
                (total <= limit).then_some(total)
            })
            .is_ok()
    }

    /// Gives back room reserved by [`try_reserve`](Self::try_reserve).
    pub(crate) fn release(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes as u64, Ordering::AcqRel);
    }

    pub(crate) fn snapshot(&self) -> DirectionStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            forwarded_datagrams: get(&self.forwarded_datagrams),
            forwarded_bytes: get(&self.forwarded_bytes),
            dropped_datagrams: get(&self.dropped_datagrams),
            dropped_bytes: get(&self.dropped_bytes),
            dropped_loss: get(&self.dropped_loss),
            dropped_cut: get(&self.dropped_cut),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_other: get(&self.dropped_other),
            queued_bytes: get(&self.queued_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_respect_the_limit_and_are_released() {
        let c = DirectionCounters::default();
        assert!(c.try_reserve(600, 1000));
        assert!(!c.try_reserve(600, 1000));
        assert!(c.try_reserve(400, 1000));
        c.release(600);
        assert!(c.try_reserve(500, 1000));
        assert_eq!(c.snapshot().queued_bytes, 900);
    }

    #[test]
    fn drops_are_counted_per_cause_and_in_total() {
        let c = DirectionCounters::default();
        c.dropped(10, DropCause::Loss);
        c.dropped(20, DropCause::Cut);
        c.dropped(30, DropCause::QueueFull);
        c.dropped(40, DropCause::Other);
        c.forwarded(5);
        let s = c.snapshot();
        assert_eq!(s.dropped_datagrams, 4);
        assert_eq!(s.dropped_bytes, 100);
        assert_eq!(
            (
                s.dropped_loss,
                s.dropped_cut,
                s.dropped_queue_full,
                s.dropped_other
            ),
            (1, 1, 1, 1)
        );
        assert_eq!((s.forwarded_datagrams, s.forwarded_bytes), (1, 5));
    }
}
