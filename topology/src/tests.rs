//! Whole-file tests: one per validation rule (each checks the exact message), the lookups,
//! loading from disk, serialisation round trips, and the examples of `docs/topology.md`.

use std::net::SocketAddr;

use crate::{BridgeEndpoint, DcId, DcRole, NodeId, NodeName, Topology};

const DOC: &str = include_str!("../../docs/topology.md");

/// Parses `text` as `topology.toml`, failing the test with the error lines when invalid.
fn topology(text: &str) -> Topology {
    match Topology::from_toml_str(text, "topology.toml") {
        Ok(topology) => topology,
        Err(errors) => panic!("expected a valid topology, got:\n{errors}\nfrom:\n{text}"),
    }
}

/// Parses `text` as `topology.toml`, failing the test when valid; one line per error.
fn errors(text: &str) -> Vec<String> {
    match Topology::from_toml_str(text, "topology.toml") {
        Ok(topology) => panic!("expected errors, got {topology:?}\nfrom:\n{text}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// A `[[dc]]` entry; `keys` go into the DC's table (before any node).
fn dc(name: &str, keys: &str) -> String {
    format!("[[dc]]\nname = \"{name}\"\n{keys}")
}

/// A `[[dc.node]]` entry of the DC above it; `keys` are added to the node's table.
fn node(id: u64, name: &str, raft_addr: &str, keys: &str) -> String {
    format!("[[dc.node]]\nid = {id}\nname = \"{name}\"\nraft_addr = \"{raft_addr}\"\n{keys}")
}

/// A DC with one node, `n` picking the id, name suffix and address.
fn simple_dc(name: &str, keys: &str, n: u64) -> String {
    dc(name, keys) + &node(n, &format!("{name}-1"), &format!("10.0.0.{n}:7500"), "")
}

fn id(n: u64) -> NodeId {
    NodeId::new(n).expect("nonzero id")
}

fn dc_id(name: &str) -> DcId {
    DcId::new(name).expect("valid DC name")
}

/// Three voter DCs, one node each (ids 1-3).
fn three_dcs() -> String {
    simple_dc("eu", "", 1) + &simple_dc("us", "", 2) + &simple_dc("ap", "", 3)
}

/// The `toml` code blocks of `docs/topology.md`.
fn doc_examples() -> Vec<&'static str> {
    DOC.split("```toml\n")
        .skip(1)
        .map(|block| block.split("```").next().expect("closed code block"))
        .collect()
}

#[test]
fn reads_a_three_dc_deployment() {
    let text = dc(
        "eu-west",
        "bridge = [\"10.0.0.1:7400\", \"bridge.eu.example.com:7400\"]\n",
    ) + &node(1, "eu-west-1", "10.0.1.1:7500", "")
        + &node(2, "eu-west-2", "10.0.1.2:7500", "")
        + &dc(
            "us-east",
            "raft = \"voter\"\nbridge = [\"[2001:db8::1]:7400\"]\n",
        )
        + &node(3, "us-east-1", "10.0.2.1:7500", "voter = false\n")
        + &node(4, "us-east-2", "10.0.2.2:7500", "voter = true\n")
        + &dc("ap-south", "")
        + &node(5, "ap-south-1", "[2001:db8::5]:7500", "")
        + &dc("sa-east", "raft = \"learner\"\n")
        + &node(6, "sa-east-1", "10.0.4.1:7500", "voter = false\n")
        + "[[domain]]\nname = \"Example.COM\"\n\
           [[domain]]\nname = \"eu.example.com\"\ndcs = [\"eu-west\", \"sa-east\"]\n";
    let t = topology(&text);

    let names: Vec<&str> = t.dcs().iter().map(|dc| dc.name.as_str()).collect();
    assert_eq!(names, ["eu-west", "us-east", "ap-south", "sa-east"]);
    assert_eq!(t.voters(), [id(1), id(4), id(5)]);
    assert_eq!(t.learners(), [id(2), id(3), id(6)]);

    let eu = t.dc("eu-west").expect("eu-west");
    assert_eq!(eu.role, DcRole::Voter);
    assert_eq!(eu.voter().map(|n| n.id), Some(id(1)));
    let bridges: Vec<String> = eu.bridge.iter().map(ToString::to_string).collect();
    assert_eq!(bridges, ["10.0.0.1:7400", "bridge.eu.example.com:7400"]);
    let sa = t.dc("sa-east").expect("sa-east");
    assert_eq!(sa.role, DcRole::Learner);
    assert!(sa.voter().is_none());
    assert!(sa.bridge.is_empty());
    assert!(t.dc("nowhere").is_none());

    let n4 = t.node(id(4)).expect("node 4");
    assert_eq!(n4.name, "us-east-2");
    assert_eq!(n4.dc, "us-east");
    assert!(n4.voter);
    assert_eq!(
        n4.raft_addr,
        "10.0.2.2:7500".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(t.node_by_name("ap-south-1").map(|n| n.id), Some(id(5)));
    assert!(t.node(id(9)).is_none());
    assert!(t.node_by_name("eu-west-9").is_none());
    assert_eq!(t.nodes().count(), 6);

    // A domain without `dcs` is served by every DC that serves users.
    let all = t.domain("EXAMPLE.com").expect("example.com");
    assert_eq!(all.name, "example.com");
    assert_eq!(
        all.dcs,
        [
            dc_id("eu-west"),
            dc_id("us-east"),
            dc_id("ap-south"),
            dc_id("sa-east")
        ]
    );
    let eu_only = &t.domains()[1];
    assert_eq!(eu_only.dcs, [dc_id("eu-west"), dc_id("sa-east")]);
    assert!(eu_only.served_by("sa-east"));
    assert!(!eu_only.served_by("us-east"));
    assert!(t.domain("other.example").is_none());
}

#[test]
fn reads_two_dcs_and_a_witness() {
    let text = simple_dc("eu", "", 1)
        + &simple_dc("us", "", 2)
        + &simple_dc("tie", "raft = \"witness\"\n", 3)
        + "[[domain]]\nname = \"example.com\"\ndcs = []\n";
    let t = topology(&text);
    assert_eq!(t.voters(), [id(1), id(2), id(3)]);
    assert!(t.learners().is_empty());
    let tie = t.dc("tie").expect("tie");
    assert_eq!(tie.role, DcRole::Witness);
    assert!(tie.role.votes());
    assert!(!tie.role.serves_users());
    assert_eq!(tie.voter().map(|n| n.id), Some(id(3)));
    // The witness serves no domain, even when `dcs` is empty (all).
    assert_eq!(t.domains()[0].dcs, [dc_id("eu"), dc_id("us")]);
}

#[test]
fn first_node_votes_unless_another_says_so() {
    let text = dc("eu", "")
        + &node(1, "eu-1", "10.0.0.1:7500", "")
        + &node(2, "eu-2", "10.0.0.2:7500", "");
    assert_eq!(topology(&text).voters(), [id(1)]);

    let text = dc("eu", "")
        + &node(1, "eu-1", "10.0.0.1:7500", "")
        + &node(2, "eu-2", "10.0.0.2:7500", "voter = true\n");
    assert_eq!(topology(&text).voters(), [id(2)]);

    let text = dc("eu", "")
        + &node(1, "eu-1", "10.0.0.1:7500", "voter = false\n")
        + &node(2, "eu-2", "10.0.0.2:7500", "");
    assert_eq!(topology(&text).voters(), [id(2)]);
}

#[test]
fn requires_at_least_one_dc() {
    let expected = ["topology.toml: dc: at least one DC is required: add a [[dc]] entry"];
    assert_eq!(errors(""), expected);
    assert_eq!(errors("dc = []\n"), expected);
    assert_eq!(
        errors("dc = 1\n"),
        ["topology.toml: dc: expected an array of tables, found an integer"]
    );
}

#[test]
fn rejects_malformed_and_duplicate_dc_names() {
    let text = simple_dc("eu", "", 1)
        + &simple_dc("us", "", 2)
        + &dc("eu", "")
        + &node(3, "eu-2", "10.0.0.3:7500", "");
    assert_eq!(
        errors(&text),
        ["topology.toml: dc[2].name: duplicate DC name \"eu\" (also dc[0].name)"]
    );

    let text = dc("EU_west", "")
        + &node(1, "n1", "10.0.0.1:7500", "")
        + &dc("-us", "")
        + &node(2, "n2", "10.0.0.2:7500", "")
        + &dc("", "")
        + &node(3, "n3", "10.0.0.3:7500", "")
        + &dc(&"a".repeat(64), "")
        + &node(4, "n4", "10.0.0.4:7500", "")
        + &simple_dc("ok", "", 5);
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc[0].name: invalid DC name \"EU_west\": must contain only \
             lowercase letters a-z, digits 0-9 and '-', found 'E'",
            "topology.toml: dc[1].name: invalid DC name \"-us\": must not start or end with '-'",
            "topology.toml: dc[2].name: invalid DC name \"\": must not be empty",
            format!(
                "topology.toml: dc[3].name: invalid DC name \"{}\": must be at most 63 \
                 characters, found 64",
                "a".repeat(64)
            )
            .as_str(),
        ]
    );
}

#[test]
fn rejects_zero_and_duplicate_node_ids() {
    let text = dc("eu", "")
        + &node(1, "eu-1", "10.0.0.1:7500", "")
        + &node(0, "eu-2", "10.0.0.12:7500", "")
        + &simple_dc("us", "", 2)
        + &simple_dc("ap", "", 3)
        + &node(1, "ap-2", "10.0.0.9:7500", "");
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc[0].node[1].id: must be at least 1, found 0",
            "topology.toml: dc[2].node[1].id: duplicate node id 1 (also dc[0].node[0].id)",
        ]
    );
    let text = dc("eu", "") + "[[dc.node]]\nid = -4\nname = \"eu-1\"\nraft_addr = \"10.0.0.1:1\"\n";
    assert_eq!(
        errors(&text),
        ["topology.toml: dc[0].node[0].id: must be at least 1, found -4"]
    );
}

