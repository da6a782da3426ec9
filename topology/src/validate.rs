//! From a parsed TOML table to a [`Topology`]: reads every `[[dc]]`, `[[dc.node]]` and
//! `[[domain]]` entry (types, required keys, per-value rules, unknown keys), then runs the
//! checks that span entries: names, ids and addresses unique, node counts and the voter node
//! of each DC, an odd number of voting DCs, and each domain's DCs known and not witnesses.
//! Every problem is recorded; the topology is built only when there is none.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::net::SocketAddr;

use tern_toml_check::{Diagnostics, Section};
use toml::Table;

use crate::endpoint::{BridgeEndpoint, parse_raft_addr};
use crate::error::Result;
use crate::id::{DcId, NodeId, NodeName};
use crate::topology::{Dc, DcRole, Domain, Node, Topology};

/// The longest domain, in bytes (RFC 7622 §3.2).
const MAX_DOMAIN_BYTES: usize = 1023;

/// How many edits an unknown key may be from a known one, at most, to be suggested.
const MAX_TYPO_EDITS: usize = 2;

/// The values of the `raft` key.
const ROLES: [(&str, DcRole); 3] = [
    ("voter", DcRole::Voter),
    ("learner", DcRole::Learner),
    ("witness", DcRole::Witness),
];

/// A `[[dc.node]]` entry as read; `None` where the value was missing or invalid (reported).
struct NodeEntry {
    path: String,
    id: Option<NodeId>,
    name: Option<NodeName>,
    raft_addr: Option<SocketAddr>,
    /// The `voter` key as written: `None` when not set (or not a boolean, reported).
    voter: Option<bool>,
}

/// A `[[dc]]` entry as read.
struct DcEntry {
    path: String,
    name: Option<DcId>,
    role: Option<DcRole>,
    bridge: Vec<(String, Option<BridgeEndpoint>)>,
    /// `None` when `node` is not an array of tables (reported); elements that are not
    /// tables are `None` (reported).
    nodes: Option<Vec<Option<NodeEntry>>>,
    /// Index in `nodes` of the voting node, once resolved.
    voter: Option<usize>,
}

/// A `[[domain]]` entry as read.
struct DomainEntry {
    path: String,
    name: Option<String>,
    dcs: Vec<(String, Option<String>)>,
}

/// Reads and checks a whole file.
pub(crate) fn validate(table: &Table, file: &str) -> Result<Topology> {
    let mut d = Diagnostics::new(file).max_typo_edits(MAX_TYPO_EDITS);
    let mut root = Section::root(table);
    let mut dcs = read_dcs(&mut root, &mut d);
    let domains = read_domains(&mut root, &mut d);
    root.finish(&mut d);

    if let Some(dcs) = dcs.as_mut() {
        check_unique_keys(dcs, &domains, &mut d);
        for dc in dcs.iter_mut().flatten() {
            check_nodes_of(dc, &mut d);
        }
        check_vote_count(dcs, &mut d);
    }
    check_domain_dcs(dcs.as_deref(), &domains, &mut d);

    let topology = if d.is_clean() {
        dcs.and_then(|dcs| build(dcs, domains))
    } else {
        None
    };
    d.into_result_some(topology)
}

/// Reads `[[dc]]`; `None` when there is none (reported) or `dc` is not an array (reported).
fn read_dcs(root: &mut Section<'_>, d: &mut Diagnostics) -> Option<Vec<Option<DcEntry>>> {
    let Some(entries) = root.sections(d, "dc") else {
        if !d.has_error_at("dc") {
            d.report("dc", "at least one DC is required: add a [[dc]] entry");
        }
        return None;
    };
    if entries.is_empty() {
        d.report("dc", "at least one DC is required: add a [[dc]] entry");
        return None;
    }
    let dcs = entries
        .into_iter()
        .map(|entry| entry.map(|section| read_dc(section, d)))
        .collect();
    Some(dcs)
}

