//! The router's module layering, read from its source: the health state machine and the
//! selection policies stay below the registry, and no module uses one above it (the layers
//! are listed in `src/lib.rs`).

use std::fs;
use std::path::{Path, PathBuf};

/// Lowest first; a module may use modules of lower layers and its own family only.
const LAYERS: &[&[&str]] = &[
    &["config"],
    &[
        "capacity",
        "client_limits",
        "frame_boundaries",
        "observability",
        "resolve",
    ],
    &["refusal", "health::state", "selection"],
    &["registry", "upstream_loss"],
    &[
        "health::checker",
        "discovery",
        "admin",
        "shutdown",
        "broadcast_owner",
    ],
    &["proxy"],
    &["server"],
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code of `path` with `//` comments (doc comments included) removed, so that doc links
/// to higher modules do not count as uses.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    code_of(&text)
}

/// [`code`] for a string instead of a file.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| line.split_once("//").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
            continue;
        }
        out.push(match c {
            ':' if chars.get(i + 1) == Some(&':') => {
                i += 1;
                Token::PathSep
            }
            '*' => Token::Ident("*".into()),
            '{' => Token::Open,
            '}' => Token::Close,
            ',' => Token::Comma,
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            _ => Token::Other,
        });
        i += 1;
    }
    out
}

/// Parses the path starting at `tokens[i]` (an identifier) under `prefix`, expanding
/// `{a, b::c}` groups; returns every full path and the index after it.
fn path_tree(tokens: &[Token], mut i: usize, prefix: &str, out: &mut Vec<String>) -> usize {
    let Some(Token::Ident(name)) = tokens.get(i) else {
        return i;
    };
    let path = if prefix.is_empty() {
        name.clone()
    } else {
        format!("{prefix}::{name}")
    };
    i += 1;
    if tokens.get(i) != Some(&Token::PathSep) {
        out.push(path);
        return i;
    }
    i += 1;
    if tokens.get(i) != Some(&Token::Open) {
        return path_tree(tokens, i, &path, out);
    }
    i += 1;
    while i < tokens.len() && tokens[i] != Token::Close {
        if tokens[i] == Token::Comma {
            i += 1;
            continue;
        }
        let next = path_tree(tokens, i, &path, out);
        i = if next == i { i + 1 } else { next };
    }
    i + 1
}

/// Every path (`a::b::c`, groups expanded) that `code` names.
fn paths(code: &str) -> Vec<String> {
    let tokens = tokens(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts_a_path =
            matches!(tokens[i], Token::Ident(_)) && tokens.get(i + 1) == Some(&Token::PathSep);
        let after_a_path_sep = i > 0 && tokens[i - 1] == Token::PathSep;
        if starts_a_path && !after_a_path_sep {
            i = path_tree(&tokens, i, "", &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Every `.rs` file under `dir`, with its module path (`health/state.rs` is `health::state`,
/// `selection/mod.rs` is `selection`); `lib.rs` and `main.rs` are left out.
fn modules(dir: &Path, parent: &str, out: &mut Vec<(String, PathBuf)>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let child = if parent.is_empty() {
            stem.clone()
        } else {
            format!("{parent}::{stem}")
        };
        if path.is_dir() {
            modules(&path, &child, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            match stem.as_str() {
                "lib" | "main" if parent.is_empty() => {}
                "mod" => out.push((parent.to_string(), path)),
                _ => out.push((child, path)),
            }
        }
    }
}

/// The layer entry `module` belongs to (the longest one it is or lies under) and its layer.
fn layer_of(module: &str) -> Option<(&'static str, usize)> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(layer, entries)| entries.iter().map(move |e| (*e, layer)))
        .filter(|(e, _)| module == *e || module.starts_with(&format!("{e}::")))
        .max_by_key(|(e, _)| e.len())
}

/// Fails if any path in `file` has a segment in `forbidden`.
fn assert_never_names(file: &str, forbidden: &[&str]) {
    let path = src().join(file);
    assert!(
        path.exists(),
        "{} is gone: update this test",
        path.display()
    );
    let bad: Vec<String> = paths(&code(&path))
        .into_iter()
        .filter(|p| p.split("::").any(|segment| forbidden.contains(&segment)))
        .collect();
    assert!(bad.is_empty(), "{file} must not use {bad:?}");
}

#[test]
fn the_health_state_machine_uses_neither_the_registry_nor_anything_above_it() {
    assert_never_names(
        "health/state.rs",
        &[
            "registry",
            "checker",
            "proxy",
            "admin",
            "server",
            "shutdown",
            "selection",
            "pingora",
            "tokio",
        ],
    );
}

#[test]
fn selection_policies_see_candidates_not_the_registry() {
    for file in [
        "selection/mod.rs",
        "selection/primary_first.rs",
        "selection/least_sessions.rs",
        "selection/round_robin.rs",
    ] {
        assert_never_names(
            file,
            &[
                "registry", "health", "proxy", "admin", "server", "shutdown", "pingora", "tokio",
            ],
        );
    }
}

#[test]
fn no_module_uses_one_in_its_own_or_a_higher_layer() {
    let mut all = Vec::new();
    modules(&src(), "", &mut all);
    assert!(all.iter().any(|(m, _)| m == "health::state"), "{all:?}");
    let mut violations = Vec::new();
    for (module, path) in &all {
        let own = layer_of(module);
        for used in paths(&code(path))
            .iter()
            .filter_map(|p| p.strip_prefix("crate::"))
        {
            let Some((used_entry, used_layer)) = layer_of(used) else {
                violations.push(format!("{module} uses crate::{used}, which is in no layer"));
                continue;
            };
            match own {
                Some((entry, _)) if entry == used_entry => {}
                Some((_, layer)) if used_layer < layer => {}
                Some(_) => violations.push(format!(
                    "{module} uses crate::{used}, which is not in a lower layer"
                )),
                None => violations.push(format!("{module} is in no layer but uses crate::{used}")),
            }
        }
    }
    assert!(
        violations.is_empty(),
        "add new modules to LAYERS here and in src/lib.rs:\n{}",
        violations.join("\n")
    );
}

#[test]
fn paths_expand_groups_and_skip_comments() {
    let code = code_of("use crate::{config::A, registry::{self, B}};\n// crate::proxy\nx::y(z)");
    assert_eq!(
        paths(&code),
        [
            "crate::config::A",
            "crate::registry::self",
            "crate::registry::B",
            "x::y"
        ]
    );
}
