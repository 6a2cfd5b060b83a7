//! The layout the code is meant to have, checked on the code: no module of
//! the agent or the core imports one that imports it back (directly or
//! round about), the agent's rooms use only the rooms below them, the
//! core's halves do not use each other, and the core depends on nothing but
//! the cluster state's crate and serde. Run with `--nocapture` for the
//! figures (files per folder, the largest file, import levels, circles).
//!
//! Modules are read from the source as text: every `crate::…` and
//! `super::…` path (and a `use` of a child module), resolved to the longest
//! module it names. Test code (`#[cfg(test)]` onwards, `tests.rs` files)
//! and comments do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One crate's modules: path (`cluster::wire`, `""` for the root) → the
/// modules it uses, and its file's size in lines.
struct Graph {
    uses: BTreeMap<String, BTreeSet<String>>,
    lines: BTreeMap<String, usize>,
}

fn workspace() -> PathBuf {
    std::env::var_os("LAYOUT_ROOT").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."), PathBuf::from)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file holds, or `None` for binaries and test modules.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.first().is_some_and(|p| p == "bin") || parts.last().is_some_and(|p| p == "tests") {
        return None;
    }
    let mut parts = parts;
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    Some(parts.join("::"))
}

/// The code that counts: comments gone, and nothing from `#[cfg(test)]` on.
fn code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn ident_end(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    i
}

/// The paths a `use` tree starting at `at` names, each as segments after
/// `prefix` (braces expanded, one level of nesting and more).
fn paths_at(s: &[u8], mut at: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix;
    loop {
        if at < s.len() && s[at] == b'{' {
            at += 1;
            loop {
                while at < s.len() && (s[at] as char).is_whitespace() {
                    at += 1;
                }
                if at >= s.len() || s[at] == b'}' {
                    return at + 1;
                }
                at = paths_at(s, at, path.clone(), out);
                while at < s.len() && s[at] != b',' && s[at] != b'}' {
                    at += 1;
                }
                if at < s.len() && s[at] == b',' {
                    at += 1;
                }
            }
        }
        let end = ident_end(s, at);
        if end == at {
            out.push(path);
            return at;
        }
        path.push(String::from_utf8_lossy(&s[at..end]).into_owned());
        at = end;
        if s[at..].starts_with(b"::") {
            at += 2;
        } else {
            out.push(path);
            return at;
        }
    }
}

/// Every module path the code of module `me` names.
fn references(me: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let s = code.as_bytes();
    let own: Vec<String> = if me.is_empty() {
        Vec::new()
    } else {
        me.split("::").map(str::to_owned).collect()
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary = i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_' || s[i - 1] == b':');
        if boundary && s[i..].starts_with(b"crate::") {
            i = paths_at(s, i + 7, Vec::new(), &mut found);
            continue;
        }
        if boundary && s[i..].starts_with(b"super::") {
            let mut base = own.clone();
            let mut at = i;
            while s[at..].starts_with(b"super::") {
                base.pop();
                at += 7;
            }
            i = paths_at(s, at, base, &mut found);
            continue;
        }
        // `use child::…` (or `pub use`): a path relative to this module.
        if boundary && (s[i..].starts_with(b"use ") || s[i..].starts_with(b"pub use ")) {
            let at = i + if s[i] == b'p' { 8 } else { 4 };
            let end = ident_end(s, at);
            let first = String::from_utf8_lossy(&s[at..end]).into_owned();
            let mut child = own.clone();
            child.push(first);
            if modules.contains(&child.join("::")) {
                i = paths_at(s, at, own.clone(), &mut found);
                continue;
            }
        }
        i += 1;
    }
    found
        .into_iter()
        .filter_map(|path| {
            (0..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains(m))
        })
        .filter(|m| m != me)
        .collect()
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut texts = BTreeMap::new();
    for f in &files {
        if let Some(m) = module_of(src, f) {
            let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            texts.insert(m, text);
        }
    }
    let modules: BTreeSet<String> = texts.keys().cloned().collect();
    let mut uses = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for (m, text) in &texts {
        uses.insert(m.clone(), references(m, &code(text), &modules));
        lines.insert(m.clone(), text.lines().count());
    }
    Graph { uses, lines }
}

