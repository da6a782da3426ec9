//! Benchmark suites of the `parser` bench target, one module per layer.
//!
//! - [`workload`]: the byte stream every suite parses.
//! - [`framing`]: the framer alone, with envelopes, with the well-formedness check, and with
//!   the full element tree.
//! - [`stream`]: the established `ServerStream`.

pub(crate) mod framing;
pub(crate) mod stream;
pub(crate) mod workload;
