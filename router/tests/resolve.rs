//! A replica whose name stops resolving (its pod was deleted, its DNS record with it) while
//! the router still has it healthy: the session goes to another replica, or, with none left,
//! the client gets the refusal frame; the router never panics (pingora's `HttpPeer::new`
//! would, resolving the name itself), counts the failure, and the health checker, resolving
//! through the same resolver, marks the replica unhealthy.

mod support;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use framecast_e2e::MockReplica;
use framecast_router::config::ReplicaEndpoint;
use framecast_router::resolve::{Resolve, Resolving};
use futures_util::StreamExt;
use parking_lot::Mutex;
use support::{TestRouter, config};
use tokio_tungstenite::tungstenite::Message;

/// Host names the test controls, like records in a cluster's DNS.
#[derive(Debug, Default)]
struct Names(Mutex<HashMap<String, IpAddr>>);

impl Names {
    fn set(&self, host: &str, ip: Option<IpAddr>) {
        let mut names = self.0.lock();
        match ip {
            Some(ip) => names.insert(host.to_string(), ip),
            None => names.remove(host),
        };
    }
}

impl Resolve for Names {
    fn resolve<'a>(&'a self, authority: &'a str) -> Resolving<'a> {
        let found = authority.rsplit_once(':').and_then(|(host, port)| {
            let ip = *self.0.lock().get(host)?;
            Some(SocketAddr::new(ip, port.parse().ok()?))
        });
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        })
    }
}

/// `mock` reached through the host name `host` instead of its address.
fn named(mock: &MockReplica, host: &str, primary: bool) -> ReplicaEndpoint {
    let port = mock.url().rsplit_once(':').unwrap().1.to_string();
    ReplicaEndpoint {
        url: format!("http://{host}:{port}"),
        admin_url: None,
        name: Some(mock.name().to_string()),
        primary,
        weight: 1,
    }
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_name_stops_resolving_is_skipped_refused_and_marked_unhealthy() {
    let metrics = framecast_common::metrics::install_recorder("router").unwrap();
    let (a, b) = (MockReplica::start("a"), MockReplica::start("b"));
    let names = Arc::new(Names::default());
    names.set("replica-a.framecast.test", Some(LOOPBACK));
    names.set("replica-b.framecast.test", Some(LOOPBACK));
    // Probes every 2 s, unhealthy after 2 failures: the router keeps both healthy for a while
    // after a name goes away, which is the window the bug lived in.
    let mut config = config(
        vec![
            named(&a, "replica-a.framecast.test", true),
            named(&b, "replica-b.framecast.test", false),
        ],
        2.0,
    );
    config.health_check.failure_threshold = 2;
    let router = TestRouter::start_with_resolver(&config, Some(metrics), names.clone());
    for name in ["a", "b"] {
        router
            .wait_for_replica(name, Duration::from_secs(10), |r| r["status"] == "healthy")
            .await;
    }

    // The primary's record disappears: its sessions go to the other replica.
    names.set("replica-a.framecast.test", None);
    let (on, _ws) = router.session_on().await;
    assert_eq!(on, "b");
    let failures = "framecast_router_resolve_failures_total{replica=\"a\"}";
    let counted = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(failures)?.trim().parse::<f64>().ok())
    };
    let text = framecast_e2e::get_text(&router.admin_url("/metrics")).await;
    assert!(counted(&text).unwrap() >= 1.0, "{text}");

    // Neither resolves: the client gets the refusal frame and a close, not a broken response.
    names.set("replica-b.framecast.test", None);
    let url = format!("ws://127.0.0.1:{}/v1/stream", router.port);
    let (mut ws, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    let refusal = ws.next().await.unwrap().unwrap();
    let refusal: serde_json::Value = serde_json::from_str(refusal.to_text().unwrap()).unwrap();
    assert_eq!(refusal["code"], "gpu_unavailable", "{refusal}");
    assert_eq!(refusal["retryable"], true);
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1013),
        other => panic!("expected a close frame, got {other:?}"),
    }

    // The probes fail too, so the replica is marked unhealthy; the router is still serving.
    let row = router
        .wait_for_replica("a", Duration::from_secs(15), |r| r["status"] == "unhealthy")
        .await;
    assert!(
        row["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("unreachable")
            || row.to_string().contains("resolve"),
        "{row}"
    );
    assert_eq!(
        router.status().await["replicas"].as_array().unwrap().len(),
        2
    );
    router.shutdown().expect("the router did not panic");
}
