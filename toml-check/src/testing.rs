//! Helpers for the tests of crates that read their files with this one (feature `testing`).

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use crate::error::Errors;

/// Checks a crate's `load` function against real files, in a fresh scratch directory under
/// the system's temporary directory named after `label` (removed afterwards), and returns
/// what `good` loaded to, for the caller's own checks.
///
/// Panics unless all of these hold:
/// - the file holding `good` loads;
/// - the file holding `bad` fails with exactly one line, `<its path>: <bad_line>`;
/// - a file that does not exist fails with an empty key and `<its path>: cannot read file: …`.
pub fn check_load<T: Debug>(
    label: &str,
    load: impl Fn(&Path) -> Result<T, Errors>,
    good: &str,
    bad: &str,
    bad_line: &str,
) -> T {
    let dir = Scratch::new(label);
    let good_path = dir.write("good.toml", good);
    let loaded = match load(&good_path) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected {} to load, got:\n{e}", good_path.display()),
    };

    let bad_path = dir.write("bad.toml", bad);
    let e = load(&bad_path).expect_err("invalid file");
    assert_eq!(e.to_string(), format!("{}: {bad_line}", bad_path.display()));

    let missing = dir.0.join("missing.toml");
    let e = load(&missing).expect_err("missing file");
    assert_eq!(e.errors[0].key, "");
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read file: ", missing.display())),
        "{e}"
    );
    loaded
}

/// A scratch directory, removed when dropped (also when a check panics).
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    /// Writes `text` to the file `name` in the directory; its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a directory left behind in the temporary directory is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Diagnostics, Section, load_file, parse_table};

    /// A tiny format: one required string `name`.
    fn load(path: &Path) -> Result<String, Errors> {
        load_file(path, |text, file| {
            let table = parse_table(text, file)?;
            let mut d = Diagnostics::new(file);
            let mut root = Section::root(&table);
            let present = root.require(&mut d, "name");
            let name = root.string(&mut d, "name").filter(|_| present);
            root.finish(&mut d);
            d.into_result_some(name.map(str::to_owned))
        })
    }

    #[test]
    fn checks_a_loader() {
        let name = check_load(
            "tern-toml-check-testing",
            load,
            "name = \"x\"\n",
            "name = 1\n",
            "name: expected a string, found an integer",
        );
        assert_eq!(name, "x");
    }

    #[test]
    fn removes_its_directory() {
        let path = {
            let dir = Scratch::new("tern-toml-check-testing-scratch");
            dir.write("a.toml", "a = 1\n");
            assert!(dir.0.join("a.toml").exists());
            dir.0.clone()
        };
        assert!(!path.exists());
    }

    #[test]
    #[should_panic(expected = "assertion `left == right` failed")]
    fn fails_on_another_message() {
        check_load(
            "tern-toml-check-testing-wrong",
            load,
            "name = \"x\"\n",
            "name = 1\n",
            "name: missing required key",
        );
    }
}
