//! Reading the values operators type: durations (`20ms`), rates (`10MB`, `100mbit`) and
//! probabilities (`0.01`, `1%`). The binary's flags and the control protocol both use these.

use std::time::Duration;

use crate::error::{Error, Result};

/// Reads a duration: a non-negative decimal number followed by `ns`, `us`, `ms`, `s` or `m`
/// (`20ms`, `1.5ms`, `250us`, `2s`). A bare `0` is accepted as zero.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let err = |reason| Error::Parse {
        what: "duration",
        value: text.to_owned(),
        reason,
    };
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| err("missing unit (ns, us, ms, s or m)"))?;
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| err("expected a number followed by a unit, such as 20ms"))?;
    let nanos_per_unit = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" | "min" => 60e9,
        _ => return Err(err("unknown unit: expected ns, us, ms, s or m")),
    };
    let nanos = value * nanos_per_unit;
    if !nanos.is_finite() || nanos > 1e18 {
        return Err(err("too large"));
    }
    // The cast cannot wrap: `nanos` is finite, non-negative and below 1e18 < u64::MAX.
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Reads a rate in bytes per second. Units, optionally followed by `/s` or `ps`: `B`, `KB`,
/// `MB`, `GB` (powers of 1000), `KiB`, `MiB`, `GiB` (powers of 1024), and bit rates `bit`,
/// `kbit`, `mbit`, `gbit` (powers of 1000, divided by 8). Units are case-insensitive except
/// that `b` alone means bytes. A bare number is bytes per second. The result is at least 1.
pub fn parse_rate(text: &str) -> Result<u64> {
    let err = |reason| Error::Parse {
        what: "rate",
        value: text.to_owned(),
        reason,
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| err("expected a number followed by a unit, such as 10MB or 100mbit"))?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("/s")
        .or_else(|| unit.strip_suffix("ps"))
        .unwrap_or(unit)
        .to_ascii_lowercase();
    let bytes_per_unit = match unit.as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "bit" => 1.0 / 8.0,
        "kbit" => 1e3 / 8.0,
        "mbit" => 1e6 / 8.0,
        "gbit" => 1e9 / 8.0,
        _ => {
            return Err(err(
                "unknown unit: expected B, KB, MB, GB, KiB, MiB, GiB or kbit, mbit, gbit",
            ));
        }
    };
    let bytes = (value * bytes_per_unit).round();
    if !bytes.is_finite() || bytes > 1e15 {
        return Err(err("too large"));
    }
    if bytes < 1.0 {
        return Err(err("must be at least 1 byte per second"));
    }
    // The cast cannot wrap: `bytes` is finite and between 1 and 1e15.
    Ok(bytes as u64)
}

/// Reads an amount of bytes: a number with an optional unit `B`, `KB`, `MB`, `GB` (powers of
/// 1000) or `KiB`, `MiB`, `GiB` (powers of 1024), case-insensitive (`4MiB`, `64kb`, `1500`).
pub fn parse_size(text: &str) -> Result<u64> {
    let err = |reason| Error::Parse {
        what: "size",
        value: text.to_owned(),
        reason,
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| err("expected a number with an optional unit, such as 4MiB"))?;
    let bytes_per_unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err("unknown unit: expected B, KB, MB, GB, KiB, MiB or GiB")),
    };
    let bytes = (value * bytes_per_unit).round();
    if !bytes.is_finite() || bytes > 1e15 {
        return Err(err("too large"));
    }
    // The cast cannot wrap: `bytes` is finite and between 0 and 1e15.
    Ok(bytes as u64)
}

/// Reads a probability: a number from 0 to 1 (`0.01`) or a percentage (`1%`).
pub fn parse_probability(text: &str) -> Result<f64> {
    let err = |reason| Error::Parse {
        what: "probability",
        value: text.to_owned(),
        reason,
    };
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(percent) => {
            percent
                .trim()
                .parse::<f64>()
                .map_err(|_| err("expected a number such as 0.01 or 1%"))?
                / 100.0
        }
        None => t
            .parse::<f64>()
            .map_err(|_| err("expected a number such as 0.01 or 1%"))?,
    };
    if !(0.0..=1.0).contains(&value) {
        return Err(err("must be between 0 and 1 (0% and 100%)"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_durations_in_every_unit() {
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(
            parse_duration("1.5ms").unwrap(),
            Duration::from_micros(1500)
        );
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration(" 0ms ").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_bad_durations() {
        for bad in ["", "20", "ms", "-5ms", "20 parsecs", "1e400s", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn reads_rates_in_bytes_and_bits() {
        assert_eq!(parse_rate("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_rate("10mb/s").unwrap(), 10_000_000);
        assert_eq!(parse_rate("1MiB").unwrap(), 1_048_576);
        assert_eq!(parse_rate("100kbit").unwrap(), 12_500);
        assert_eq!(parse_rate("1gbit").unwrap(), 125_000_000);
        assert_eq!(parse_rate("1Gbps").unwrap(), 1_000_000_000);
        assert_eq!(parse_rate("5000").unwrap(), 5000);
        assert_eq!(parse_rate("1.5KB").unwrap(), 1500);
    }

    #[test]
    fn refuses_bad_rates() {
        for bad in ["", "MB", "0", "1bit", "10 furlongs", "-1MB"] {
            assert!(parse_rate(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn reads_sizes() {
        assert_eq!(parse_size("4MiB").unwrap(), 4 * 1024 * 1024);
        assert_eq!(parse_size("64kb").unwrap(), 64_000);
        assert_eq!(parse_size("1500").unwrap(), 1500);
        for bad in ["", "MiB", "4 parsecs", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn reads_probabilities_and_percentages() {
        assert_eq!(parse_probability("0.01").unwrap(), 0.01);
        assert_eq!(parse_probability("1").unwrap(), 1.0);
        assert!((parse_probability("30%").unwrap() - 0.3).abs() < 1e-12);
        for bad in ["1.5", "-0.1", "101%", "half", "NaN"] {
            assert!(parse_probability(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
