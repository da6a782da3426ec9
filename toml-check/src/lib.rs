//! Checked reading of TOML files, shared by Tern's file formats (`tern.toml`, `topology.toml`):
//! every problem in a file is collected and reported at once, each as `file: key: rule`.
//!
//! This crate depends on no other Tern crate.
//!
//! # Layout
//!
//! - `source` — [`load_file`] (read a file, naming it as its path displays) and [`parse_table`]
//!   (TOML text into a table; syntax errors name the line and column).
//! - `diagnostics` — [`Diagnostics`], the problems found in one file so far.
//! - `section` — [`Section`], one table being read: typed getters that record problems instead
//!   of stopping, and the report of every key never asked for (`unknown key`, with a
//!   `did you mean …?` suggestion for likely typos).
//! - `error` — [`Error`] (`file: key: rule`) and [`Errors`] (all of them, one per line).
//! - `testing` (feature `testing`) — helpers for the tests of crates built on this one.
//!
//! # Example
//!
//! ```
//! use tern_toml_check::{Diagnostics, Section, parse_table};
//!
//! let table = parse_table("name = \"eu\"\nporrt = 7\n", "f.toml")?;
//! let mut d = Diagnostics::new("f.toml");
//! let mut root = Section::root(&table);
//! let name = root.string(&mut d, "name").map(str::to_owned);
//! let port = root.integer_in::<u16>(&mut d, "port", 1, None).unwrap_or(7400);
//! root.finish(&mut d);
//! let errors = d.into_result((name, port)).unwrap_err();
//! assert_eq!(
//!     errors.to_string(),
//!     "f.toml: porrt: unknown key (did you mean \"port\"?)"
//! );
//! # Ok::<(), tern_toml_check::Errors>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod diagnostics;
mod error;
mod section;
mod source;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use diagnostics::Diagnostics;
pub use error::{Error, Errors};
pub use section::Section;
pub use source::{load_file, parse_table};
