//! The crate's layout is its architecture: this test reads `server/src` and checks that
//! imports run one way. Between folders, a module only imports layers below its own
//! (the order in `lib.rs`'s map); inside the crate, no module imports one that imports it
//! back, directly or through others. A new file that breaks either fails here, naming
//! the import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level modules, from the accept loop down; a module may import only those after
/// it. The leaves share the last rank: they import nothing of the crate.
const LAYERS: [&[&str]; 8] = [
    &["server"],
    &["http"],
    &["config"],
    &["access"],
    &["stream"],
    &["log"],
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

/// Every path a `use` tree or an expression path names, starting right after `crate::`
/// or `super::`: `a::b::{c, d::{e, f}}` gives `a::b::c`, `a::b::d::e`, `a::b::d::f`.
fn use_paths(text: &str) -> Vec<Vec<String>> {
    fn tree(text: &str, at: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let bytes = text.as_bytes();
        let mut path = prefix.to_vec();
        loop {
            while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
                *at += 1;
            }
            if bytes.get(*at) == Some(&b'{') {
                *at += 1;
                loop {
                    tree(text, at, &path, out);
                    // Past what ends the item (` as Name`, spaces) to its `,` or `}`.
                    while *at < bytes.len() && !matches!(bytes[*at], b',' | b'}') {
                        *at += 1;
                    }
                    match bytes.get(*at) {
                        Some(b',') => *at += 1,
                        Some(b'}') => {
                            *at += 1;
                            return;
                        }
                        _ => return,
                    }
                    while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
                        *at += 1;
                    }
                    if bytes.get(*at) == Some(&b'}') {
                        *at += 1;
                        return;
                    }
                }
            }
            let start = *at;
            while *at < bytes.len() && (bytes[*at].is_ascii_alphanumeric() || bytes[*at] == b'_') {
                *at += 1;
            }
            let segment = &text[start..*at];
            if segment.is_empty() {
                break;
            }
            if segment != "self" {
                path.push(segment.to_owned());
            }
            if text[*at..].starts_with("::") {
                *at += 2;
                continue;
            }
            break;
        }
        out.push(path);
    }
    let mut out = Vec::new();
    tree(text, &mut 0, &[], &mut out);
    out
}

/// The modules a file imports: every `crate::…` and `super::…` path (`super::super::`
/// too), nested braces expanded, and names the crate root re-exports (`crate::Config`)
/// taken to the module they come from.
fn imports(
    known: &BTreeMap<String, String>,
    reexports: &BTreeMap<String, String>,
    module: &str,
    text: &str,
) -> BTreeSet<String> {
    let own: Vec<&str> = if module.is_empty() { Vec::new() } else { module.split("::").collect() };
    let mut out = BTreeSet::new();
    for prefix in ["crate::", "super::"] {
        for (at, _) in text.match_indices(prefix) {
            if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let mut rest = &text[at + prefix.len()..];
            let mut base: Vec<String> = Vec::new();
            if prefix == "super::" {
                // `super` of `a::b` (file a/b.rs, or folder a/b/mod.rs) is `a`.
                let mut depth = 1;
                while let Some(more) = rest.strip_prefix("super::") {
                    depth += 1;
                    rest = more;
                }
                base = own[..own.len().saturating_sub(depth)].iter().map(|s| (*s).to_owned()).collect();
            }
            for path in use_paths(rest) {
                let mut full: Vec<String> = base.iter().cloned().chain(path).collect();
                if let Some(module) = full.first().and_then(|first| reexports.get(first)) {
                    full[0] = module.clone();
                }
                let full: Vec<&str> = full.iter().map(String::as_str).collect();
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

/// Names `lib.rs` re-exports at the root (`pub use config::Config;`), to their module.
fn root_reexports(lib: &str) -> BTreeMap<String, String> {
    lib.lines()
        .filter_map(|line| line.trim().strip_prefix("pub use ")?.strip_suffix(';'))
        .filter_map(|path| {
            let parts: Vec<&str> = path.split("::").collect();
            Some(((*parts.last()?).to_owned(), (*parts.first()?).to_owned()))
        })
        .collect()
}

#[test]
fn imports_run_one_way_from_the_accept_loop_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    assert!(known.contains_key("http::conn") && known.contains_key("store::tables"), "the layout moved: {known:?}");
    let reexports = root_reexports(&known[""]);
    assert!(reexports.contains_key("Config"), "lib.rs re-exports Config: {reexports:?}");
    let graph: BTreeMap<&str, BTreeSet<String>> =
        known.iter().map(|(module, text)| (module.as_str(), imports(&known, &reexports, module, text))).collect();
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

#[test]
fn use_trees_expand_nested_braces_and_stop_at_the_path() {
    let paths = |text: &str| -> Vec<String> { use_paths(text).into_iter().map(|p| p.join("::")).collect() };
    assert_eq!(paths("a::b::{c, d::{e, f}, self};"), ["a::b::c", "a::b::d::e", "a::b::d::f", "a::b"]);
    assert_eq!(paths("{x::Y as Z, w}"), ["x::Y", "w"]);
    assert_eq!(paths("store::fitting(&batch)"), ["store::fitting"]);
    assert_eq!(paths("{\n    stream::{hub::Hub},\n    http::request::X,\n}"), ["stream::hub::Hub", "http::request::X"]);
}