#[test]
fn rejects_malformed_and_duplicate_node_names() {
    let text = dc("eu", "")
        + &node(1, "eu-1", "10.0.0.1:7500", "")
        + &node(2, "Eu 2", "10.0.0.2:7500", "")
        + &dc("us", "raft = \"learner\"\n")
        + &node(3, "eu-1", "10.0.0.3:7500", "");
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc[0].node[1].name: invalid node name \"Eu 2\": must contain only \
             lowercase letters a-z, digits 0-9 and '-', found 'E'",
            "topology.toml: dc[1].node[0].name: duplicate node name \"eu-1\" (also \
             dc[0].node[0].name)",
        ]
    );
}

#[test]
fn rejects_malformed_and_duplicate_raft_addresses() {
    let text = dc("eu", "")
        + &node(1, "eu-1", "127.0.0.1:7500", "")
        + &dc("us", "raft = \"learner\"\n")
        + &node(2, "us-1", "127.0.0.1:7500", "")
        + &node(3, "us-2", "us-2.example.com:7500", "")
        + &node(4, "us-3", "127.0.0.1", "")
        + &node(5, "us-4", "0.0.0.0:7500", "")
        + &node(6, "us-5", "127.0.0.1:0", "");
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc[1].node[1].raft_addr: invalid address \"us-2.example.com:7500\": \
             expected IP:port such as \"10.0.0.1:7500\" or \"[::1]:7500\"; host names are not \
             allowed here",
            "topology.toml: dc[1].node[2].raft_addr: invalid address \"127.0.0.1\": expected \
             host:port, such as \"10.0.0.1:7400\" or \"bridge.example.com:7400\"",
            "topology.toml: dc[1].node[3].raft_addr: invalid address \"0.0.0.0:7500\": \
             unspecified address 0.0.0.0 cannot be dialled: give the address peers reach",
            "topology.toml: dc[1].node[4].raft_addr: invalid address \"127.0.0.1:0\": port 0 \
             cannot be dialled: give the port this endpoint listens on",
            "topology.toml: dc[1].node[0].raft_addr: duplicate address 127.0.0.1:7500 (also \
             dc[0].node[0].raft_addr)",
        ]
    );
}

