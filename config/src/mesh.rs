//! `[mesh]`: this node's side of the global distribution mesh (used when `cluster.topology` is
//! set and the node's datacenter has bridge endpoints).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::reader::{ConfigValues, Diagnostics, Section};

/// The `[mesh]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    /// Where the mesh CA certificate and this DC's certificate and key are (`ca.pem`,
    /// `<dc>.pem`, `<dc>.key`, as `tern mesh ca init` / `tern mesh cert issue` write them).
    /// Default `mesh-pki`.
    pub pki_dir: PathBuf,
    /// The UDP address the bridge listener binds. Default: the first bridge endpoint of this
    /// node's datacenter in the topology.
    pub listen: Option<SocketAddr>,
    /// Envelope streams per bridge (1 to 1024). Default 16.
    pub streams: u16,
    /// Envelopes waiting for one peer datacenter before senders get `<resource-constraint/>`.
    /// Default 100,000.
    pub queue_limit: usize,
    /// A peer unreachable for this long is down: stanzas for its users get
    /// `<remote-server-timeout/>` at once. Default 30 s.
    pub down_after: Duration,
    /// A bridge that hears nothing from its peer for this long is dead and reconnects.
    /// Default 30 s.
    pub idle_timeout: Duration,
    /// How often an idle bridge sends a keep-alive; shorter than `idle_timeout`. Default 5 s.
    pub keepalive: Duration,
}

impl Default for Mesh {
    fn default() -> Self {
        Self {
            pki_dir: PathBuf::from("mesh-pki"),
            listen: None,
            streams: 16,
            queue_limit: 100_000,
            down_after: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(5),
        }
    }
}

/// Reads `[mesh]`.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics) -> Mesh {
    let defaults = Mesh::default();
    let mesh = Mesh {
        pki_dir: section.file_path(d, "pki_dir").unwrap_or(defaults.pki_dir),
        listen: section.socket_addr(d, "listen"),
        streams: section
            .integer_in(d, "streams", 1, Some(1024))
            .unwrap_or(defaults.streams),
        queue_limit: section
            .integer_in(d, "queue_limit", 1, Some(100_000_000))
            .unwrap_or(defaults.queue_limit),
        down_after: section
            .duration_at_least(d, "down_after", Duration::from_millis(100))
            .unwrap_or(defaults.down_after),
        idle_timeout: section
            .duration_at_least(d, "idle_timeout", Duration::from_millis(200))
            .unwrap_or(defaults.idle_timeout),
        keepalive: section
            .duration_at_least(d, "keepalive", Duration::from_millis(50))
            .unwrap_or(defaults.keepalive),
    };
    if mesh.keepalive >= mesh.idle_timeout {
        d.report(
            &section.key_path("keepalive"),
            format!(
                "must be shorter than mesh.idle_timeout ({:?}), found {:?}",
                mesh.idle_timeout, mesh.keepalive
            ),
        );
    }
    section.finish(d);
    mesh
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::fixture::{config, errors};

    #[test]
    fn defaults_and_every_key() {
        let c = config("");
        assert_eq!(c.mesh, super::Mesh::default());
        let c = config(
            "[mesh]\npki_dir = \"/etc/tern/pki\"\nlisten = \"127.0.0.1:7401\"\nstreams = 4\nqueue_limit = 10\ndown_after = \"5s\"\n",
        );
        assert_eq!(c.mesh.pki_dir, std::path::PathBuf::from("/etc/tern/pki"));
        assert_eq!(c.mesh.listen, Some("127.0.0.1:7401".parse().unwrap()));
        assert_eq!(c.mesh.streams, 4);
        assert_eq!(c.mesh.queue_limit, 10);
        assert_eq!(c.mesh.down_after, Duration::from_secs(5));
    }

    #[test]
    fn keepalive_must_be_shorter_than_the_idle_timeout() {
        let errors = errors("[mesh]\nidle_timeout = \"1s\"\nkeepalive = \"2s\"\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("tern.toml: mesh.keepalive: must be shorter"),
            "{errors:?}"
        );
        let c = config("[mesh]\nidle_timeout = \"1s\"\nkeepalive = \"200ms\"\n");
        assert_eq!(c.mesh.idle_timeout, Duration::from_secs(1));
    }

    #[test]
    fn bad_values_name_their_keys() {
        let errors = errors("[mesh]\nstreams = 0\nqueue = 3\n");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("tern.toml: mesh.streams: "),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("tern.toml: mesh.queue: unknown key"),
            "{errors:?}"
        );
    }
}