fn read_dc(mut s: Section<'_>, d: &mut Diagnostics) -> DcEntry {
    let name = if s.require(d, "name") {
        s.string(d, "name").and_then(|text| match DcId::new(text) {
            Ok(name) => Some(name),
            Err(e) => {
                d.report(
                    &s.key_path("name"),
                    format!("invalid DC name {text:?}: {e}"),
                );
                None
            }
        })
    } else {
        None
    };
    // Not set: a voter DC. Set but invalid: unknown (reported).
    let role = match s.choice(d, "raft", &ROLES) {
        Some(role) => Some(role),
        None if d.has_error_at(&s.key_path("raft")) => None,
        None => Some(DcRole::Voter),
    };
    let bridge = s
        .string_array(d, "bridge")
        .unwrap_or_default()
        .into_iter()
        .map(|(path, text)| {
            let endpoint = text.and_then(|text| match text.parse::<BridgeEndpoint>() {
                Ok(endpoint) => Some(endpoint),
                Err(e) => {
                    d.report(&path, format!("invalid endpoint {text:?}: {e}"));
                    None
                }
            });
            (path, endpoint)
        })
        .collect();
    let nodes = match s.sections(d, "node") {
        Some(entries) => Some(
            entries
                .into_iter()
                .map(|entry| entry.map(|section| read_node(section, d)))
                .collect(),
        ),
        // Not set: an empty list, which the node count check reports.
        None if !d.has_error_at(&s.key_path("node")) => Some(Vec::new()),
        None => None,
    };
    let path = s.path().to_owned();
    s.finish(d);
    DcEntry {
        path,
        name,
        role,
        bridge,
        nodes,
        voter: None,
    }
}

fn read_node(mut s: Section<'_>, d: &mut Diagnostics) -> NodeEntry {
    let id = if s.require(d, "id") {
        s.integer(d, "id").and_then(|number| {
            let id = u64::try_from(number).ok().and_then(NodeId::new);
            if id.is_none() {
                d.report(
                    &s.key_path("id"),
                    format!("must be at least 1, found {number}"),
                );
            }
            id
        })
    } else {
        None
    };
    let name = if s.require(d, "name") {
        s.string(d, "name")
            .and_then(|text| match NodeName::new(text) {
                Ok(name) => Some(name),
                Err(e) => {
                    d.report(
                        &s.key_path("name"),
                        format!("invalid node name {text:?}: {e}"),
                    );
                    None
                }
            })
    } else {
        None
    };
    let raft_addr = if s.require(d, "raft_addr") {
        s.string(d, "raft_addr")
            .and_then(|text| match parse_raft_addr(text) {
                Ok(address) => Some(address),
                Err(e) => {
                    d.report(
                        &s.key_path("raft_addr"),
                        format!("invalid address {text:?}: {e}"),
                    );
                    None
                }
            })
    } else {
        None
    };
    let voter = s.boolean(d, "voter");
    let path = s.path().to_owned();
    s.finish(d);
    NodeEntry {
        path,
        id,
        name,
        raft_addr,
        voter,
    }
}

/// Reads `[[domain]]`; none is fine.
fn read_domains(root: &mut Section<'_>, d: &mut Diagnostics) -> Vec<Option<DomainEntry>> {
    root.sections(d, "domain")
        .unwrap_or_default()
        .into_iter()
        .map(|entry| entry.map(|section| read_domain(section, d)))
        .collect()
}

fn read_domain(mut s: Section<'_>, d: &mut Diagnostics) -> DomainEntry {
    let name = if s.require(d, "name") {
        s.string(d, "name")
            .and_then(|text| match check_domain(text) {
                Ok(domain) => Some(domain),
                Err(rule) => {
                    d.report(
                        &s.key_path("name"),
                        format!("invalid domain {text:?}: {rule}"),
                    );
                    None
                }
            })
    } else {
        None
    };
    let dcs = s
        .string_array(d, "dcs")
        .unwrap_or_default()
        .into_iter()
        .map(|(path, text)| (path, text.map(str::to_owned)))
        .collect();
    let path = s.path().to_owned();
    s.finish(d);
    DomainEntry { path, name, dcs }
}

/// Lowercases a domain and checks it: not empty, at most [`MAX_DOMAIN_BYTES`], no `@`, `/`,
/// whitespace or control characters, no empty label.
fn check_domain(text: &str) -> Result<String, String> {
    let domain = text.to_lowercase();
    if domain.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if domain.len() > MAX_DOMAIN_BYTES {
        return Err(format!(
            "must be at most {MAX_DOMAIN_BYTES} bytes, found {}",
            domain.len()
        ));
    }
    if let Some(c) = domain
        .chars()
        .find(|c| *c == '@' || *c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("must not contain {c:?}"));
    }
    if domain.split('.').any(str::is_empty) {
        return Err("must not have an empty label (\"a..b\", \".a\", \"a.\")".to_owned());
    }
    Ok(domain)
}

