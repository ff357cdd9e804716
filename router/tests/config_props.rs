//! Property tests of the router's YAML configuration: no file text panics the loader, every
//! error names the file and the field, and whatever loads is usable (every timeout makes a
//! `Duration` and a deadline, and every replica URL an authority).
//!
//! `scripts/fuzz` runs the coverage-guided counterpart (`fuzz/fuzz_targets/config_yaml.rs`).

#[path = "../../common/tests/support/yaml_gen.rs"]
mod yaml_gen;

use std::path::Path;
use std::time::{Duration, Instant};

use framecast_common::config::{ConfigError, LayeredConfig};
use framecast_router::config::{ENV_PREFIX, RouterFile};
use proptest::prelude::*;

/// Every section and field name of `RouterFile`, at any level.
const ROUTER_FIELDS: &[&str] = &[
    "router",
    "host",
    "port",
    "replicas",
    "url",
    "name",
    "primary",
    "weight",
    "health_check",
    "path",
    "interval_seconds",
    "timeout_seconds",
    "failure_threshold",
    "recovery_threshold",
    "capacity_path",
    "selection",
    "connect_timeout_seconds",
    "tunnel_idle_timeout_seconds",
    "shutdown_grace_seconds",
    "threads",
    "client_limits",
    "max_sessions_per_ip",
    "new_sessions_per_ip_per_minute",
    "trusted_proxies",
];

const SHIPPED_ROUTER: &str = include_str!("../../config/router.yaml");

fn load(path: &Path) -> Result<RouterFile, ConfigError> {
    LayeredConfig::new(ENV_PREFIX)
        .env_vars(std::iter::empty())
        .file(Some(path))
        .load()
}

fn load_text(text: &str) -> Result<RouterFile, ConfigError> {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let result = load(file.path());
    if let Err(err) = &result {
        check_error(err, file.path(), text);
    }
    result
}

/// Every error names the file; an invalid value also names its field.
fn check_error(err: &ConfigError, path: &Path, text: &str) {
    let shown = path.display().to_string();
    let message = err.to_string();
    assert!(message.contains(&shown), "{message}\n--- text:\n{text}");
    if let ConfigError::Invalid { origin, field, .. } = err {
        assert_eq!(origin, &shown, "{message}\n--- text:\n{text}");
        assert!(!field.is_empty(), "{message}\n--- text:\n{text}");
    }
}

/// What the router does with a loaded configuration must not panic.
fn check_usable(file: &RouterFile) {
    let c = &file.router;
    let now = Instant::now();
    for (field, seconds) in [
        ("router.connect_timeout_seconds", c.connect_timeout_seconds),
        (
            "router.tunnel_idle_timeout_seconds",
            c.tunnel_idle_timeout_seconds,
        ),
        (
            "router.health_check.interval_seconds",
            c.health_check.interval_seconds,
        ),
        (
            "router.health_check.timeout_seconds",
            c.health_check.timeout_seconds,
        ),
    ] {
        let duration = Duration::try_from_secs_f64(seconds)
            .unwrap_or_else(|e| panic!("{field} = {seconds} loads but is no Duration: {e}"));
        assert!(
            now.checked_add(duration).is_some(),
            "{field} = {seconds} loads but overflows a deadline"
        );
    }
    assert!(
        now.checked_add(Duration::from_secs(c.shutdown_grace_seconds))
            .is_some(),
        "router.shutdown_grace_seconds = {} loads but overflows a deadline",
        c.shutdown_grace_seconds
    );
    for replica in &c.replicas {
        replica
            .authority()
            .expect("a validated URL has an authority");
        assert!(!replica.display_name().is_empty());
    }
}

proptest! {
    #![proptest_config(yaml_gen::cases(256))]

    #[test]
    fn any_router_yaml_loads_or_names_the_file_and_field(
        text in yaml_gen::yaml_text(ROUTER_FIELDS, SHIPPED_ROUTER),
    ) {
        if let Ok(file) = load_text(&text) {
            check_usable(&file);
        }
    }
}

#[test]
fn the_shipped_router_config_loads() {
    check_usable(&load_text(SHIPPED_ROUTER).unwrap());
}

#[test]
fn timeouts_too_long_for_a_duration_or_deadline_are_refused() {
    // `1e20` once loaded and then panicked in `Duration::from_secs_f64` at start-up; a
    // grace of 2^63 seconds panicked computing the drain deadline on SIGTERM.
    for (field, value) in [
        ("connect_timeout_seconds", "1e20"),
        ("tunnel_idle_timeout_seconds", "18446744073709551615"),
        ("shutdown_grace_seconds", "9223372036854775807"),
    ] {
        let err = load_text(&format!("router:\n  {field}: {value}\n")).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { field: f, .. } if *f == format!("router.{field}")),
            "{err}"
        );
    }
    let err = load_text("router:\n  health_check:\n    interval_seconds: 1e300\n").unwrap_err();
    assert!(err.to_string().contains("at most"), "{err}");
}
