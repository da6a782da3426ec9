//! Typed values written as strings: sizes (`"64KiB"`, `"1MiB"`, `"512B"`, `"512"`) and
//! durations (`"30s"`, `"5m"`, `"500ms"`, via `humantime`), parsing and display.

use std::time::Duration;

/// One kibibyte.
pub(crate) const KIB: u64 = 1024;
/// One mebibyte.
pub(crate) const MIB: u64 = 1024 * KIB;
/// One gibibyte.
pub(crate) const GIB: u64 = 1024 * MIB;

/// Why a size string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SizeError {
    /// Not a whole number followed by an optional known unit.
    #[error("expected a whole number of bytes, optionally followed by B, KiB, MiB or GiB")]
    Malformed,
    /// The number of bytes does not fit in 64 bits.
    #[error("too large")]
    Overflow,
}

/// Parses a size: a whole number, optionally followed (after optional spaces) by `B`, `KiB`,
/// `MiB` or `GiB`. Fractions (`"1.5KiB"`) and decimal units (`"64KB"`) are rejected so that
/// every accepted value means exactly one number of bytes.
pub(crate) fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(SizeError::Malformed);
    }
    let multiplier = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        _ => return Err(SizeError::Malformed),
    };
    // `digits` holds only ASCII digits and is non-empty, so the only possible failure is overflow.
    let count: u64 = digits.parse().map_err(|_| SizeError::Overflow)?;
    count.checked_mul(multiplier).ok_or(SizeError::Overflow)
}

/// Displays a size in the largest binary unit that divides it exactly (`65536` -> `"64KiB"`).
pub(crate) fn format_size(bytes: u64) -> String {
    match bytes {
        0 => "0B".to_owned(),
        b if b % GIB == 0 => format!("{}GiB", b / GIB),
        b if b % MIB == 0 => format!("{}MiB", b / MIB),
        b if b % KIB == 0 => format!("{}KiB", b / KIB),
        b => format!("{b}B"),
    }
}

/// Parses a `humantime` duration such as `"30s"`, `"5m"`, `"1h 30m"` or `"500ms"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(text)
}

/// Displays a duration the way it is written in the file (`"1s"`, `"5m"`, `"500ms"`).
pub(crate) fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".to_owned();
    }
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_units() {
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("2GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("512B"), Ok(512));
    }

    #[test]
    fn parses_plain_number_as_bytes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn allows_space_before_unit() {
        assert_eq!(parse_size("64 KiB"), Ok(64 * 1024));
        assert_eq!(parse_size(" 1MiB "), Ok(1024 * 1024));
    }

    #[test]
    fn rejects_fractions() {
        assert_eq!(parse_size("1.5KiB"), Err(SizeError::Malformed));
    }

    #[test]
    fn rejects_unknown_or_decimal_units() {
        assert_eq!(parse_size("64KB"), Err(SizeError::Malformed));
        assert_eq!(parse_size("64kib"), Err(SizeError::Malformed));
        assert_eq!(parse_size("64 bytes"), Err(SizeError::Malformed));
    }

    #[test]
    fn rejects_missing_number_and_signs() {
        assert_eq!(parse_size("KiB"), Err(SizeError::Malformed));
        assert_eq!(parse_size(""), Err(SizeError::Malformed));
        assert_eq!(parse_size("-1KiB"), Err(SizeError::Malformed));
        assert_eq!(parse_size("+1KiB"), Err(SizeError::Malformed));
    }

    #[test]
    fn rejects_overflow() {
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::Overflow));
        assert_eq!(parse_size("17179869184GiB"), Err(SizeError::Overflow));
    }

    #[test]
    fn formats_sizes_in_largest_exact_unit() {
        assert_eq!(format_size(65536), "64KiB");
        assert_eq!(format_size(16 * MIB), "16MiB");
        assert_eq!(format_size(GIB), "1GiB");
        assert_eq!(format_size(1536), "1536B");
        assert_eq!(format_size(0), "0B");
    }

    #[test]
    fn parses_and_formats_durations() {
        assert_eq!(parse_duration("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("0s").ok(), Some(Duration::ZERO));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("30").is_err());
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