#[test]
fn rejects_malformed_and_duplicate_bridge_endpoints() {
    let text = simple_dc(
        "eu",
        "bridge = [\"10.0.0.1:7400\", \"Bridge.example.com:7400\"]\n",
        1,
    ) + &simple_dc(
        "us",
        "bridge = [\"bridge.example.com:7400\", \"10.0.0.1:7400\", \"10.0.0.1:7401\"]\n",
        2,
    ) + &simple_dc("ap", "bridge = [\"bridge:x\", \"::1:7400\", 7]\n", 3);
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc[2].bridge[2]: expected a string, found an integer",
            "topology.toml: dc[2].bridge[0]: invalid endpoint \"bridge:x\": invalid port \"x\": \
             expected a number from 1 to 65535",
            "topology.toml: dc[2].bridge[1]: invalid endpoint \"::1:7400\": invalid host \
             \"::1\": expected an IPv4 address, an IPv6 address in brackets ([::1]) or a host \
             name",
            "topology.toml: dc[1].bridge[0]: duplicate bridge endpoint \
             bridge.example.com:7400 (also dc[0].bridge[1])",
            "topology.toml: dc[1].bridge[1]: duplicate bridge endpoint 10.0.0.1:7400 (also \
             dc[0].bridge[0])",
        ]
    );
}

