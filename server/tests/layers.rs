//! The crate's layout is its architecture: this test reads `server/src` and checks that
//! imports run one way. Between folders, a module only imports layers below its own
//! (the order in `lib.rs`'s map); inside the crate, no module imports one that imports it
//! back, directly or through others. A new file that breaks either fails here, naming
//! the import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules, from the accept loop down; a module may import only those after
/// it. The leaves share the last rank: they import nothing of the crate.
const LAYERS: [&[&str]; 7] = [
    &["server"],
    &["http"],
    &["config"],
    &["access"],
    &["stream"],
    &["store"],
    &["error", "limits", "listener", "metrics", "rng"],
];

fn rank(top: &str) -> usize {
    LAYERS.iter().position(|layer| layer.contains(&top)).unwrap_or_else(|| panic!("{top}: not in LAYERS"))
}

/// Module paths (`http::conn`, `store`) of every source file, with the file's text.
fn modules(src: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "bin" {
                    dirs.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may reach anywhere.
            let text = text.split("#[cfg(test)]\nmod tests").next().unwrap().to_owned();
            out.insert(parts.join("::"), text);
        }
    }
    out
}

/// The longest known module that `path` (`a::b::Item`) names.
fn resolve<'a>(known: &'a BTreeMap<String, String>, path: &[&str]) -> Option<&'a str> {
    (1..=path.len()).rev().find_map(|n| known.get_key_value(&path[..n].join("::")).map(|(k, _)| k.as_str()))
}

/// The modules a file imports: every `crate::…` and `super::…` path, braces expanded.
fn imports(known: &BTreeMap<String, String>, module: &str, text: &str) -> BTreeSet<String> {
    let is_folder = known.keys().any(|k| k.starts_with(&format!("{module}::")));
    let parent: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else if is_folder {
        module.split("::").collect()
    } else {
        let mut p: Vec<&str> = module.split("::").collect();
        p.pop();
        p
    };
    let mut out = BTreeSet::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent)] {
        for (at, _) in text.match_indices(prefix) {
            if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[at + prefix.len()..];
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            let head: Vec<&str> = rest[..end].split("::").filter(|p| !p.is_empty()).collect();
            let mut paths = vec![head.clone()];
            if rest[end..].starts_with('{') {
                let inner = &rest[end + 1..rest[end..].find('}').map_or(rest.len(), |i| end + i)];
                for item in inner.split(',') {
                    let first = item.trim().split("::").next().unwrap_or("");
                    if !first.is_empty() && first != "self" {
                        paths.push(head.iter().copied().chain([first]).collect());
                    }
                }
            }
            for path in paths {
                let full: Vec<&str> = base.iter().copied().chain(path).collect();
                if let Some(target) = resolve(known, &full) {
                    if target != module && !target.is_empty() {
                        out.insert(target.to_owned());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn imports_run_one_way_from_the_accept_loop_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    assert!(known.contains_key("http::conn") && known.contains_key("store::tables"), "the layout moved: {known:?}");
    let graph: BTreeMap<&str, BTreeSet<String>> =
        known.iter().map(|(module, text)| (module.as_str(), imports(&known, module, text))).collect();
    let top = |m: &str| m.split("::").next().unwrap().to_owned();
    let mut wrong = Vec::new();
    for (module, targets) in &graph {
        for target in targets {
            let (from, to) = (top(module), top(target));
            if !module.is_empty() && from != to && rank(&from) >= rank(&to) {
                wrong.push(format!("{module} imports {target}: {from} is not above {to}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers:\n{}", wrong.join("\n"));

    // No circle between modules, even inside one folder.
    fn visit<'a>(
        graph: &'a BTreeMap<&str, BTreeSet<String>>,
        node: &'a str,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|n| *n == node) {
            panic!("import circle: {}", [&path[at..], &[node]].concat().join(" -> "));
        }
        if !done.insert(node) {
            return;
        }
        path.push(node);
        for next in &graph[node] {
            visit(graph, next, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in graph.keys().filter(|m| !m.is_empty()) {
        visit(&graph, module, &mut Vec::new(), &mut done);
    }
}
