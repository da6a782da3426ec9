//! `tern mesh ca init` and `tern mesh cert issue`: the real binary writes the mesh's PKI files.

use std::path::Path;
use std::process::{Command, Output};

use tern_tests::server::{temp_dir, tern_bin};

fn tern_mesh(cwd: &Path, args: &[&str]) -> Output {
    Command::new(tern_bin())
        .current_dir(cwd)
        .arg("mesh")
        .args(args)
        .output()
        .expect("run tern mesh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn pem_blocks(path: &Path) -> usize {
    let pem = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

#[test]
fn ca_init_and_cert_issue_write_the_mesh_pki() {
    let work = temp_dir("mesh-pki");

    // Default directory: ./mesh-pki in the working directory.
    let out = tern_mesh(&work, &["ca", "init"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pki = work.join("mesh-pki");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("mesh-pki/ca.pem"), "{stdout}");
    assert!(stdout.contains("mesh-pki/ca.key"), "{stdout}");
    assert_eq!(pem_blocks(&pki.join("ca.pem")), 1);

    for dc in ["dc1", "eu-west"] {
        let out = tern_mesh(&work, &["cert", "issue", "--dc", dc]);
        assert!(out.status.success(), "{dc}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(stdout.contains(&format!("mesh-pki/{dc}.pem")), "{stdout}");
        assert!(stdout.contains(&format!("mesh-pki/{dc}.key")), "{stdout}");
        assert_eq!(
            pem_blocks(&pki.join(format!("{dc}.pem"))),
            2,
            "leaf then CA"
        );
    }

    #[cfg(unix)]
    for key in ["ca.key", "dc1.key", "eu-west.key"] {
        assert_eq!(mode(&pki.join(key)), 0o600, "{key}");
    }

    // A second init is refused and leaves the CA as it was.
    let ca_before = std::fs::read(pki.join("ca.pem")).unwrap();
    let key_before = std::fs::read(pki.join("ca.key")).unwrap();
    let out = tern_mesh(&work, &["ca", "init"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(stderr.contains("ca.pem"), "{stderr}");
    assert_eq!(std::fs::read(pki.join("ca.pem")).unwrap(), ca_before);
    assert_eq!(std::fs::read(pki.join("ca.key")).unwrap(), key_before);

    // --dir elsewhere.
    let other = work.join("other");
    let dir = other.to_str().unwrap();
    let out = tern_mesh(&work, &["ca", "init", "--dir", dir]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = tern_mesh(&work, &["cert", "issue", "--dc", "dc2", "--dir", dir]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(other.join("dc2.pem").is_file());
    #[cfg(unix)]
    assert_eq!(mode(&other.join("dc2.key")), 0o600);

    // Errors: a bad DC id, and a directory with no CA; nothing is written.
    let out = tern_mesh(&work, &["cert", "issue", "--dc", "Bad_DC"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Bad_DC"),
        "{}",
        text(&out.stderr)
    );
    let empty = work.join("empty");
    let out = tern_mesh(
        &work,
        &[
            "cert",
            "issue",
            "--dc",
            "dc1",
            "--dir",
            empty.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("ca.pem"), "{stderr}");
    assert!(stderr.contains("tern mesh ca init"), "{stderr}");
    assert!(!empty.exists());

    let _ = std::fs::remove_dir_all(&work);
}
