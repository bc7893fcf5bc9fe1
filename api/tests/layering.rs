//! Issue 15, item 4: the api crate's modules import one another in one
//! direction, bottom to top in [`LAYERS`], except for the upward imports
//! listed in [`KNOWN_UPWARD`] (the debts ARCHITECTURE.md names; the list may
//! only shrink). Reads `src/` like the agent's layering test: every
//! `crate::<module>` path outside test code and comments is an edge between
//! top-level modules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level modules, lowest first: a module may import those before it.
const LAYERS: &[&str] = &[
    "faults",
    "audit",
    "tls",
    "login_limit",
    "db",
    "error",
    "workers",
    "names",
    "keys",
    "paging",
    "unplaced",
    "config",
    "sealing",
    "auth",
    "access_keys",
    "image_store",
    "state",
    "wakeups",
    "metrics",
    "quotas",
    "lifecycle",
    "scheduler",
    "volumes",
    "instances",
    "networks",
    "snapshots",
    "image_uploads",
    "reconcile",
    "watchdog",
    "billing",
    "stats",
    "bootstrap",
    "ec2",
    "guards",
    "routes",
];

/// Imports that go up [`LAYERS`] today (and so close cycles): fix one, then
/// delete it here. Nothing may be added.
const KNOWN_UPWARD: &[(&str, &str)] = &[
    ("auth", "state"),
    ("billing", "bootstrap"),
    ("config", "networks"),
    ("instances", "networks"),
    ("lifecycle", "volumes"),
    ("reconcile", "routes"),
    ("sealing", "access_keys"),
    ("sealing", "auth"),
    ("snapshots", "image_uploads"),
    ("snapshots", "reconcile"),
    ("state", "bootstrap"),
    ("state", "guards"),
    ("state", "metrics"),
    ("volumes", "instances"),
    ("volumes", "reconcile"),
    ("volumes", "snapshots"),
];

/// Files that only tests compile.
fn test_only(file: &str) -> bool {
    file.ends_with("_tests.rs")
}

/// `text` without its `#[cfg(test)]` items (a `mod … { … }` block or a `mod …;`).
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // Skip further attributes, then the item: up to its `;` or its balanced braces.
        let mut depth = 0i32;
        let mut opened = false;
        for item in lines.by_ref() {
            depth += item.matches('{').count() as i32 - item.matches('}').count() as i32;
            opened |= item.contains('{');
            let trimmed = item.trim();
            if trimmed.starts_with("#[") && !opened {
                continue;
            }
            if (opened && depth <= 0) || (!opened && trimmed.ends_with(';')) {
                break;
            }
        }
    }
    out
}

/// `text` without its comment lines (doc comments name modules they do not import).
fn without_comments(text: &str) -> String {
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The top-level modules that `code` names through `crate::` (or, in a
/// top-level file, `super::`), including those of `use crate::{a, b::c}`.
fn named_modules(code: &str, top_level: bool, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let prefixes: &[&str] = if top_level { &["crate::", "super::"] } else { &["crate::"] };
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `kumo_crate::`
            }
            let rest = &code[at + prefix.len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // A group: its first-level names (`a`, `b` of `{a, b::{c, d}}`).
                Some(group) => {
                    let (mut depth, mut end) = (0, group.len());
                    for (i, c) in group.char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' if depth == 0 => {
                                end = i;
                                break;
                            }
                            '}' => depth -= 1,
                            _ => {}
                        }
                    }
                    let mut names = Vec::new();
                    let mut depth = 0;
                    let mut start = 0;
                    for (i, c) in group[..end].char_indices() {
                        match c {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                names.push(&group[start..i]);
                                start = i + 1;
                            }
                            _ => {}
                        }
                    }
                    names.push(&group[start..end]);
                    names
                }
                None => vec![rest],
            };
            for name in names {
                let ident: String = name.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if modules.contains(&ident) {
                    found.insert(ident);
                }
            }
        }
    }
    found
}

/// The import graph of the top-level modules under `src`.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let module_of = |path: &Path| -> Option<String> {
        let rel = path.strip_prefix(src).expect("under src");
        let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
        let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
        (!matches!(name.as_str(), "lib" | "main") && !test_only(&first)).then_some(name)
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut graph: Graph = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in &files {
        let Some(module) = module_of(file) else { continue };
        let top_level = file.parent() == Some(src);
        let code = without_comments(&without_tests(&std::fs::read_to_string(file).expect("read a source file")));
        let edges = graph.get_mut(&module).expect("known module");
        edges.extend(named_modules(&code, top_level, &modules).into_iter().filter(|m| *m != module));
    }
    graph
}