#[test]
fn domain_dcs_must_be_known_dcs() {
    let text =
        three_dcs() + "[[domain]]\nname = \"example.com\"\ndcs = [\"eu\", \"mars\", \"eu\"]\n";
    assert_eq!(
        errors(&text),
        [
            "topology.toml: domain[0].dcs[1]: unknown DC \"mars\"",
            "topology.toml: domain[0].dcs[2]: duplicate DC \"eu\" (also domain[0].dcs[0])",
        ]
    );
}

#[test]
fn unknown_dc_is_not_reported_while_a_dc_name_is_invalid() {
    let text = simple_dc("eu", "", 1)
        + &dc("US", "")
        + &node(2, "us-1", "10.0.0.2:7500", "")
        + &simple_dc("ap", "", 3)
        + "[[domain]]\nname = \"example.com\"\ndcs = [\"US\"]\n";
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("topology.toml: dc[1].name: invalid DC name"));
}

#[test]
fn rejects_malformed_and_duplicate_domains() {
    let text = three_dcs()
        + "[[domain]]\nname = \"example.com\"\n\
           [[domain]]\nname = \"a..b\"\n\
           [[domain]]\nname = \"user@example.com\"\n\
           [[domain]]\nname = \"\"\n\
           [[domain]]\nname = \"EXAMPLE.com\"\n";
    assert_eq!(
        errors(&text),
        [
            "topology.toml: domain[1].name: invalid domain \"a..b\": must not have an empty \
             label (\"a..b\", \".a\", \"a.\")",
            "topology.toml: domain[2].name: invalid domain \"user@example.com\": must not \
             contain '@'",
            "topology.toml: domain[3].name: invalid domain \"\": must not be empty",
            "topology.toml: domain[4].name: duplicate domain \"example.com\" (also \
             domain[0].name)",
        ]
    );
}

#[test]
fn witness_dc_has_exactly_one_node() {
    let text = simple_dc("eu", "", 1)
        + &simple_dc("us", "", 2)
        + &simple_dc("tie", "raft = \"witness\"\n", 3)
        + &node(4, "tie-2", "10.0.0.4:7500", "");
    assert_eq!(
        errors(&text),
        ["topology.toml: dc[2].node: a witness DC has exactly one node, found 2"]
    );
    let text =
        simple_dc("eu", "", 1) + &simple_dc("us", "", 2) + &dc("tie", "raft = \"witness\"\n");
    assert_eq!(
        errors(&text),
        ["topology.toml: dc[2].node: a witness DC has exactly one node, found 0"]
    );
}

