//! Issue 15, item 4: the agent's modules import one another in one direction
//! only. Reads `src/`, takes every `crate::<module>` path outside test code
//! (`#[cfg(test)]` modules and the test-only files) as an edge between
//! top-level modules, and fails on any cycle, naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Files that only tests compile.
fn test_only(file: &str) -> bool {
    file == "testing.rs" || file.ends_with("_tests.rs")
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
        let code = without_tests(&std::fs::read_to_string(file).expect("read a source file"));
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
fn the_agents_modules_import_one_another_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph(&src);
    // The reader sees the imports it must (so an empty graph cannot pass).
    assert!(graph["worker"].contains("ledger") && graph["converge"].contains("domain_xml"), "{graph:#?}");
    assert!(graph["hypervisor"].contains("domain_xml"), "submodules count for their module: {graph:#?}");
    assert!(!graph["ledger"].contains("testing"), "test code is left out: {graph:#?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("an import cycle between the agent's modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_check_finds_cycles_and_reads_grouped_imports() {
    let modules: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
    let code = "use crate::{a::X, b::{Y, Z}};\nfn f() { crate::c::g(); kumo_crate::a(); }\n";
    assert_eq!(named_modules(code, false, &modules), modules);
    let tested = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n    fn t() {}\n}\nuse crate::c;\n";
    assert_eq!(named_modules(&without_tests(tested), false, &modules), ["a", "c"].map(String::from).into());
    let mut graph: Graph = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    graph.get_mut("a").expect("a").insert("b".into());
    graph.get_mut("b").expect("b").insert("c".into());
    assert_eq!(find_cycle(&graph), None);
    graph.get_mut("c").expect("c").insert("a".into());
    assert_eq!(find_cycle(&graph), Some(["a", "b", "c", "a"].map(String::from).to_vec()));
}