/// The strongly connected components with more than one module (Tarjan).
fn circles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in &t.g.uses[v] {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let low = t.low[v].min(t.low[w]);
                t.low.insert(v, low);
            } else if t.on.contains(w) {
                let low = t.low[v].min(t.index[w]);
                t.low.insert(v, low);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.uses.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Import levels: 1 for a module that uses none of its crate, else one
/// more than the highest it uses (a use back into a circle counts 0).
fn levels(g: &Graph) -> BTreeMap<String, usize> {
    fn level(g: &Graph, m: &str, memo: &mut BTreeMap<String, usize>) -> usize {
        if let Some(l) = memo.get(m) {
            return *l;
        }
        memo.insert(m.to_owned(), 0);
        let l = 1 + g.uses[m].iter().map(|u| level(g, u, memo)).max().unwrap_or(0);
        memo.insert(m.to_owned(), l);
        l
    }
    let mut memo = BTreeMap::new();
    for m in g.uses.keys() {
        level(g, m, &mut memo);
    }
    memo
}

/// The folder (room) of a module: its first segment when that is a folder.
fn room(m: &str, rooms: &[&str]) -> String {
    let first = m.split("::").next().unwrap_or("");
    if rooms.contains(&first) {
        first.to_owned()
    } else {
        "(root)".to_owned()
    }
}

fn report(name: &str, g: &Graph, rooms: &[&str]) {
    let mut per_room: BTreeMap<String, usize> = BTreeMap::new();
    for m in g.uses.keys() {
        *per_room.entry(room(m, rooms)).or_default() += 1;
    }
    let largest = g.lines.iter().max_by_key(|(_, n)| **n).map(|(m, n)| (m.clone(), *n));
    let max_level = levels(g).into_values().max().unwrap_or(0);
    println!(
        "{name}: {} files; per folder {per_room:?}; largest {largest:?}; {max_level} import levels; circles {:?}",
        g.uses.len(),
        circles(g)
    );
}

/// The rooms a module's uses break out of.
fn breaches(g: &Graph, rooms: &[&str], allowed: &BTreeMap<&str, Vec<&str>>) -> Vec<String> {
    let mut out = Vec::new();
    for (m, uses) in &g.uses {
        let from = room(m, rooms);
        let Some(may) = allowed.get(from.as_str()) else {
            continue;
        };
        for u in uses {
            let to = room(u, rooms);
            if to != from && !may.contains(&to.as_str()) {
                out.push(format!("{m} ({from}) uses {u} ({to})"));
            }
        }
    }
    out
}

const AGENT_ROOMS: &[&str] = &["api", "cluster", "ctl", "daemon", "host", "leader", "node", "tls"];

#[test]
fn the_agent_has_no_import_circle_and_its_rooms_look_down() {
    let g = graph(&workspace().join("agent/src"));
    assert!(g.uses.len() > 40, "read only {} modules", g.uses.len());
    report("agent", &g, AGENT_ROOMS);
    assert_eq!(circles(&g), Vec::<Vec<String>>::new(), "import circles in agent/src");
    let ground = "(root)";
    let allowed = BTreeMap::from([
        (ground, vec![]),
        ("tls", vec![ground]),
        ("host", vec![ground]),
        ("cluster", vec![ground, "host", "tls"]),
        ("leader", vec![ground, "cluster"]),
        ("node", vec![ground, "cluster", "host", "leader"]),
        ("api", vec![ground, "cluster", "leader", "tls"]),
        ("ctl", vec![ground, "tls"]),
    ]);
    assert_eq!(breaches(&g, AGENT_ROOMS, &allowed), Vec::<String>::new());
}

#[test]
fn the_core_has_no_import_circle_and_its_halves_do_not_mix() {
    let g = graph(&workspace().join("core/src"));
    assert!(g.uses.len() > 10, "read only {} modules", g.uses.len());
    let rooms = &["leader", "node"];
    report("core", &g, rooms);
    assert_eq!(circles(&g), Vec::<Vec<String>>::new(), "import circles in core/src");
    let ground = "(root)";
    let allowed = BTreeMap::from([(ground, vec![]), ("leader", vec![ground]), ("node", vec![ground])]);
    assert_eq!(breaches(&g, rooms, &allowed), Vec::<String>::new());
}

#[test]
fn the_core_depends_on_the_state_and_serde_only() {
    let text = std::fs::read_to_string(workspace().join("core/Cargo.toml")).expect("core/Cargo.toml");
    let deps: Vec<&str> = text
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split(['.', '=', ' ']).next())
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .collect();
    assert_eq!(deps, vec!["slotd-raft-store", "serde"]);
}

#[test]
fn the_reader_finds_circles_and_breaches() {
    // Teeth: the same reading of a made-up crate with a circle and a room
    // that looks up.
    let modules: BTreeSet<String> = ["", "a", "a::x", "b"].iter().map(|s| (*s).to_owned()).collect();
    let text = [
        ("a", "use crate::b::Thing;\npub mod x;\nuse x::{One, Two};\n"),
        ("a::x", "use super::Parent;\n// use crate::b::Comment;\n"),
        (
            "b",
            "pub fn f() { crate::a::x::g() }\n#[cfg(test)]\nuse crate::a::Tested;\n",
        ),
        ("", "pub mod a;\npub mod b;\n"),
    ];
    let uses: BTreeMap<String, BTreeSet<String>> = text
        .iter()
        .map(|(m, t)| ((*m).to_owned(), references(m, &code(t), &modules)))
        .collect();
    assert_eq!(uses["a"], BTreeSet::from(["b".to_owned(), "a::x".to_owned()]));
    assert_eq!(uses["a::x"], BTreeSet::from(["a".to_owned()]));
    assert_eq!(uses["b"], BTreeSet::from(["a::x".to_owned()]));
    let g = Graph {
        lines: uses.keys().map(|m| (m.clone(), 1)).collect(),
        uses,
    };
    assert_eq!(
        circles(&g),
        vec![vec!["a".to_owned(), "a::x".to_owned(), "b".to_owned()]]
    );
    let allowed = BTreeMap::from([("b", vec!["(root)"])]);
    assert_eq!(
        breaches(&g, &["a", "b"], &allowed),
        vec!["b (b) uses a::x (a)".to_owned()]
    );
}