#[test]
fn witness_dc_serves_no_domains() {
    let text = simple_dc("eu", "", 1)
        + &simple_dc("us", "", 2)
        + &simple_dc("tie", "raft = \"witness\"\n", 3)
        + "[[domain]]\nname = \"example.com\"\ndcs = [\"eu\", \"tie\"]\n";
    assert_eq!(
        errors(&text),
        ["topology.toml: domain[0].dcs[1]: \"tie\" is a witness DC, which serves no domains"]
    );
}

#[test]
fn every_dc_has_a_node() {
    let text = dc("eu", "") + &simple_dc("us", "raft = \"learner\"\n", 2);
    assert_eq!(
        errors(&text),
        ["topology.toml: dc[0].node: a DC needs at least one node: add a [[dc.node]] entry"]
    );
    let text = dc("eu", "node = []\n");
    assert_eq!(
        errors(&text),
        ["topology.toml: dc[0].node: a DC needs at least one node: add a [[dc.node]] entry"]
    );
}

#[test]
fn two_voter_dcs_need_a_witness() {
    let text = simple_dc("eu", "", 1) + &simple_dc("us", "", 2);
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc: two voter DCs and no witness: a two-DC deployment needs a \
             tie-breaker, so add a witness DC (raft = \"witness\", one node) as the third voter"
        ]
    );
    // A learner does not break the tie.
    let text = text + &simple_dc("ap", "raft = \"learner\"\n", 3);
    assert_eq!(errors(&text).len(), 1);
    assert!(errors(&text)[0].contains("add a witness DC"));
}

#[test]
fn voting_dcs_are_odd() {
    let four = three_dcs() + &simple_dc("sa", "", 4);
    assert_eq!(
        errors(&four),
        [
            "topology.toml: dc: 4 voting DCs (4 voter, 0 witness): the number must be odd so \
             that one side of a split keeps a majority; add a witness DC or make one DC a \
             learner"
        ]
    );
    let three_and_witness = three_dcs() + &simple_dc("tie", "raft = \"witness\"\n", 4);
    assert!(errors(&three_and_witness)[0].contains("4 voting DCs (3 voter, 1 witness)"));
    let one_and_witness = simple_dc("eu", "", 1) + &simple_dc("tie", "raft = \"witness\"\n", 2);
    assert!(errors(&one_and_witness)[0].contains("2 voting DCs (1 voter, 1 witness)"));

    // Odd counts pass; learners do not count.
    topology(&simple_dc("eu", "", 1));
    topology(&(simple_dc("eu", "", 1) + &simple_dc("us", "raft = \"learner\"\n", 2)));
    topology(&three_dcs());
    topology(&(three_dcs() + &simple_dc("sa", "", 4) + &simple_dc("af", "", 5)));
}

#[test]
fn needs_a_voter_dc() {
    let text = simple_dc("eu", "raft = \"learner\"\n", 1);
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc: no voter DC: at least one DC needs raft = \"voter\" (a witness \
             only breaks ties, a learner does not vote)"
        ]
    );
    let text = simple_dc("tie", "raft = \"witness\"\n", 1);
    assert_eq!(errors(&text).len(), 1);
}

#[test]
fn learner_dc_has_no_voter_node() {
    let text = simple_dc("eu", "", 1)
        + &dc("us", "raft = \"learner\"\n")
        + &node(2, "us-1", "10.0.0.2:7500", "")
        + &node(3, "us-2", "10.0.0.3:7500", "voter = true\n");
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc[1].node[1].voter: a learner DC (raft = \"learner\") has no voter \
             node: remove voter = true, or make the DC raft = \"voter\""
        ]
    );
}

#[test]
fn one_voter_node_per_dc() {
    let text = dc("eu", "")
        + &node(1, "eu-1", "10.0.0.1:7500", "")
        + &node(2, "eu-2", "10.0.0.2:7500", "voter = true\n")
        + &node(3, "eu-3", "10.0.0.3:7500", "voter = true\n");
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc[0].node[2].voter: only one voter node per DC, and dc[0].node[1] \
             is already the voter"
        ]
    );
}