/// Records each value of `items` (key path, value, value as shown) and reports every value
/// seen before as `duplicate <what> <value> (also <first key path>)`.
fn report_duplicates<K: Eq + Hash>(
    d: &mut Diagnostics,
    what: &str,
    items: impl IntoIterator<Item = (String, K, String)>,
) {
    let mut first: HashMap<K, String> = HashMap::new();
    for (path, key, shown) in items {
        match first.entry(key) {
            Entry::Occupied(seen) => {
                d.report(
                    &path,
                    format!("duplicate {what} {shown} (also {})", seen.get()),
                );
            }
            Entry::Vacant(slot) => {
                slot.insert(path);
            }
        }
    }
}

/// DC names, node ids, node names, Raft addresses, bridge endpoints and domain names are each
/// unique in the deployment.
fn check_unique_keys(
    dcs: &[Option<DcEntry>],
    domains: &[Option<DomainEntry>],
    d: &mut Diagnostics,
) {
    let dcs: Vec<&DcEntry> = dcs.iter().flatten().collect();
    let nodes: Vec<&NodeEntry> = dcs
        .iter()
        .filter_map(|dc| dc.nodes.as_ref())
        .flatten()
        .flatten()
        .collect();

    let dc_names = dcs.iter().filter_map(|dc| {
        let name = dc.name.as_ref()?;
        Some((
            format!("{}.name", dc.path),
            name.clone(),
            format!("{:?}", name.as_str()),
        ))
    });
    report_duplicates(d, "DC name", dc_names.collect::<Vec<_>>());

    let ids = nodes.iter().filter_map(|n| {
        let id = n.id?;
        Some((format!("{}.id", n.path), id, id.to_string()))
    });
    report_duplicates(d, "node id", ids.collect::<Vec<_>>());

    let names = nodes.iter().filter_map(|n| {
        let name = n.name.as_ref()?;
        Some((
            format!("{}.name", n.path),
            name.clone(),
            format!("{:?}", name.as_str()),
        ))
    });
    report_duplicates(d, "node name", names.collect::<Vec<_>>());

    let addresses = nodes.iter().filter_map(|n| {
        let address = n.raft_addr?;
        Some((
            format!("{}.raft_addr", n.path),
            address,
            address.to_string(),
        ))
    });
    report_duplicates(d, "address", addresses.collect::<Vec<_>>());

    let endpoints = dcs
        .iter()
        .flat_map(|dc| &dc.bridge)
        .filter_map(|(path, e)| {
            let e = e.as_ref()?;
            Some((path.clone(), e.clone(), e.to_string()))
        });
    report_duplicates(d, "bridge endpoint", endpoints.collect::<Vec<_>>());

    let domain_names = domains.iter().flatten().filter_map(|domain| {
        let name = domain.name.as_ref()?;
        Some((
            format!("{}.name", domain.path),
            name.clone(),
            format!("{name:?}"),
        ))
    });
    report_duplicates(d, "domain", domain_names.collect::<Vec<_>>());
}

/// Node count and voter node of one DC: a witness DC has exactly one node, any other DC at
/// least one; a learner DC has no voter node; a voter or witness DC has exactly one, the node
/// with `voter = true` or else the first node that does not say `voter = false`.
fn check_nodes_of(dc: &mut DcEntry, d: &mut Diagnostics) {
    let (Some(role), Some(nodes)) = (dc.role, dc.nodes.as_ref()) else {
        return;
    };
    let node_key = format!("{}.node", dc.path);
    match (role, nodes.len()) {
        (DcRole::Witness, 1) => {}
        (DcRole::Witness, n) => {
            d.report(
                &node_key,
                format!("a witness DC has exactly one node, found {n}"),
            );
        }
        (_, 0) => d.report(
            &node_key,
            "a DC needs at least one node: add a [[dc.node]] entry",
        ),
        _ => {}
    }

    let said_voter: Vec<(usize, &NodeEntry)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
        .filter(|(_, n)| n.voter == Some(true))
        .collect();
    if role == DcRole::Learner {
        for (_, node) in &said_voter {
            d.report(
                &format!("{}.voter", node.path),
                "a learner DC (raft = \"learner\") has no voter node: remove voter = true, \
                 or make the DC raft = \"voter\"",
            );
        }
        return;
    }
    if let [(_, first), rest @ ..] = said_voter.as_slice() {
        for (_, node) in rest {
            d.report(
                &format!("{}.voter", node.path),
                format!(
                    "only one voter node per DC, and {} is already the voter",
                    first.path
                ),
            );
        }
    }
    dc.voter = match said_voter.first() {
        Some((i, _)) => Some(*i),
        None => nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.voter != Some(false))),
    };
    let all_tables = nodes.iter().all(Option::is_some);
    if dc.voter.is_none() && !nodes.is_empty() && all_tables {
        d.report(
            &node_key,
            format!(
                "a {role} DC needs a voter node, but every node says voter = false: \
                 set voter = true on one"
            ),
        );
    }
}

