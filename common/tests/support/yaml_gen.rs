//! Proptest strategies for YAML configuration text: structured documents built from a
//! settings type's own field names (so they reach its type and validation checks),
//! line-level mutations of a shipped configuration file, and free text.
//!
//! Shared by the configuration properties of `framecast-common`, `framecast-replica` and
//! `framecast-router` (included with `#[path]`; not a test target of its own).

#![allow(dead_code)]

use proptest::prelude::*;

/// `default` cases per property, or `PROPTEST_CASES` when set (for a longer run).
pub fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(cases)
}

/// Scalars that stress YAML typing and the settings' types: integer edges, floats YAML
/// spells specially, quoting, flow collections, tags, anchors and the settings' own words.
const SCALARS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "16",
    "8000",
    "65535",
    "65536",
    "70000",
    "2147483648",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "340282366920938463463374607431768211456",
    "0.5",
    "1.5",
    "-0.0",
    "1e20",
    "1e400",
    "-1e400",
    "1e-320",
    ".nan",
    ".inf",
    "-.inf",
    "0x10",
    "0o17",
    "1_000",
    "true",
    "false",
    "yes",
    "null",
    "~",
    "\"\"",
    "\" \"",
    "''",
    "\"\\u0000\"",
    "\"\\xff\"",
    "abc",
    "auto",
    "cpu",
    "cuda",
    "cuda:1",
    "cuda:-1",
    "cuda:99999999999",
    "mock",
    "wan",
    "in_process",
    "subprocess",
    "x264",
    "nvh264",
    "high",
    "constrained_baseline",
    "opus",
    "aac",
    "medium",
    "ultrafast",
    "primary_first",
    "round_robin",
    "/readyz",
    "readyz",
    "/tmp/x",
    "http://127.0.0.1:8000",
    "https://replica:8443",
    "http://a:8000/path?q",
    "ftp://a",
    "http://[::1]:80",
    "http://",
    "10.0.0.0/8",
    "::1",
    "300.1.1.1",
    "[10.0.0.1, \"fd00::/8\"]",
    "[]",
    "{}",
    "[1, 2]",
    "[cpu, \"cuda:0\"]",
    "{a: 1}",
    "{url: \"http://b:1\"}",
    "[{url: \"http://c:1\", primary: true}]",
    "!!binary aGVsbG8=",
    "!!str 5",
    "!!int x",
    "!!float 1",
    "!custom 3",
    "&anchor 7",
    "*anchor",
    "*missing",
    "|\n  block text",
    ">-\n  folded",
    "'unterminated",
    "\"unterminated",
    "[unclosed",
    "{unclosed: 1",
    "a: b: c",
    "- x",
    "? y",
    "%YAML 1.2",
    "---",
    "...",
    "@reserved",
    "`tick",
];

/// Keys beyond a type's own fields: case variants, merge keys, odd spellings.
const ODD_KEYS: &[&str] = &[
    "<<",
    "? [a, b]",
    "1",
    "\"quoted\"",
    "'single'",
    "null",
    "~",
    "true",
    "a.b",
    "a__b",
    "PORT",
    "Server",
    "type",
    "\"\"",
    "é",
    "-",
    "*anchor",
    "&anchor key",
];

/// A YAML node before it is written out.
#[derive(Debug, Clone)]
pub enum Node {
    Scalar(String),
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
}

/// Block-style text of `node`, `indent` spaces in.
pub fn emit(node: &Node) -> String {
    let mut out = String::new();
    write(node, 0, &mut out);
    out
}

fn write(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match node {
        Node::Scalar(s) => {
            out.push_str(&pad);
            out.push_str(s);
            out.push('\n');
        }
        Node::Map(entries) if entries.is_empty() => {
            out.push_str(&pad);
            out.push_str("{}\n");
        }
        Node::Seq(items) if items.is_empty() => {
            out.push_str(&pad);
            out.push_str("[]\n");
        }
        Node::Map(entries) => {
            for (key, value) in entries {
                out.push_str(&pad);
                out.push_str(key);
                out.push(':');
                match value {
                    Node::Scalar(s) => {
                        out.push(' ');
                        out.push_str(s);
                        out.push('\n');
                    }
                    _ => {
                        out.push('\n');
                        write(value, indent + 2, out);
                    }
                }
            }
        }
        Node::Seq(items) => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Node::Scalar(s) => {
                        out.push(' ');
                        out.push_str(s);
                        out.push('\n');
                    }
                    _ => {
                        out.push('\n');
                        write(item, indent + 2, out);
                    }
                }
            }
        }
    }
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(SCALARS).prop_map(str::to_string),
        1 => "[ -~]{0,16}",
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
    ]
}

