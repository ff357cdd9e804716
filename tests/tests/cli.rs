//! Both binaries answer `--help` and `--version`, and stop with a message naming the file and
//! the field when their configuration is wrong.

use std::io::Write;

use framecast_e2e::run_to_end;

const BINARIES: [&str; 2] = ["framecast-router", "framecast-replica"];

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_describes_the_config_layers() {
    for bin in BINARIES {
        let out = run_to_end(bin, &["--help"], &[]);
        assert!(out.status.success(), "{bin} --help: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains("--config"), "{bin}: {text}");
        assert!(
            text.contains("FRAMECAST_"),
            "{bin} help names the env overrides: {text}"
        );
    }
}

#[test]
fn version_prints_name_and_version() {
    for bin in BINARIES {
        let out = run_to_end(bin, &["--version"], &[]);
        assert!(out.status.success(), "{bin} --version: {}", stderr(&out));
        assert_eq!(
            stdout(&out).trim(),
            format!("{bin} {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

fn yaml(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn bad_router_file_exits_nonzero_naming_file_and_field() {
    let f = yaml("router:\n  health_check:\n    failure_threshold: 0\n");
    let path = f.path().to_str().unwrap();
    let out = run_to_end(
        "framecast-router",
        &["--config", path, "--check-config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(path), "{err}");
    assert!(
        err.contains("`router.health_check.failure_threshold`"),
        "{err}"
    );
}

#[test]
fn every_router_validation_rule_stops_the_binary_naming_the_field() {
    let one = "  replicas:\n    - url: http://a:1\n";
    let cases: Vec<(String, &str)> = vec![
        ("router:\n  replicas: []\n".into(), "router.replicas"),
        (
            format!("router:\n{one}  health_check:\n    interval_seconds: 0\n"),
            "router.health_check.interval_seconds",
        ),
        (
            format!("router:\n{one}  health_check:\n    timeout_seconds: -1\n"),
            "router.health_check.timeout_seconds",
        ),
        (
            format!("router:\n{one}  health_check:\n    recovery_threshold: 0\n"),
            "router.health_check.recovery_threshold",
        ),
        (
            "router:\n  replicas:\n    - url: ftp://a:1\n".into(),
            "router.replicas[0].url",
        ),
        (
            "router:\n  replicas:\n    - url: http://a:1/v1\n".into(),
            "router.replicas[0].url",
        ),
        (
            "router:\n  replicas:\n    - url: http://a:1?q=1\n".into(),
            "router.replicas[0].url",
        ),
        (
            "router:\n  replicas:\n    - url: http://a:1#f\n".into(),
            "router.replicas[0].url",
        ),
        (
            "router:\n  replicas:\n    - url: http://a:1\n    - url: http://a:1/\n".into(),
            "router.replicas[1].url",
        ),
        (
            "router:\n  replicas:\n    - url: http://a:1\n      primary: true\n    - url: http://b:1\n      primary: true\n".into(),
            "router.replicas[1].primary",
        ),
        (
            format!("router:\n{one}  selection: fastest\n"),
            "router.selection",
        ),
    ];
    for (text, field) in cases {
        let f = yaml(&text);
        let path = f.path().to_str().unwrap();
        let out = run_to_end(
            "framecast-router",
            &["--config", path, "--check-config"],
            &[],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(&format!("`{field}`")), "{text}: {err}");
    }
}

#[test]
fn bad_replica_file_exits_nonzero_naming_file_and_field() {
    let f = yaml("server:\n  port: not-a-number\n");
    let path = f.path().to_str().unwrap();
    let out = run_to_end(
        "framecast-replica",
        &["--config", path, "--check-config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(path), "{err}");
    assert!(err.contains("`server.port`"), "{err}");
}

#[test]
fn unknown_field_in_file_is_rejected() {
    let f = yaml("server:\n  prot: 8000\n");
    let out = run_to_end(
        "framecast-replica",
        &["--config", f.path().to_str().unwrap(), "--check-config"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown field `prot`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn env_override_beats_the_file_and_bad_env_is_named() {
    let f = yaml("router:\n  port: 9100\n");
    let path = f.path().to_str().unwrap();
    let out = run_to_end(
        "framecast-router",
        &["--config", path, "--check-config"],
        &[("FRAMECAST_ROUTER__ROUTER__PORT", "9200")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let effective: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(effective["router"]["port"], 9200);

    let out = run_to_end(
        "framecast-router",
        &["--config", path, "--check-config"],
        &[("FRAMECAST_ROUTER__ROUTER__PORT", "ninety")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("FRAMECAST_ROUTER__ROUTER__PORT"), "{err}");
    assert!(err.contains("`router.port`"), "{err}");
}

#[test]
fn shipped_default_configs_load() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for (bin, file) in [
        ("framecast-router", "config/router.yaml"),
        ("framecast-replica", "config/replica.yaml"),
    ] {
        let path = format!("{root}/{file}");
        let out = run_to_end(bin, &["--config", &path, "--check-config"], &[]);
        assert!(out.status.success(), "{file}: {}", stderr(&out));
    }
}
