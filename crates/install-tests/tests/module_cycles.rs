//! No import cycles between the top-level modules of `kbeast-operator` and `kbeast-query`:
//! each step's module may use the ones before it, never the other way round.
//!
//! Reads every `crate::<module>` path in a crate's `src/` tree (comments excluded), so it sees
//! `use` lines, grouped `use crate::{a, b}` and inline paths alike.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `src/a.rs` and `src/a/**` are `a`; the crate roots
/// (`lib.rs`, `main.rs`) belong to none.
fn top_level_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).expect("file under src");
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first.strip_suffix(".rs") {
        Some("lib" | "main") => None,
        Some(module) => Some(module.to_string()),
        None => Some(first.to_string()),
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The items of a `{...}` group that starts `text` (after the `{`), at the group's top level.
fn group_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && is_ident_char(c) && depth == 0 => {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| is_ident_char(*c))
                    .collect();
                for _ in 1..name.chars().count() {
                    chars.next();
                }
                if name != "self" {
                    items.push(name);
                }
                item_start = false;
            }
            _ => {}
        }
    }
    items
}

/// Top-level modules named after `crate::` in some code (comments already removed).
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at].chars().next_back().is_some_and(is_ident_char);
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if preceded_by_ident {
            continue; // e.g. `kbeast_crate::`
        }
        if let Some(group) = after.strip_prefix('{') {
            found.extend(group_items(group));
        } else {
            let name: String = after.chars().take_while(|c| is_ident_char(*c)).collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// Which top-level module uses which, across the crate's `src/` tree.
fn module_graph(crate_dir: &str) -> Graph {
    let src = crate_src(crate_dir);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| top_level_module(&src, f))
        .collect();
    let mut graph: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for file in &files {
        let Some(from) = top_level_module(&src, file) else {
            continue;
        };
        let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let code: Vec<&str> = text
            .lines()
            .map(|line| line.split("//").next().unwrap_or(""))
            .collect();
        for to in crate_paths(&code.join("\n")) {
            if to != from && modules.contains(&to) {
                graph.get_mut(&from).expect("known module").insert(to);
            }
        }
    }
    graph
}

/// One cycle of the graph, as the modules along it (the first repeated at the end).
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::OnPath);
        path.push(node.to_string());
        for next in &graph[node] {
            match marks[next.as_str()] {
                Mark::OnPath => {
                    let start = path.iter().position(|m| m == next).expect("on the path");
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, graph, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks: BTreeMap<String, Mark> = graph.keys().map(|k| (k.clone(), Mark::New)).collect();
    for node in graph.keys() {
        if marks[node.as_str()] == Mark::New
            && let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

fn assert_acyclic(crate_dir: &str) {
    let graph = module_graph(crate_dir);
    assert!(
        graph.len() > 3,
        "{crate_dir}: found only {:?}; is the source tree where expected?",
        graph.keys()
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between top-level modules of crates/{crate_dir}: {}",
            cycle.join(" → ")
        );
    }
}

#[test]
fn operator_modules_have_no_import_cycle() {
    assert_acyclic("operator");
}

#[test]
fn query_modules_have_no_import_cycle() {
    assert_acyclic("query");
}

#[test]
fn the_checker_sees_grouped_and_inline_paths_and_names_the_cycle() {
    assert_eq!(
        crate_paths(
            "use crate::{apply::Change, build::{a, b},\n  validate};  let x = crate::status::of(y);"
        ),
        ["apply", "build", "validate", "status"]
    );
    assert!(crate_paths("use kbeast_crate::x; use super::y;").is_empty());
    let graph: Graph = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph).map(|c| c.join(" → ")),
        Some("a → b → c → a".to_string())
    );
}
