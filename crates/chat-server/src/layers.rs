//! The layers of this crate, bottom to top, and the test that keeps them:
//! a module may use the modules of its own layer and of the layers below,
//! never those above, and no two top-level modules may use each other in a
//! cycle. `docs/ARCHITECTURE.md` draws the same table.

/// Each layer and its top-level modules, from the bottom.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("domain", &["domain"]),
    ("configuration", &["config"]),
    (
        "parts behind seams",
        &[
            "metrics",
            "telemetry",
            "store",
            "backplane",
            "auth",
            "limiter",
            "tls",
            "http_client",
        ],
    ),
    ("hub", &["hub"]),
    ("session core", &["session", "api"]),
    (
        "transports and endpoints",
        &["endpoint", "webhook", "fuzzing"],
    ),
    ("wiring", &["server"]),
];

/// The layer `module` belongs to (its index in [`LAYERS`]).
pub fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// The crate's source folder.
    fn src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    /// Every `.rs` file below `dir`.
    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level module a file belongs to (`src/hub/rooms.rs` → `hub`),
    /// or `None` for the crate root, the binaries (`src/bin`, above every
    /// layer) and this file.
    fn module_of(path: &Path) -> Option<String> {
        let relative = path.strip_prefix(src()).ok()?;
        let first = relative.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        (!["lib", "bin", "layers"].contains(&name)).then(|| name.to_string())
    }

    /// The top-level modules `source` names through `crate::`, including
    /// inside `use crate::{a, b::c}` groups. Comments count too: a doc link
    /// to a higher layer is a dependency of the reader's attention.
    fn uses(source: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut rest = source;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // Top-level names of a group: each item up to `::`, `,` or `}`.
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
        found
    }

    /// Top-level module → the other top-level modules it uses.
    fn graph() -> BTreeMap<String, BTreeSet<String>> {
        let mut paths = Vec::new();
        files(&src(), &mut paths);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for path in paths {
            let Some(module) = module_of(&path) else {
                continue;
            };
            let source = std::fs::read_to_string(&path).expect("read source");
            let edges = graph.entry(module.clone()).or_default();
            for used in uses(&source) {
                if used != module {
                    edges.insert(used);
                }
            }
        }
        graph
    }

    #[test]
    fn every_module_has_a_layer() {
        for module in graph().keys() {
            assert!(
                layer_of(module).is_some(),
                "src/{module} is in no layer: add it to LAYERS in src/layers.rs and to docs/ARCHITECTURE.md"
            );
        }
    }

    #[test]
    fn modules_use_only_their_layer_and_those_below() {
        let mut violations = Vec::new();
        for (module, used) in graph() {
            let Some(own) = layer_of(&module) else {
                continue;
            };
            for other in used {
                if let Some(theirs) = layer_of(&other)
                    && theirs > own
                {
                    violations.push(format!(
                        "{module} ({}) uses {other} ({})",
                        LAYERS[own].0, LAYERS[theirs].0
                    ));
                }
            }
        }
        assert!(violations.is_empty(), "upward uses: {violations:#?}");
    }

    /// A cycle in `graph`, as the path that closes it, if there is one.
    fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        // Depth-first; a module met again while on the stack closes a cycle.
        fn visit(
            module: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = stack.iter().position(|m| m == module) {
                let mut cycle = stack[at..].to_vec();
                cycle.push(module.to_string());
                return Some(cycle);
            }
            if done.contains(module) {
                return None;
            }
            stack.push(module.to_string());
            for next in graph.get(module).into_iter().flatten() {
                if let Some(cycle) = visit(next, graph, stack, done) {
                    return Some(cycle);
                }
            }
            stack.pop();
            done.insert(module.to_string());
            None
        }
        let mut done = BTreeSet::new();
        graph
            .keys()
            .find_map(|module| visit(module, graph, &mut Vec::new(), &mut done))
    }

    #[test]
    fn top_level_modules_have_no_cycle() {
        if let Some(cycle) = find_cycle(&graph()) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }

    #[test]
    fn the_checker_sees_grouped_and_nested_uses() {
        let found = uses("use crate::{hub::Hub, store};\nfn f() { crate::endpoint::x(); }");
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            ["endpoint", "hub", "store"]
        );
        assert_eq!(layer_of("server"), Some(LAYERS.len() - 1));
        assert_eq!(layer_of("nothing"), None);
    }

    #[test]
    fn the_search_finds_a_cycle() {
        let edges = |pairs: &[(&str, &str)]| {
            let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (from, to) in pairs {
                graph
                    .entry(from.to_string())
                    .or_default()
                    .insert(to.to_string());
            }
            graph
        };
        let cyclic = edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]);
        assert_eq!(find_cycle(&cyclic).unwrap(), ["a", "b", "c", "a"]);
        assert_eq!(
            find_cycle(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])),
            None
        );
    }

    #[test]
    #[ignore = "prints the module graph: cargo test -p chat-server --lib layers -- --ignored --nocapture"]
    fn print_the_graph() {
        for (module, used) in graph() {
            println!("{module} -> {used:?}");
        }
    }
}
