//! [`Shape`]: what the emulated link does to each datagram, in each direction.

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};

/// The impairments a relay applies, the same in each direction, independently per direction.
///
/// The default is a perfect link: no delay, no jitter, no loss, no rate limit.
///
/// ```
/// use std::time::Duration;
/// use tern_wanem::Shape;
///
/// // 20 ms each way (40 ms RTT), ±2 ms jitter without reordering, 1% loss, 10 MB/s.
/// let shape = Shape {
///     delay: Duration::from_millis(20),
///     jitter: Duration::from_millis(2),
///     loss: 0.01,
///     rate_limit: Some(10_000_000),
///     ..Shape::default()
/// };
/// assert!(shape.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Shape {
    /// One-way delay added to every datagram.
    pub delay: Duration,
    /// Uniform jitter: each datagram's delay is `delay + u` with `u` drawn from
    /// `[-jitter, +jitter]`, never below zero.
    pub jitter: Duration,
    /// Probability, from 0 to 1, that a datagram is dropped; independent per datagram.
    pub loss: f64,
    /// Link capacity in bytes per second, or `None` for unlimited. Datagrams wait their turn
    /// behind the ones already being sent (a bottleneck queue, bounded by
    /// [`RelayConfig::queue_limit_bytes`](crate::RelayConfig::queue_limit_bytes)), then take
    /// `len / rate` to be sent, then `delay ± jitter` to arrive.
    pub rate_limit: Option<u64>,
    /// Whether jitter may reorder datagrams. When `false`, each datagram leaves no earlier
    /// than the one before it in the same direction (`max(previous, arrival + delay + jitter)`),
    /// so every direction stays first-in first-out.
    pub reorder: bool,
    /// Seed for the random numbers behind loss and jitter, for reproducible runs. With a seed,
    /// each direction gets its own generator derived from it, re-seeded every time the shape
    /// is set; the same datagrams in the same order then meet the same fate. `None` seeds from
    /// the operating system.
    pub seed: Option<u64>,
}

impl Shape {
    /// A perfect link (the same as [`Shape::default`]).
    pub fn ideal() -> Self {
        Self::default()
    }

    /// This shape with the given one-way delay.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// This shape with the given jitter.
    #[must_use]
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// This shape with the given loss probability.
    #[must_use]
    pub fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    /// This shape with the given rate limit in bytes per second (`None`: unlimited).
    #[must_use]
    pub fn with_rate_limit(mut self, bytes_per_second: Option<u64>) -> Self {
        self.rate_limit = bytes_per_second;
        self
    }

    /// This shape, allowing or forbidding reordering by jitter.
    #[must_use]
    pub fn with_reorder(mut self, reorder: bool) -> Self {
        self.reorder = reorder;
        self
    }

    /// This shape with the given RNG seed (`None`: seeded by the operating system).
    #[must_use]
    pub fn with_seed(mut self, seed: Option<u64>) -> Self {
        self.seed = seed;
        self
    }

    /// Checks that every value is in range: `loss` from 0 to 1, `rate_limit` at least 1 byte
    /// per second, `delay` and `jitter` at most one hour each.
    pub fn validate(&self) -> Result<()> {
        const HOUR: Duration = Duration::from_secs(3600);
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(Error::InvalidShape {
                field: "loss",
                reason: "must be between 0 and 1",
            });
        }
        if self.rate_limit == Some(0) {
            return Err(Error::InvalidShape {
                field: "rate_limit",
                reason: "must be at least 1 byte per second",
            });
        }
        if self.delay > HOUR {
            return Err(Error::InvalidShape {
                field: "delay",
                reason: "must be at most one hour",
            });
        }
        if self.jitter > HOUR {
            return Err(Error::InvalidShape {
                field: "jitter",
                reason: "must be at most one hour",
            });
        }
        Ok(())
    }

    /// A flat, JSON-friendly view of this shape (durations in milliseconds).
    pub fn summary(&self) -> ShapeSummary {
        ShapeSummary {
            delay_ms: self.delay.as_secs_f64() * 1e3,
            jitter_ms: self.jitter.as_secs_f64() * 1e3,
            loss: self.loss,
            rate_limit: self.rate_limit,
            reorder: self.reorder,
            seed: self.seed,
        }
    }
}

/// [`Shape`] as reported by the control protocol's `stats` command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShapeSummary {
    /// One-way delay in milliseconds.
    pub delay_ms: f64,
    /// Jitter in milliseconds.
    pub jitter_ms: f64,
    /// Loss probability.
    pub loss: f64,
    /// Rate limit in bytes per second, `null` when unlimited.
    pub rate_limit: Option<u64>,
    /// Whether jitter may reorder.
    pub reorder: bool,
    /// RNG seed, `null` when seeded by the operating system.
    pub seed: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_shape_is_a_perfect_link() {
        let shape = Shape::default();
        assert_eq!(shape.delay, Duration::ZERO);
        assert_eq!(shape.jitter, Duration::ZERO);
        assert_eq!(shape.loss, 0.0);
        assert_eq!(shape.rate_limit, None);
        assert!(!shape.reorder);
        assert!(shape.validate().is_ok());
    }

    #[test]
    fn refuses_out_of_range_values() {
        assert!(Shape::ideal().with_loss(1.5).validate().is_err());
        assert!(Shape::ideal().with_loss(-0.1).validate().is_err());
        assert!(Shape::ideal().with_loss(f64::NAN).validate().is_err());
        assert!(Shape::ideal().with_rate_limit(Some(0)).validate().is_err());
        assert!(
            Shape::ideal()
                .with_delay(Duration::from_secs(7200))
                .validate()
                .is_err()
        );
        assert!(Shape::ideal().with_loss(1.0).validate().is_ok());
    }
}