/// The voting DCs (voter and witness) are at least one voter DC, and an odd number when more
/// than one, so that a split always leaves a majority on one side. Skipped while a DC's role
/// is unknown.
fn check_vote_count(dcs: &[Option<DcEntry>], d: &mut Diagnostics) {
    let roles: Option<Vec<DcRole>> = dcs
        .iter()
        .map(|dc| dc.as_ref().and_then(|dc| dc.role))
        .collect();
    let Some(roles) = roles else {
        return;
    };
    let voters = roles.iter().filter(|r| **r == DcRole::Voter).count();
    let witnesses = roles.iter().filter(|r| **r == DcRole::Witness).count();
    let voting = voters + witnesses;
    if voters == 0 {
        d.report(
            "dc",
            "no voter DC: at least one DC needs raft = \"voter\" (a witness only breaks ties, \
             a learner does not vote)",
        );
    } else if voters == 2 && witnesses == 0 {
        d.report(
            "dc",
            "two voter DCs and no witness: a two-DC deployment needs a tie-breaker, so add a \
             witness DC (raft = \"witness\", one node) as the third voter",
        );
    } else if voting > 1 && voting % 2 == 0 {
        d.report(
            "dc",
            format!(
                "{voting} voting DCs ({voters} voter, {witnesses} witness): the number must be \
                 odd so that one side of a split keeps a majority; add a witness DC or make one \
                 DC a learner"
            ),
        );
    }
}

/// Each name in a domain's `dcs` is a known DC, not a witness, and listed once.
fn check_domain_dcs(
    dcs: Option<&[Option<DcEntry>]>,
    domains: &[Option<DomainEntry>],
    d: &mut Diagnostics,
) {
    // While a DC entry or its name is invalid, a name it would have matched is not "unknown".
    let known: Option<HashMap<&str, Option<DcRole>>> = dcs.and_then(|dcs| {
        dcs.iter()
            .map(|dc| {
                let dc = dc.as_ref()?;
                Some((dc.name.as_ref()?.as_str(), dc.role))
            })
            .collect()
    });
    for domain in domains.iter().flatten() {
        let listed = domain
            .dcs
            .iter()
            .filter_map(|(path, name)| Some((path.clone(), name.clone()?)));
        let listed: Vec<(String, String)> = listed.collect();
        for (path, name) in &listed {
            match known.as_ref().map(|known| known.get(name.as_str())) {
                Some(None) => d.report(path, format!("unknown DC {name:?}")),
                Some(Some(Some(DcRole::Witness))) => d.report(
                    path,
                    format!("{name:?} is a witness DC, which serves no domains"),
                ),
                _ => {}
            }
        }
        let items = listed.into_iter().map(|(path, name)| {
            let shown = format!("{name:?}");
            (path, name, shown)
        });
        report_duplicates(d, "DC", items);
    }
}

/// Builds the topology from entries that passed every check; `None` only if some value is
/// missing, which the checks would have reported.
fn build(dcs: Vec<Option<DcEntry>>, domains: Vec<Option<DomainEntry>>) -> Option<Topology> {
    let mut built = Vec::with_capacity(dcs.len());
    for dc in dcs {
        let dc = dc?;
        let name = dc.name?;
        let nodes = dc
            .nodes?
            .into_iter()
            .enumerate()
            .map(|(i, node)| {
                let node = node?;
                Some(Node {
                    id: node.id?,
                    name: node.name?,
                    raft_addr: node.raft_addr?,
                    voter: dc.voter == Some(i),
                    dc: name.clone(),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let bridge = dc
            .bridge
            .into_iter()
            .map(|(_, e)| e)
            .collect::<Option<Vec<_>>>()?;
        built.push(Dc {
            name,
            role: dc.role?,
            bridge,
            nodes,
        });
    }
    let serving: Vec<DcId> = built
        .iter()
        .filter(|dc| dc.role.serves_users())
        .map(|dc| dc.name.clone())
        .collect();
    let domains = domains
        .into_iter()
        .map(|domain| {
            let domain = domain?;
            let listed = domain
                .dcs
                .into_iter()
                .map(|(_, name)| DcId::new(&name?).ok())
                .collect::<Option<Vec<_>>>()?;
            Some(Domain {
                name: domain.name?,
                dcs: if listed.is_empty() {
                    serving.clone()
                } else {
                    listed
                },
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Topology::from_checked(built, domains))
}
