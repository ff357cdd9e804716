//! WebSocket tunnel overhead: the same echo server reached directly, through
//! `framecast-router` (the release binary) and through Debian's nginx configured as a
//! WebSocket reverse proxy, measured in one run with the paths interleaved.
//!
//! `cargo bench -p framecast-router --bench tunnel`
//!
//! Per path: round trip p50/p99 of 64 B text and 64 KiB binary messages (one session,
//! sequential), throughput of the same messages (one session, sender and receiver running
//! concurrently with at most 16 messages in flight), and 200 concurrent sessions each doing 20 round trips. Both proxies get one
//! worker (router `threads: 1`, nginx `worker_processes 1`); nginx's tunnel buffer
//! (`proxy_buffer_size`, one page by default) is raised to 64k so large frames are not
//! copied 4 KiB at a time. Each path is measured
//! `ROUNDS` times in rotating order; the median round is reported.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use framecast_e2e::{MockReplica, free_port};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Bytes, Message};

const ROUNDS: usize = 3;
const RTT_SMALL: usize = 2000;
const RTT_LARGE: usize = 300;
const TPUT_SMALL: usize = 20_000;
const TPUT_LARGE: usize = 1500;
const WINDOW: usize = 16;
const SESSIONS: usize = 200;
const SESSION_ROUNDTRIPS: usize = 20;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A proxy process killed when the benchmark ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_router(echo: &MockReplica, dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let admin_port = free_port();
    let config = dir.join("router.yaml");
    std::fs::write(
        &config,
        format!(
            "router:\n  host: 127.0.0.1\n  port: {port}\n  admin_port: {admin_port}\n  threads: 1\n  client_limits:\n    max_sessions_per_ip: 0\n    new_sessions_per_ip_per_minute: 0\n  health_check:\n    interval_seconds: 1\n  replicas:\n    - url: {}\n      name: echo\n      primary: true\n",
            echo.url()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_framecast-router"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("router.log")).unwrap())
        .spawn()
        .expect("start framecast-router");
    (Proc(child), port)
}

fn start_nginx(echo: &MockReplica, dir: &std::path::Path) -> (Proc, u16) {
    let port = free_port();
    let upstream = echo.url().trim_start_matches("http://").to_string();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           upstream echo {{ server {upstream}; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://echo;\n\
             proxy_http_version 1.1;\n      proxy_set_header Upgrade $http_upgrade;\n\
             proxy_set_header Connection \"upgrade\";\n      proxy_read_timeout 3600s;\n\
             proxy_buffering off;\n      proxy_buffer_size 64k;\n      proxy_buffers 8 64k;\n      proxy_busy_buffers_size 128k;\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx (Debian package `nginx`, installed by scripts/setup)");
    let mut proc = Proc(child);
    std::thread::sleep(Duration::from_millis(300));
    if let Some(status) = proc.0.try_wait().unwrap() {
        panic!("nginx exited at start ({status}); see its message above");
    }
    (proc, port)
}

async fn connect(port: u16) -> Ws {
    let url = format!("ws://127.0.0.1:{port}/v1/stream");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((mut ws, _)) => {
                // The router refuses with an error frame until its first probe passed; a
                // real echo answers "whoami" with the replica's name.
                ws.send(Message::text("whoami")).await.unwrap();
                if let Some(Ok(Message::Text(t))) = ws.next().await
                    && t.as_str() == "echo"
                {
                    return ws;
                }
            }
            Err(e) if Instant::now() > deadline => panic!("{url}: {e}"),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "{url} never echoed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn message(len: usize) -> Message {
    if len <= 64 {
        Message::text("x".repeat(len))
    } else {
        Message::binary(Bytes::from(vec![0xA5u8; len]))
    }
}

async fn next_data(ws: &mut Ws) -> usize {
    loop {
        match ws.next().await {
            Some(Ok(m)) if m.is_text() || m.is_binary() => return m.len(),
            Some(Ok(_)) => {}
            other => panic!("session ended: {other:?}"),
        }
    }
}

/// Sequential round trips; returns (p50, p99) in microseconds.
async fn round_trips(port: u16, len: usize, n: usize) -> (f64, f64) {
    let mut ws = connect(port).await;
    let msg = message(len);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        ws.send(msg.clone()).await.unwrap();
        assert_eq!(next_data(&mut ws).await, len);
        if i >= n / 10 {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = ws.close(None).await;
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

/// Messages echoed per second with sender and receiver running concurrently and at most
/// `WINDOW` messages in flight.
///
/// The window matters: with an unbounded sender, an echo server and a 64 KiB payload,
/// pingora 0.9's HTTP/1 tunnel deadlocks — its upstream loop awaits a write to the echo
/// server without reading from it, while the echo server waits to write back — until the
/// 300 s write timeout resets the session. A bounded window is also how a real client
/// behaves (the player never has more than a few messages outstanding).
async fn throughput(port: u16, len: usize, n: usize) -> f64 {
    let ws = connect(port).await;
    let (mut tx, mut rx) = ws.split();
    let msg = message(len);
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let started = Instant::now();
    let sender = {
        let window = window.clone();
        tokio::spawn(async move {
            for _ in 0..n {
                window.acquire().await.unwrap().forget();
                tx.send(msg.clone()).await.unwrap();
            }
            tx
        })
    };
    let mut got = 0;
    while got < n {
        match rx.next().await {
            Some(Ok(m)) if m.is_text() || m.is_binary() => {
                got += 1;
                window.add_permits(1);
            }
            Some(Ok(_)) => {}
            other => panic!("session ended after {got}: {other:?}"),
        }
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let mut tx = sender.await.unwrap();
    let _ = tx.close().await;
    rate
}

/// `SESSIONS` sessions at once, each `SESSION_ROUNDTRIPS` 64 B round trips; returns
/// (errors, wall seconds).
async fn concurrent_sessions(port: u16) -> (usize, f64) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|_| {
            tokio::spawn(async move {
                let url = format!("ws://127.0.0.1:{port}/v1/stream");
                let (mut ws, _) = tokio_tungstenite::connect_async(&url)
                    .await
                    .map_err(|e| e.to_string())?;
                for i in 0..SESSION_ROUNDTRIPS {
                    let text = format!("{i:064}");
                    ws.send(Message::text(text.clone()))
                        .await
                        .map_err(|e| e.to_string())?;
                    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == text => {}
                        other => return Err(format!("{other:?}")),
                    }
                }
                let _ = ws.close(None).await;
                Ok::<_, String>(())
            })
        })
        .collect();
    let mut errors = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            errors += 1;
        }
    }
    (errors, started.elapsed().as_secs_f64())
}

#[derive(Debug, Default, Clone)]
struct Figures {
    small_rtt: (f64, f64),
    large_rtt: (f64, f64),
    small_rate: f64,
    large_rate: f64,
    errors: usize,
    sessions_s: f64,
}

async fn measure(port: u16) -> Figures {
    let small_rtt = round_trips(port, 64, RTT_SMALL).await;
    let large_rtt = round_trips(port, 64 << 10, RTT_LARGE).await;
    let small_rate = throughput(port, 64, TPUT_SMALL).await;
    let large_rate = throughput(port, 64 << 10, TPUT_LARGE).await;
    let (errors, sessions_s) = concurrent_sessions(port).await;
    Figures {
        small_rtt,
        large_rtt,
        small_rate,
        large_rate,
        errors,
        sessions_s,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn summarize(runs: &[Figures]) -> Figures {
    let m = |f: fn(&Figures) -> f64| median(runs.iter().map(f).collect());
    Figures {
        small_rtt: (m(|f| f.small_rtt.0), m(|f| f.small_rtt.1)),
        large_rtt: (m(|f| f.large_rtt.0), m(|f| f.large_rtt.1)),
        small_rate: m(|f| f.small_rate),
        large_rate: m(|f| f.large_rate),
        errors: runs.iter().map(|f| f.errors).sum(),
        sessions_s: m(|f| f.sessions_s),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let echo = MockReplica::start("echo");
    // Kept when the benchmark fails, so the proxies' logs can be read.
    let dir = tempfile::Builder::new()
        .prefix("framecast-tunnel-bench")
        .tempdir()
        .unwrap()
        .keep();
    eprintln!("proxy configs and logs in {}", dir.display());
    let (_router, router_port) = start_router(&echo, &dir);
    let (_nginx, nginx_port) = start_nginx(&echo, &dir);
    let direct_port: u16 = echo.url().rsplit(':').next().unwrap().parse().unwrap();
    let paths = [
        ("direct", direct_port),
        ("framecast-router", router_port),
        ("nginx", nginx_port),
    ];

    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); paths.len()];
    runtime.block_on(async {
        for &(_, port) in &paths {
            drop(connect(port).await); // all three answer before timing starts
        }
        for round in 0..ROUNDS {
            for k in 0..paths.len() {
                let p = (round + k) % paths.len();
                let figures = measure(paths[p].1).await;
                eprintln!("round {round} {}: {figures:?}", paths[p].0);
                runs[p].push(figures);
            }
        }
    });

    let results: Vec<Figures> = runs.iter().map(|r| summarize(r)).collect();
    let direct = &results[0];
    println!(
        "\nWebSocket echo, median of {ROUNDS} interleaved rounds (µs; msgs/s; {SESSIONS} sessions x {SESSION_ROUNDTRIPS} round trips)"
    );
    println!(
        "{:<17} {:>9} {:>9} {:>11} {:>11} {:>11} {:>11} {:>7} {:>9}",
        "path",
        "64B p50",
        "64B p99",
        "64KiB p50",
        "64KiB p99",
        "64B msg/s",
        "64KiB msg/s",
        "errors",
        "200 sess"
    );
    for ((name, _), f) in paths.iter().zip(&results) {
        println!(
            "{:<17} {:>9.1} {:>9.1} {:>11.1} {:>11.1} {:>11.0} {:>11.0} {:>7} {:>8.2}s",
            name,
            f.small_rtt.0,
            f.small_rtt.1,
            f.large_rtt.0,
            f.large_rtt.1,
            f.small_rate,
            f.large_rate,
            f.errors,
            f.sessions_s
        );
    }
    for ((name, _), f) in paths.iter().zip(&results).skip(1) {
        println!(
            "{name}: added p50 {:+.1} µs (64 B), {:+.1} µs (64 KiB); added p99 {:+.1} µs (64 B), {:+.1} µs (64 KiB); throughput {:.2}x (64 B), {:.2}x (64 KiB) of direct",
            f.small_rtt.0 - direct.small_rtt.0,
            f.large_rtt.0 - direct.large_rtt.0,
            f.small_rtt.1 - direct.small_rtt.1,
            f.large_rtt.1 - direct.large_rtt.1,
            f.small_rate / direct.small_rate,
            f.large_rate / direct.large_rate,
        );
    }
    let (router, nginx) = (&results[1], &results[2]);
    println!(
        "framecast-router vs nginx: throughput {:.2}x (64 B), {:.2}x (64 KiB); p50 {:.2}x (64 B)",
        router.small_rate / nginx.small_rate,
        router.large_rate / nginx.large_rate,
        router.small_rtt.0 / nginx.small_rtt.0,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