#[test]
fn voter_dc_needs_a_voter_node() {
    let text = dc("eu", "")
        + &node(1, "eu-1", "10.0.0.1:7500", "voter = false\n")
        + &node(2, "eu-2", "10.0.0.2:7500", "voter = false\n");
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc[0].node: a voter DC needs a voter node, but every node says \
             voter = false: set voter = true on one"
        ]
    );
    let text = simple_dc("eu", "", 1)
        + &simple_dc("us", "", 2)
        + &dc("tie", "raft = \"witness\"\n")
        + &node(3, "tie-1", "10.0.0.3:7500", "voter = false\n");
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc[2].node: a witness DC needs a voter node, but every node says \
             voter = false: set voter = true on one"
        ]
    );
}

#[test]
fn rejects_unknown_keys_at_every_level() {
    let text = "colour = \"blue\"\n".to_owned()
        + &dc("eu", "rafts = \"voter\"\n")
        + &node(1, "eu-1", "10.0.0.1:7500", "votr = true\nweight = 2\n")
        + "[[domain]]\nname = \"example.com\"\ndsc = []\n";
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc[0].node[0].votr: unknown key (did you mean \"voter\"?)",
            "topology.toml: dc[0].node[0].weight: unknown key",
            "topology.toml: dc[0].rafts: unknown key (did you mean \"raft\"?)",
            "topology.toml: domain[0].dsc: unknown key",
            "topology.toml: colour: unknown key",
        ]
    );
}

#[test]
fn reports_missing_required_keys() {
    let text = "[[dc]]\n[[dc.node]]\nvoter = true\n[[domain]]\ndcs = []\n";
    assert_eq!(
        errors(text),
        [
            "topology.toml: dc[0].name: missing required key",
            "topology.toml: dc[0].node[0].id: missing required key",
            "topology.toml: dc[0].node[0].name: missing required key",
            "topology.toml: dc[0].node[0].raft_addr: missing required key",
            "topology.toml: domain[0].name: missing required key",
        ]
    );
}

#[test]
fn reports_wrong_types() {
    let text = "[[dc]]\nname = 1\nraft = \"leader\"\nbridge = \"10.0.0.1:7400\"\nnode = 3\n\
                [[dc]]\nname = \"us\"\nraft = true\nnode = [1]\n\
                [[domain]]\nname = [\"example.com\"]\ndcs = \"eu\"\n\
                domain = 2\n";
    // `domain = 2` after `[[domain]]` is a key of that domain table.
    assert_eq!(
        errors(text),
        [
            "topology.toml: dc[0].name: expected a string, found an integer",
            "topology.toml: dc[0].raft: expected one of \"voter\", \"learner\", \"witness\", \
             found \"leader\"",
            "topology.toml: dc[0].bridge: expected an array of strings, found a string",
            "topology.toml: dc[0].node: expected an array of tables, found an integer",
            "topology.toml: dc[1].raft: expected one of \"voter\", \"learner\", \"witness\", \
             found a boolean",
            "topology.toml: dc[1].node[0]: expected a table, found an integer",
            "topology.toml: domain[0].name: expected a string, found an array",
            "topology.toml: domain[0].dcs: expected an array of strings, found a string",
            "topology.toml: domain[0].domain: unknown key",
        ]
    );
}

