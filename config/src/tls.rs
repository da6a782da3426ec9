//! `[tls]`: the certificate chain and private key served to clients. Both or neither; with
//! neither, the node makes a self-signed certificate at first start (the both-or-neither rule
//! is checked in `validate`).

use std::path::{Path, PathBuf};

use crate::reader::{ConfigValues, Diagnostics, Section};

/// The `[tls]` section. After validation `cert_file` and `key_file` are both `Some` or both
/// `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM certificate chain. Default: none.
    pub cert_file: Option<PathBuf>,
    /// PEM private key matching `cert_file`. Default: none.
    pub key_file: Option<PathBuf>,
}

impl Tls {
    /// The certificate and key files when both are configured; `None` means "use the
    /// self-signed certificate in `<data_dir>/tls/`".
    pub fn files(&self) -> Option<(&Path, &Path)> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }
}

/// Reads `[tls]`.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics) -> Tls {
    let tls = Tls {
        cert_file: section.file_path(d, "cert_file"),
        key_file: section.file_path(d, "key_file"),
    };
    section.finish(d);
    tls
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{config, errors};

    #[test]
    fn reads_both_files() {
        let c =
            config("[tls]\ncert_file = \"/etc/tern/cert.pem\"\nkey_file = \"/etc/tern/key.pem\"\n");
        assert_eq!(
            c.tls.files(),
            Some((
                Path::new("/etc/tern/cert.pem"),
                Path::new("/etc/tern/key.pem")
            ))
        );
    }

    #[test]
    fn neither_file_means_self_signed() {
        let c = config("[tls]\n");
        assert_eq!(c.tls, Tls::default());
        assert_eq!(c.tls.files(), None);
    }

    #[test]
    fn rejects_only_one_file() {
        assert_eq!(
            errors("[tls]\ncert_file = \"cert.pem\"\n"),
            ["tern.toml: tls.key_file: required when tls.cert_file is set"]
        );
        assert_eq!(
            errors("[tls]\nkey_file = \"key.pem\"\n"),
            ["tern.toml: tls.cert_file: required when tls.key_file is set"]
        );
    }

    #[test]
    fn invalid_file_does_not_also_report_missing_pair() {
        assert_eq!(
            errors("[tls]\ncert_file = \"\"\nkey_file = \"key.pem\"\n"),
            ["tern.toml: tls.cert_file: must not be empty"]
        );
        assert_eq!(
            errors("[tls]\ncert_file = \"cert.pem\"\nkey_file = [\"key.pem\"]\n"),
            ["tern.toml: tls.key_file: expected a string, found an array"]
        );
    }

    #[test]
    fn rejects_unknown_key() {
        assert_eq!(
            errors("[tls]\nca_file = \"ca.pem\"\n"),
            ["tern.toml: tls.ca_file: unknown key"]
        );
    }
}