fn key(fields: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(fields).prop_map(str::to_string),
        1 => prop::sample::select(ODD_KEYS).prop_map(str::to_string),
        1 => "[a-z_]{1,12}",
    ]
}

/// Documents of nested mappings keyed mostly by `fields` (every field name of the settings
/// type, at any level: a name in the wrong section is an unknown field, which is tested too).
pub fn document(fields: &'static [&'static str]) -> impl Strategy<Value = String> {
    let leaf = scalar().prop_map(Node::Scalar);
    let tree = leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            3 => prop::collection::vec((key(fields), inner.clone()), 0..6).prop_map(Node::Map),
            1 => prop::collection::vec(inner, 0..4).prop_map(Node::Seq),
        ]
    });
    prop_oneof![
        8 => prop::collection::vec((key(fields), tree.clone()), 0..6).prop_map(Node::Map),
        1 => tree,
    ]
    .prop_map(|node| emit(&node))
}

/// One edit of one line of a configuration file.
#[derive(Debug, Clone)]
pub enum LineEdit {
    /// Replaces what follows the line's first `: ` (or appends `: value`).
    Value(String),
    Delete,
    Duplicate,
    Indent,
    Dedent,
    /// Inserts a character at a position (modulo the line length).
    Insert(usize, char),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    prop_oneof![
        6 => scalar().prop_map(LineEdit::Value),
        1 => Just(LineEdit::Delete),
        1 => Just(LineEdit::Duplicate),
        1 => Just(LineEdit::Indent),
        1 => Just(LineEdit::Dedent),
        1 => (any::<usize>(), prop_oneof![
            prop::sample::select(&[':', '-', '#', '"', '\'', '[', '{', '&', '*', '!', '\t', ' '][..]),
            any::<char>(),
        ])
            .prop_map(|(at, c)| LineEdit::Insert(at, c)),
    ]
}

/// Applies `edits` (line index modulo the line count, edit) to `text`.
pub fn apply_edits(text: &str, edits: &[(usize, LineEdit)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (at, edit) in edits {
        if lines.is_empty() {
            break;
        }
        let i = at % lines.len();
        match edit {
            LineEdit::Value(v) => {
                let line = &mut lines[i];
                match line.find(": ") {
                    Some(colon) => line.replace_range(colon + 2.., v),
                    None => {
                        line.push_str(": ");
                        line.push_str(v);
                    }
                }
            }
            LineEdit::Delete => {
                lines.remove(i);
            }
            LineEdit::Duplicate => {
                let line = lines[i].clone();
                lines.insert(i, line);
            }
            LineEdit::Indent => lines[i].insert_str(0, "  "),
            LineEdit::Dedent => {
                let trimmed = lines[i].strip_prefix("  ").map(str::to_string);
                if let Some(t) = trimmed {
                    lines[i] = t;
                }
            }
            LineEdit::Insert(pos, c) => {
                let line = &mut lines[i];
                let boundaries: Vec<usize> = line
                    .char_indices()
                    .map(|(b, _)| b)
                    .chain([line.len()])
                    .collect();
                line.insert(boundaries[pos % boundaries.len()], *c);
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// A shipped file with one to four line edits.
pub fn mutated(text: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec((any::<usize>(), line_edit()), 1..5)
        .prop_map(move |edits| apply_edits(text, &edits))
}

/// Any of the above, plus arbitrary text.
pub fn yaml_text(
    fields: &'static [&'static str],
    shipped: &'static str,
) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => document(fields),
        3 => mutated(shipped),
        1 => any::<String>(),
        1 => r"[a-z_:\- \n\[\]{}0-9#&*!|>'\x22.,]{0,80}",
    ]
}