#[test]
fn reports_every_problem_at_once() {
    let text = dc("eu", "")
        + &node(1, "eu-1", "127.0.0.1:7500", "")
        + &dc("us", "")
        + &node(1, "us-1", "127.0.0.1:7500", "")
        + "[[domain]]\nname = \"example.com\"\ndcs = [\"ap\"]\n";
    assert_eq!(
        errors(&text),
        [
            "topology.toml: dc[1].node[0].id: duplicate node id 1 (also dc[0].node[0].id)",
            "topology.toml: dc[1].node[0].raft_addr: duplicate address 127.0.0.1:7500 (also \
             dc[0].node[0].raft_addr)",
            "topology.toml: dc: two voter DCs and no witness: a two-DC deployment needs a \
             tie-breaker, so add a witness DC (raft = \"witness\", one node) as the third voter",
            "topology.toml: domain[0].dcs[0]: unknown DC \"ap\"",
        ]
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let e = errors("[[dc]]\nname = \"eu\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("topology.toml: invalid TOML at line 2, column "),
        "{e:?}"
    );
}

#[test]
fn single_is_one_voter_dc_with_one_node() {
    let addr: SocketAddr = "127.0.0.1:7500".parse().expect("addr");
    let t = Topology::single(
        dc_id("local"),
        id(1),
        NodeName::new("local-1").expect("name"),
        addr,
    );
    assert_eq!(t.dcs().len(), 1);
    let local = t.dc("local").expect("local");
    assert_eq!(local.role, DcRole::Voter);
    assert!(local.bridge.is_empty());
    assert_eq!(t.voters(), [id(1)]);
    assert!(t.learners().is_empty());
    assert!(t.domains().is_empty());
    let n = t.node_by_name("local-1").expect("node");
    assert_eq!((n.id, n.raft_addr, n.dc.as_str()), (id(1), addr, "local"));

    // The same deployment written as a file reads as an equal topology.
    let text = simple_dc("local", "", 1).replace("10.0.0.1", "127.0.0.1");
    assert_eq!(topology(&text), t);
}

#[test]
fn serialises_to_a_file_that_reads_back_equal() {
    let text = dc(
        "eu-west",
        "bridge = [\"10.0.0.1:7400\", \"bridge.eu.example.com:7400\"]\n",
    ) + &node(1, "eu-west-1", "10.0.1.1:7500", "")
        + &node(2, "eu-west-2", "[::1]:7500", "voter = true\n")
        + &simple_dc("us", "bridge = [\"[2001:db8::1]:7400\"]\n", 3)
        + &simple_dc("tie", "raft = \"witness\"\n", 4)
        + &simple_dc("sa", "raft = \"learner\"\n", 5)
        + "[[domain]]\nname = \"example.com\"\n\
           [[domain]]\nname = \"eu.example.com\"\ndcs = [\"eu-west\"]\n";
    let t = topology(&text);
    let written = toml::to_string(&t).expect("serialise");
    assert!(written.contains("raft = \"witness\""), "{written}");
    assert_eq!(topology(&written), t, "{written}");

    let single = Topology::single(
        dc_id("local"),
        id(1),
        NodeName::new("local-1").expect("name"),
        "127.0.0.1:7500".parse().expect("addr"),
    );
    let written = toml::to_string(&single).expect("serialise");
    assert_eq!(topology(&written), single, "{written}");
}

#[test]
fn load_reads_the_file_and_names_it() {
    let t = tern_toml_check::testing::check_load(
        "tern-topology-test",
        |path| Topology::load(path),
        &three_dcs(),
        "dc = []\n",
        "dc: at least one DC is required: add a [[dc]] entry",
    );
    assert_eq!(t.voters(), [id(1), id(2), id(3)]);
}

#[test]
fn doc_examples_are_valid() {
    let examples = doc_examples();
    assert!(examples.len() >= 3, "found {} examples", examples.len());
    for example in &examples {
        topology(example);
    }
}

#[test]
fn doc_three_dc_and_witness_examples_have_the_documented_voters() {
    let examples: Vec<Topology> = doc_examples().into_iter().map(topology).collect();
    let three = examples
        .iter()
        .find(|t| t.dc("ap-south").is_some())
        .expect("the 3-DC example");
    assert_eq!(three.voters().len(), 3);
    let witness = examples
        .iter()
        .find(|t| t.dcs().iter().any(|dc| dc.role == DcRole::Witness))
        .expect("the 2-DC + witness example");
    assert_eq!(witness.voters().len(), 3);
    assert_eq!(
        witness
            .dcs()
            .iter()
            .filter(|dc| dc.role == DcRole::Voter)
            .count(),
        2
    );
}

#[test]
fn bridge_endpoints_compare_normalised() {
    let a: BridgeEndpoint = "Bridge.Example.com:7400".parse().expect("endpoint");
    let b: BridgeEndpoint = "bridge.example.com:7400".parse().expect("endpoint");
    assert_eq!(a, b);
}
