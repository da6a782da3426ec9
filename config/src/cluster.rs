//! `[cluster]`: where this node sits in the deployment: its datacenter, its Raft node id, and
//! the shared topology file (when the deployment has more than this one node).

use std::path::PathBuf;

use crate::reader::{ConfigValues, Diagnostics, Section};

/// Longest datacenter name accepted.
pub const MAX_DC_NAME: usize = 63;

/// The `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// This node's datacenter: 1 to 63 characters of `a-z`, `0-9` and `-`, not starting or
    /// ending with `-`. Default `local`.
    pub dc: String,
    /// This node's Raft node id, unique in the deployment, at least 1. Default 1.
    pub node_id: u64,
    /// The shared topology file (`topology.toml`). Not set: a single node that is the only
    /// voter of its own routing table.
    pub topology: Option<PathBuf>,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            dc: "local".to_owned(),
            node_id: 1,
            topology: None,
        }
    }
}

/// Checks a datacenter name.
fn check_dc(name: &str) -> Result<(), String> {
    let well_formed = !name.is_empty()
        && name.len() <= MAX_DC_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "invalid datacenter name {name:?}: 1 to {MAX_DC_NAME} characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

/// Reads `[cluster]`.
pub(crate) fn read(mut section: Section<'_>, d: &mut Diagnostics) -> Cluster {
    let defaults = Cluster::default();
    let dc = section
        .string(d, "dc")
        .and_then(|name| match check_dc(name) {
            Ok(()) => Some(name.to_owned()),
            Err(rule) => {
                d.report(&section.key_path("dc"), rule);
                None
            }
        })
        .unwrap_or(defaults.dc);
    let cluster = Cluster {
        dc,
        node_id: section
            .integer_in(d, "node_id", 1, None)
            .unwrap_or(defaults.node_id),
        topology: section.file_path(d, "topology"),
    };
    section.finish(d);
    cluster
}

#[cfg(test)]
mod tests {
    use crate::fixture::{config, errors};

    #[test]
    fn defaults_to_a_single_local_node() {
        let c = config("");
        assert_eq!(c.cluster.dc, "local");
        assert_eq!(c.cluster.node_id, 1);
        assert_eq!(c.cluster.topology, None);
    }

    #[test]
    fn reads_every_key() {
        let c = config(
            "[cluster]\ndc = \"eu-west\"\nnode_id = 7\ntopology = \"/etc/tern/topology.toml\"\n",
        );
        assert_eq!(c.cluster.dc, "eu-west");
        assert_eq!(c.cluster.node_id, 7);
        assert_eq!(
            c.cluster.topology.as_deref(),
            Some(std::path::Path::new("/etc/tern/topology.toml"))
        );
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(
            errors("[cluster]\ndc = \"EU west\"\nnode_id = 0\nvoter = true\n"),
            [
                "tern.toml: cluster.dc: invalid datacenter name \"EU west\": 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'",
                "tern.toml: cluster.node_id: must be at least 1, found 0",
                "tern.toml: cluster.voter: unknown key",
            ]
        );
    }
}
