//! The layered YAML loader on arbitrary file contents, for the replica's and the router's
//! settings types: it never panics, every error names the file (and the field, for a bad
//! value), and whatever loads is usable (its timeouts make `Duration`s and deadlines).

#![no_main]

// The settings sources themselves, included by path (see `fuzz/Cargo.toml`).
#[allow(dead_code)]
#[path = "../../replica/src/config.rs"]
mod replica_config;
#[allow(dead_code)]
#[path = "../../router/src/config.rs"]
mod router_config;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use framecast_common::config::{ConfigError, LayeredConfig, Validate};
use libfuzzer_sys::fuzz_target;
use replica_config::ReplicaConfig;
use router_config::RouterFile;
use serde::de::DeserializeOwned;

/// One file per fuzzing process, rewritten for every input; in memory when `/dev/shm` is
/// there (a disk-backed temporary directory makes this target twenty times slower).
fn file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("framecast-fuzz-{}.yaml", std::process::id()))
    })
}

fn load<T: DeserializeOwned + Validate>(prefix: &str, path: &Path) -> Option<T> {
    let result = LayeredConfig::new(prefix)
        .env_vars(std::iter::empty())
        .file(Some(path))
        .load::<T>();
    match result {
        Ok(settings) => Some(settings),
        Err(err) => {
            let shown = path.display().to_string();
            let message = err.to_string();
            assert!(message.contains(&shown), "{message}");
            if let ConfigError::Invalid { origin, field, .. } = &err {
                assert_eq!(origin, &shown, "{message}");
                assert!(!field.is_empty(), "{message}");
            }
            None
        }
    }
}

fn deadline(field: &str, duration: Duration) {
    assert!(
        Instant::now().checked_add(duration).is_some(),
        "{field} = {duration:?} loads but overflows a deadline"
    );
}

fuzz_target!(|data: &[u8]| {
    let path = file();
    std::fs::write(path, data).expect("the temporary file is writable");

    if let Some(c) = load::<ReplicaConfig>(replica_config::ENV_PREFIX, path) {
        for (field, seconds) in [
            (
                "server.shutdown_grace_seconds",
                c.server.shutdown_grace_seconds,
            ),
            (
                "streaming.session_timeout_seconds",
                c.streaming.session_timeout_seconds,
            ),
            (
                "streaming.max_session_seconds",
                c.streaming.max_session_seconds,
            ),
            (
                "streaming.init_timeout_seconds",
                c.streaming.init_timeout_seconds,
            ),
            (
                "streaming.client_write_timeout_seconds",
                c.streaming.client_write_timeout_seconds,
            ),
            (
                "streaming.ping_interval_seconds",
                c.streaming.ping_interval_seconds,
            ),
            (
                "streaming.pong_timeout_seconds",
                c.streaming.pong_timeout_seconds,
            ),
            (
                "pool.acquire_timeout_seconds",
                c.pool.acquire_timeout_seconds,
            ),
            (
                "pool.restart_backoff_seconds",
                c.pool.restart_backoff_seconds,
            ),
            ("pool.stall_timeout_seconds", c.pool.stall_timeout_seconds),
            ("store.ttl_seconds", c.store.ttl_seconds),
        ] {
            deadline(field, Duration::from_secs(seconds));
        }
        deadline(
            "generator.mock_latency_ms",
            Duration::from_millis(c.generator.mock_latency_ms),
        );
    }

    if let Some(file) = load::<RouterFile>(router_config::ENV_PREFIX, path) {
        let c = &file.router;
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
            deadline(field, duration);
        }
        deadline(
            "router.shutdown_grace_seconds",
            Duration::from_secs(c.shutdown_grace_seconds),
        );
        for replica in &c.replicas {
            replica
                .authority()
                .expect("a validated URL has an authority");
        }
    }
});
