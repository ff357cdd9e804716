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

/// Copies the directory tree `from` into `to`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn check_model_accepts_a_servable_model_and_names_what_is_wrong_with_a_broken_one() {
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/wan-tiny");
    assert!(tiny.join("model_index.json").exists(), "run scripts/setup");
    let check = |dir: &std::path::Path| {
        run_to_end(
            "framecast-replica",
            &["--check-model"],
            &[
                ("FRAMECAST_REPLICA__GENERATOR__KIND", "wan"),
                (
                    "FRAMECAST_REPLICA__GENERATOR__MODEL_PATH",
                    dir.to_str().unwrap(),
                ),
                ("FRAMECAST_REPLICA__GENERATOR__WIDTH", "320"),
                ("FRAMECAST_REPLICA__GENERATOR__HEIGHT", "192"),
            ],
        )
    };
    let good = check(&tiny);
    assert!(good.status.success(), "{}", stderr(&good));
    let summary: serde_json::Value = serde_json::from_str(stdout(&good).trim()).unwrap();
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["format"]["width"], 320);

    // A transformer config that no longer matches its weights: one layer more than stored.
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&tiny, dir.path());
    let config_path = dir.path().join("transformer/config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    let layers = config["num_layers"].as_u64().unwrap();
    config["num_layers"] = (layers + 1).into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let broken = check(dir.path());
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        stderr(&broken).contains("cannot be served"),
        "{}",
        stderr(&broken)
    );
    assert!(
        stderr(&broken).contains(&format!("blocks.{layers}")),
        "{}",
        stderr(&broken)
    );

    // No model at all.
    let missing = check(&dir.path().join("nothing-here"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("nothing-here"),
        "{}",
        stderr(&missing)
    );
}
