//! The topology file parser: a good file round-trips through `render`; each
//! kind of bad file is refused with a message naming the entry and field.

mod common;

use slotd_raft_store::topology::{parse, render};

const GOOD: &str = r#"
[[node]]
id = 1
name = "imap1"
addr = "10.0.0.1:7420"
slots = ["s01", "s02"]
[[node]]
id = 2
name = "imap2"
addr = "10.0.0.2:7420"
slots = ["s01", "s02"]
[[store]]
name = "st01"
master_ip = "10.0.1.1/32"
replica_ip = "10.0.2.1/32"
slots = ["imap1:s01", "imap2:s01"]
[[store]]
name = "st02"
master_ip = "fd00::1:2/128"
replica_ip = "fd00::2:2/128"
slots = ["imap2:s02", "imap1:s02"]
"#;

#[test]
fn good_file_parses_and_round_trips() {
    let t = parse(GOOD).unwrap();
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(t.stores[1].slots[0].node, 2, "first slot = preferred master");
    assert!(t.nodes.iter().all(|n| n.voter), "two nodes: both vote by default");
    assert_eq!(parse(&render(&t)).unwrap(), t);
    let planned = common::planned(7, 6);
    assert_eq!(parse(&render(&planned)).unwrap(), planned);
}

#[test]
fn bad_files_name_the_problem() {
    let cases: Vec<(String, &str)> = vec![
        (
            GOOD.replace("addr = \"10.0.0.2:7420\"\n", ""),
            "node #2 (imap2): field `addr`: missing",
        ),
        (GOOD.replace("name = \"imap1\"\n", ""), "node #1: field `name`: missing"),
        (
            GOOD.replacen("slots = [\"s01\", \"s02\"]\n", "", 1),
            "node #1 (imap1): field `slots`: missing",
        ),
        (
            GOOD.replace("master_ip = \"10.0.1.1/32\"\n", ""),
            "store #1 (st01): field `master_ip`: missing",
        ),
        (
            GOOD.replace("fd00::1:2/128", "10.0.1.1/32"),
            "store #2 (st02): field `master_ip`: store \"st02\": 10.0.1.1/32 is already used by store \"st01\"",
        ),
        (
            GOOD.replace("fd00::2:2/128", "10.0.1.1/32"),
            "store #2 (st02): field `replica_ip`: store \"st02\": 10.0.1.1/32 is already used by store \"st01\"",
        ),
        (
            GOOD.replace("fd00::2:2/128", "fd00::1:2/128"),
            "store #2 (st02): field `replica_ip`: store \"st02\": field replica_ip: must differ",
        ),
        (
            GOOD.replace("\"imap2:s02\", \"imap1:s02\"", "\"imap1:s02\", \"imap1:s01\""),
            "store #2 (st02): field `slots`: store \"st02\": two slots on node imap1",
        ),
        (
            GOOD.replace("imap2:s01", "imap9:s01"),
            "store #1 (st01): field `slots`: \"imap9:s01\" names unknown node \"imap9\"",
        ),
        (GOOD.replace("imap2:s01", "imap2-s01"), "\"imap2-s01\" is not NODE:SLOT"),
        (GOOD.replace("imap2:s01", "imap2:s07"), "store #1 (st01): field `slots`: store \"st01\": node imap2 has no slot \"s07\""),
        (
            GOOD.replace("imap2:s02\", \"imap1:s02", "imap2:s01\", \"imap1:s02"),
            "store #2 (st02): field `slots`: store \"st02\": slot \"s01\" on node imap2 already belongs to store \"st01\"",
        ),
        (
            GOOD.replace("10.0.1.1/32", "10.0.1.1/40"),
            "store #1 (st01): field `master_ip`: prefix /40 is too long",
        ),
        (
            GOOD.replace("10.0.1.1/32", "banana"),
            "field `master_ip`: \"banana\" is not an IP address",
        ),
        (GOOD.replace("id = 2", "id = 1"), "node #2 (imap2): field `id`: node id 1 already exists"),
        (
            GOOD.replace("name = \"imap2\"", "name = \"imap1\""),
            "node #2 (imap1): field `name`: node name \"imap1\" already exists",
        ),
        (
            GOOD.replace("10.0.0.2:7420", "10.0.0.1:7420"),
            "node #2 (imap2): field `addr`: node address 10.0.0.1:7420 already exists",
        ),
        (
            GOOD.replace("name = \"st02\"", "name = \"st01\""),
            "store #2 (st01): field `name`: store \"st01\" already exists",
        ),
        (
            GOOD.replace("id = 1", "id = 1\ncolour = \"red\""),
            "unknown field `colour`",
        ),
        (GOOD.replace("id = 1", "id = \"one\""), "invalid type"),
        (
            format!("voters = 3\n{GOOD}"),
            "field `voters`: must be from 1 to the number of nodes (2)",
        ),
        ("".to_owned(), "no [[node]] entries"),
        ("[[node]\n".to_owned(), "TOML parse error"),
    ];
    for (text, want) in cases {
        let err = parse(&text).expect_err(want).to_string();
        assert!(err.contains(want), "expected {want:?} in: {err}");
        assert!(
            !err.contains('\n') || want == "invalid type" || want.contains("TOML") || want.contains("unknown field"),
            "one-line message expected: {err}"
        );
    }
}

#[test]
fn voters_default_and_explicit() {
    let t = common::planned(7, 2);
    let text = render(&t).replacen("voters = 3", "", 1);
    let parsed = parse(&text).unwrap();
    assert_eq!(
        parsed.nodes.iter().filter(|n| n.voter).count(),
        5,
        "7 nodes: five voters by default"
    );
    let parsed = parse(&format!("voters = 3\n{text}")).unwrap();
    let voters: Vec<u64> = parsed.nodes.iter().filter(|n| n.voter).map(|n| n.id).collect();
    assert_eq!(voters, vec![1, 2, 3], "the first nodes vote");
}
