//! The replica's layers import only the ones below them (see `src/lib.rs`):
//! `generate`/`media` → `pipeline` → `pool` → `session` → `server`/`worker_process`, with
//! settings, stores, status and metrics at the bottom. A lower module naming a higher one
//! through `crate::` brings back the import cycles that made the tree hard to change.

use std::path::{Path, PathBuf};

/// Top-level modules from the bottom up; a module may import its own rank and below.
const LAYERS: &[&[&str]] = &[
    &[
        "config",
        "device",
        "store",
        "status",
        "observability",
        "prompt",
    ],
    &["generate", "media", "broadcast"],
    &["pipeline"],
    &["pool"],
    &["session"],
    &["server", "worker_process", "device_check"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The top-level module a source file belongs to (`src/pool/queue.rs` → `pool`).
fn owner(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Every `crate::<module>` a source text names, including inside `use crate::{a, b}`.
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        // `framecast_crate::` or `my_crate::` are not the crate root.
        if i > 0 {
            let before = text.as_bytes()[i - 1];
            if before.is_ascii_alphanumeric() || before == b'_' {
                continue;
            }
        }
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                if !name.is_empty() {
                    found.push(name.to_string());
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in rust_files(&src) {
        let module = owner(&src, &file);
        let Some(own_rank) = rank(&module) else {
            // `lib.rs`, `main.rs`: the crate's roots may name everything.
            continue;
        };
        checked += 1;
        let text = std::fs::read_to_string(&file).expect("readable source");
        for target in crate_paths(&text) {
            if let Some(target_rank) = rank(&target)
                && target_rank > own_rank
            {
                violations.push(format!(
                    "{} ({module}) imports crate::{target}",
                    file.display()
                ));
            }
        }
    }
    assert!(checked > 40, "only {checked} source files were checked");
    assert!(
        violations.is_empty(),
        "lower layers import higher ones:\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let unranked: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .filter(|m| rank(m).is_none())
        .collect();
    assert!(unranked.is_empty(), "modules without a layer: {unranked:?}");
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths() {
    let text =
        "use crate::pool::WorkerPool;\nuse crate::{session, server::AppState};\nuse my_crate::x;";
    assert_eq!(crate_paths(text), ["pool", "session", "server"]);
}
