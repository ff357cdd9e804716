//! Property tests of the layered YAML loader on a small settings type: no file text panics
//! it, and every error names the file, and the field when one is to blame.
//!
//! The replica's and router's own settings types get the same properties in their crates
//! (`replica/tests/props.rs`, `router/tests/config_props.rs`).

#[path = "support/yaml_gen.rs"]
mod yaml_gen;

use framecast_common::config::{
    ConfigError, FieldError, LayeredConfig, Validate, at_least_one, not_empty, positive_seconds,
};
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Server {
    host: String,
    port: u16,
    timeout_seconds: f64,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 8000,
            timeout_seconds: 1.0,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    server: Server,
    workers: Vec<Worker>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Worker {
    name: String,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), FieldError> {
        positive_seconds("server.timeout_seconds", self.server.timeout_seconds)?;
        for (i, w) in self.workers.iter().enumerate() {
            at_least_one(&format!("workers[{i}].count"), w.count)?;
            not_empty(&format!("workers[{i}].name"), &w.name)?;
        }
        Ok(())
    }
}

const FIELDS: &[&str] = &[
    "server",
    "host",
    "port",
    "timeout_seconds",
    "workers",
    "name",
    "count",
];

const SHIPPED: &str = "server:\n  host: 0.0.0.0\n  port: 8000\n  timeout_seconds: 2.5\nworkers:\n  - name: a\n    count: 1\n  - name: b\n";

proptest! {
    #![proptest_config(yaml_gen::cases(256))]

    #[test]
    fn any_yaml_loads_or_names_the_file_and_field(text in yaml_gen::yaml_text(FIELDS, SHIPPED)) {
        let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(file.path(), &text).unwrap();
        let result = LayeredConfig::new("FRAMECAST_PROPS")
            .env_vars(std::iter::empty())
            .file(Some(file.path()))
            .load::<Settings>();
        match result {
            Ok(settings) => {
                // What loads is usable: the timeout makes a Duration and a deadline.
                let timeout = std::time::Duration::try_from_secs_f64(settings.server.timeout_seconds);
                let timeout = timeout.expect("a loaded timeout is a Duration");
                assert!(std::time::Instant::now().checked_add(timeout).is_some());
            }
            Err(err) => check_error(&err, file.path(), &text),
        }
    }
}

/// Every error names the file; an invalid value also names its field.
fn check_error(err: &ConfigError, path: &std::path::Path, text: &str) {
    let shown = path.display().to_string();
    let message = err.to_string();
    assert!(message.contains(&shown), "{message}\n--- text:\n{text}");
    if let ConfigError::Invalid { origin, field, .. } = err {
        assert_eq!(origin, &shown, "{message}\n--- text:\n{text}");
        assert!(!field.is_empty(), "{message}\n--- text:\n{text}");
    }
}

#[test]
fn the_sample_file_loads() {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), SHIPPED).unwrap();
    let s: Settings = LayeredConfig::new("FRAMECAST_PROPS")
        .env_vars(std::iter::empty())
        .file(Some(file.path()))
        .load()
        .unwrap();
    assert_eq!(s.workers.len(), 2);
}