/// A cycle of `graph`, as the modules along it (the first repeated at the end).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(node: &str, graph: &Graph, marks: &mut BTreeMap<String, Mark>, path: &mut Vec<String>) -> bool {
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in &graph[node] {
            let mark = marks[next];
            match mark {
                Mark::Open => {
                    let start = path.iter().position(|n| n == next).expect("on the path");
                    path.drain(..start);
                    path.push(next.clone());
                    return true;
                }
                Mark::New if visit(next, graph, marks, path) => return true,
                _ => {}
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        false
    }
    let mut marks: BTreeMap<String, Mark> = graph.keys().map(|k| (k.clone(), Mark::New)).collect();
    for node in graph.keys() {
        let mut path = Vec::new();
        if marks[node] == Mark::New && visit(node, graph, &mut marks, &mut path) {
            return Some(path);
        }
    }
    None
}

#[test]
fn the_apis_modules_import_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    // The reader sees the imports it must (so an empty graph cannot pass).
    assert!(graph["routes"].contains("instances") && graph["ec2"].contains("keys"), "{graph:#?}");
    assert!(graph["networks"].contains("quotas"), "submodules count for their module: {graph:#?}");
    let placed: BTreeSet<&str> = LAYERS.iter().copied().collect();
    let unplaced: Vec<&String> = graph.keys().filter(|m| !placed.contains(m.as_str())).collect();
    assert!(unplaced.is_empty(), "place these modules in LAYERS: {unplaced:?}");
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m).expect("placed");
    let upward: BTreeSet<(&str, &str)> = graph
        .iter()
        .flat_map(|(from, to)| to.iter().map(move |t| (from.as_str(), t.as_str())))
        .filter(|(from, to)| rank(to) > rank(from))
        .collect();
    let known: BTreeSet<(&str, &str)> = KNOWN_UPWARD.iter().copied().collect();
    let new: Vec<_> = upward.difference(&known).collect();
    assert!(new.is_empty(), "imports up the layers (import downwards, or move the code): {new:?}");
    let fixed: Vec<_> = known.difference(&upward).collect();
    assert!(fixed.is_empty(), "no longer imported: delete from KNOWN_UPWARD: {fixed:?}");
    // With the known debts left out, no cycle remains.
    let mut down = graph.clone();
    for (from, to) in KNOWN_UPWARD {
        down.get_mut(*from).expect("module").remove(*to);
    }
    if let Some(cycle) = find_cycle(&down) {
        panic!("an import cycle between the api's modules: {}", cycle.join(" -> "));
    }
}

/// The layering's fixed points: the EC2 adapter imports no HTTP handler, and
/// the bottom modules (errors, names, keys) reach no resource module.
#[test]
fn the_ec2_adapter_and_the_bottom_modules_import_no_handlers() {
    let graph = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(!graph["ec2"].contains("routes"), "{:?}", graph["ec2"]);
    for bottom in ["error", "names", "keys", "paging"] {
        let reach: Vec<&String> = graph[bottom].iter().filter(|m| !["db", "error"].contains(&m.as_str())).collect();
        assert!(reach.is_empty(), "{bottom} imports {reach:?}");
    }
}

#[test]
fn the_cycle_check_finds_cycles_and_reads_grouped_imports() {
    let modules: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
    let code = "use crate::{a::X, b::{Y, Z}};\nfn f() { crate::c::g(); kumo_crate::a(); }\n";
    assert_eq!(named_modules(code, false, &modules), modules);
    let tested = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n    fn t() {}\n}\nuse crate::c;\n";
    assert_eq!(named_modules(&without_tests(tested), false, &modules), ["a", "c"].map(String::from).into());
    let commented = "/// See `crate::a`.\n// crate::b too\nuse crate::c;\n";
    assert_eq!(named_modules(&without_comments(commented), false, &modules), ["c"].map(String::from).into());
    let mut graph: Graph = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    graph.get_mut("a").expect("a").insert("b".into());
    graph.get_mut("b").expect("b").insert("c".into());
    assert_eq!(find_cycle(&graph), None);
    graph.get_mut("c").expect("c").insert("a".into());
    assert_eq!(find_cycle(&graph), Some(["a", "b", "c", "a"].map(String::from).to_vec()));
}
