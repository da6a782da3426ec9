//! Configuration errors: the process exits non-zero and lists every error.

use std::process::Command;

use tern_tests::server::{temp_dir, tern_bin};

#[test]
fn bad_config_lists_every_error_and_exits_nonzero() {
    let dir = temp_dir("badconfig");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[general]\ndomains = []\ncolour = \"blue\"\n\n[auth]\nfailure_delay = \"soon\"\n\n[[listen.c2s]]\naddress = \"127.0.0.1:5999\"\ntls = \"tsl\"\n",
    )
    .unwrap();
    let out = Command::new(tern_bin())
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "general.domains",
        "general.colour",
        "auth.failure_delay",
        "listen.c2s[0].tls",
    ] {
        assert!(
            stderr.contains(&format!("bad.toml: {key}")),
            "{key} not named in:\n{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_config_file_is_an_error() {
    let out = Command::new(tern_bin())
        .args(["serve", "--config", "/nonexistent/tern.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tern.toml"));
}
