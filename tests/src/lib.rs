//! Helpers for end-to-end tests that run the real `framecast-router` and `framecast-replica`
//! binaries as child processes on loopback.

pub mod mock_replica;
pub mod redis;

pub use mock_replica::MockReplica;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary next to the running test executable (`target/<profile>/`).
///
/// Panics with the command to run when it has not been built: `cargo test` builds it only
/// for packages with their own integration tests, so scripts/test builds `--bins` first.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing; run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Runs a binary to completion with `args` and a clean `FRAMECAST_*` environment.
pub fn run_to_end(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(binary(name));
    cmd.args(args);
    clear_framecast_env(&mut cmd);
    cmd.envs(env.iter().copied());
    cmd.output().expect("binary runs")
}

fn clear_framecast_env(cmd: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("FRAMECAST_") {
            cmd.env_remove(key);
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A child process that is killed when the test ends, however it ends.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    /// Starts `name` with `args` and extra environment; its output goes to the test's stderr.
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(binary(name));
        cmd.args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        clear_framecast_env(&mut cmd);
        cmd.envs(env.iter().copied());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            child,
            name: name.to_string(),
        }
    }

    /// Whether the process has exited (and with what status).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("poll child")
    }

    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns at once.
    pub fn signal_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal_term();
        self.wait_exit(timeout)
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            eprintln!("stopping {}", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether the server side ends `ws` (close frame, error or EOF) within `timeout`; other
/// messages are read and dropped meanwhile.
pub async fn closes_within<S>(ws: &mut S, timeout: Duration) -> bool
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(timeout, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The body of `GET url` as text, panicking with the URL on any failure.
pub async fn get_text(url: &str) -> String {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    response
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The body of `GET url` parsed as JSON, panicking with the URL and body on any failure.
pub async fn get_json(url: &str) -> serde_json::Value {
    let text = get_text(url).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"))
}

/// Polls `url` until it answers with `expected_status`, or panics after `timeout`.
pub async fn wait_for_status(
    url: &str,
    expected_status: u16,
    timeout: Duration,
) -> reqwest::Response {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match client.get(url).timeout(Duration::from_secs(2)).send().await {
            Ok(r) if r.status().as_u16() == expected_status => return r,
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not answer {expected_status} within {timeout:?} (last: {last})");
}

/// The browser driver and its npm packages (installed by scripts/setup).
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Opens `url` in Debian's headless chromium through playwright-core (tests/browser/play.mjs)
/// and returns the player's stats once playback ended, failed or `timeout` passed.
pub async fn play_in_chromium(url: &str, timeout: Duration) -> serde_json::Value {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/setup"
    );
    let (url, millis) = (url.to_string(), timeout.as_millis().to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(dir.join("play.mjs"))
            .arg(url)
            .arg(millis)
            .output()
            .expect("node runs")
    })
    .await
    .expect("browser task");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "play.mjs failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stats =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    eprintln!("browser stats: {stats}");
    stats
}

/// A client's WebSocket to a replica or router.
pub type ClientWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Client base URL -> admin base URL of every replica [`spawn_replica`] started.
static ADMIN_BASES: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Starts the real replica binary on loopback with free client and admin ports, `extra`
/// settings applied last; returns at once with the client base URL (`http://127.0.0.1:N`).
/// [`admin_base`] gives its admin listener (`/status`, `/metrics`).
pub fn spawn_replica(extra: &[(&str, &str)]) -> (ChildGuard, String) {
    spawn_replica_with_args(&[], extra)
}

/// [`spawn_replica`] with command-line arguments (e.g. `--config <file>`).
pub fn spawn_replica_with_args(args: &[&str], extra: &[(&str, &str)]) -> (ChildGuard, String) {
    let port = free_port().to_string();
    let admin_port = free_port().to_string();
    let mut env = vec![
        ("FRAMECAST_REPLICA__SERVER__HOST", "127.0.0.1"),
        ("FRAMECAST_REPLICA__SERVER__PORT", port.as_str()),
        ("FRAMECAST_REPLICA__SERVER__ADMIN_PORT", admin_port.as_str()),
    ];
    // Later entries win: `Command::env` keeps the last value of a variable.
    env.extend_from_slice(extra);
    let replica = ChildGuard::spawn("framecast-replica", args, &env);
    let base = format!("http://127.0.0.1:{port}");
    ADMIN_BASES
        .lock()
        .unwrap()
        .push((base.clone(), format!("http://127.0.0.1:{admin_port}")));
    (replica, base)
}

/// The admin listener's base URL of a replica started by [`spawn_replica`] (or
/// [`start_mock_replica`]), given its client base URL.
pub fn admin_base(base: &str) -> String {
    ADMIN_BASES
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(client, _)| client == base)
        .map(|(_, admin)| admin.clone())
        .unwrap_or_else(|| panic!("{base} was not started by spawn_replica"))
}

/// The real replica binary with the mock generator on one in-process worker (small frames,
/// 50 ms segments), `extra` settings applied last; returns once `/readyz` answers 200.
pub async fn start_mock_replica(extra: &[(&str, &str)]) -> (ChildGuard, String) {
    start_mock_replica_with_args(&[], extra).await
}

/// [`start_mock_replica`] with command-line arguments (e.g. `--config <file>`).
pub async fn start_mock_replica_with_args(
    args: &[&str],
    extra: &[(&str, &str)],
) -> (ChildGuard, String) {
    let mut env = vec![
        ("FRAMECAST_REPLICA__POOL__MODE", "in_process"),
        ("FRAMECAST_REPLICA__POOL__WARMUP", "false"),
        ("FRAMECAST_REPLICA__GENERATOR__KIND", "mock"),
        ("FRAMECAST_REPLICA__GENERATOR__WIDTH", "128"),
        ("FRAMECAST_REPLICA__GENERATOR__HEIGHT", "72"),
        ("FRAMECAST_REPLICA__GENERATOR__FRAMES_PER_SEGMENT", "12"),
        ("FRAMECAST_REPLICA__GENERATOR__MOCK_LATENCY_MS", "50"),
    ];
    env.extend_from_slice(extra);
    let (replica, base) = spawn_replica_with_args(args, &env);
    wait_for_status(&format!("{base}/readyz"), 200, Duration::from_secs(60)).await;
    (replica, base)
}

/// Opens `/v1/stream` on `base` (an `http://` URL) and sends `init` as the first frame.
pub async fn open_stream(base: &str, init: serde_json::Value) -> ClientWs {
    use futures_util::SinkExt;
    let url = format!("{}/v1/stream", base.replace("http", "ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        init.to_string(),
    ))
    .await
    .unwrap();
    ws
}

/// Every JSON message until the server's close frame (or `limit`), and the close code
/// (`None` when no close frame came).
pub async fn until_close(
    ws: &mut ClientWs,
    limit: Duration,
) -> (Vec<serde_json::Value>, Option<u16>) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = Instant::now() + limit;
    let mut messages = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => messages.push(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (messages, frame.map(|f| u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => {}
            _ => return (messages, None),
        }
    }
}

impl ChildGuard {
    /// The process id (to read `/proc/<pid>/status`, e.g. its resident memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`); `None` once
/// it has exited.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    proc_status_bytes(pid, "VmRSS")
}

/// A size field of `/proc/<pid>/status` (`VmRSS`, `RssAnon`, `VmHWM`, ...) in bytes; `None`
/// once the process has exited.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A router started by [`start_router`]: its client and admin base URLs. Keep it alive as
/// long as the router runs (it owns the config file).
#[derive(Debug)]
pub struct Router {
    pub process: ChildGuard,
    /// `http://127.0.0.1:N`: `/v1/stream` and everything else routed to replicas.
    pub base: String,
    /// The admin listener: `/status`, `/metrics`, `/healthz`, `/readyz`.
    pub admin: String,
    _config: tempfile::NamedTempFile,
}

/// The real router in front of `replicas` (client base URLs of replicas started by
/// [`spawn_replica`] or [`start_mock_replica`]), probing `/readyz` every 0.2 s, with the
/// per-client limits off (every test client shares 127.0.0.1) and `env` applied last;
/// returns once its `/readyz` answers 200 (a replica is healthy).
pub async fn start_router(replicas: &[String], env: &[(&str, &str)]) -> Router {
    let port = free_port();
    let admin_port = free_port();
    let mut yaml = format!(
        "router:\n  host: 127.0.0.1\n  port: {port}\n  admin_port: {admin_port}\n  threads: 2\n  shutdown_grace_seconds: 1\n  health_check:\n    path: /readyz\n    interval_seconds: 0.2\n  replicas:\n"
    );
    for (i, url) in replicas.iter().enumerate() {
        let admin = admin_base(url);
        yaml.push_str(&format!(
            "    - url: {url}\n      admin_url: {admin}\n      name: replica-{i}\n"
        ));
    }
    let config = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(config.path(), yaml).unwrap();
    let mut all_env = vec![
        (
            "FRAMECAST_ROUTER__ROUTER__CLIENT_LIMITS__MAX_SESSIONS_PER_IP",
            "0",
        ),
        (
            "FRAMECAST_ROUTER__ROUTER__CLIENT_LIMITS__NEW_SESSIONS_PER_IP_PER_MINUTE",
            "0",
        ),
    ];
    all_env.extend_from_slice(env);
    let process = ChildGuard::spawn(
        "framecast-router",
        &["--config", config.path().to_str().unwrap()],
        &all_env,
    );
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_for_status(&format!("{admin}/readyz"), 200, Duration::from_secs(30)).await;
    Router {
        process,
        base: format!("http://127.0.0.1:{port}"),
        admin,
        _config: config,
    }
}
