//! DNS discovery against mock replicas on loopback addresses that share one port, like the
//! pods behind a Kubernetes headless Service: the router starts with no replica, adds those
//! the name resolves to (each starts `unknown`, takes sessions once probed healthy), retires
//! one that leaves DNS (no new sessions, its open session goes on), and keeps what it knows
//! when a lookup fails.

mod support;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use framecast_e2e::{MockReplica, free_port};
use framecast_router::config::DiscoveryConfig;
use framecast_router::resolve::{Resolve, Resolving, ResolvingAll};
use parking_lot::Mutex;
use support::{TestRouter, config, roundtrip};
use tokio_tungstenite::tungstenite::Message;

/// A DNS name the test controls: its addresses, or a failing lookup (`None`).
#[derive(Debug, Default)]
struct Records(Mutex<HashMap<String, Option<Vec<IpAddr>>>>);

impl Records {
    fn set(&self, name: &str, ips: Option<Vec<IpAddr>>) {
        self.0.lock().insert(name.to_string(), ips);
    }

    fn lookup(&self, authority: &str) -> io::Result<Vec<SocketAddr>> {
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| io::Error::other("no port"))?;
        let port: u16 = port.parse().map_err(io::Error::other)?;
        match self.0.lock().get(host) {
            Some(Some(ips)) => Ok(ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        }
    }
}

impl Resolve for Records {
    fn resolve<'a>(&'a self, authority: &'a str) -> Resolving<'a> {
        let first = self.lookup(authority).and_then(|all| {
            all.into_iter()
                .next()
                .ok_or_else(|| io::Error::other("no address"))
        });
        Box::pin(async move { first })
    }

    fn resolve_all<'a>(&'a self, authority: &'a str) -> ResolvingAll<'a> {
        let all = self.lookup(authority);
        Box::pin(async move { all })
    }
}

const NAME: &str = "replicas.framecast.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_come_and_go_with_their_dns_records() {
    let metrics = framecast_common::metrics::install_recorder("router").unwrap();
    let port = free_port();
    let ip = |last: u8| IpAddr::from([127, 0, 0, last]);
    let a = MockReplica::start_at("a", SocketAddr::new(ip(2), port));
    let b = MockReplica::start_at("b", SocketAddr::new(ip(3), port));
    let records = Arc::new(Records::default());
    records.set(NAME, Some(vec![ip(2)]));
    let mut config = config(Vec::new(), 0.1);
    config.discovery = DiscoveryConfig {
        dns_name: Some(NAME.into()),
        port,
        admin_port: None,
        max_replicas: 8,
    };
    let router = TestRouter::start_with_resolver(&config, Some(metrics), records.clone());
    let (name_a, name_b) = (format!("127.0.0.2:{port}"), format!("127.0.0.3:{port}"));
    router
        .wait_for_replica(&name_a, Duration::from_secs(10), |r| {
            r["status"] == "healthy"
        })
        .await;
    let (on, mut kept) = router.session_on().await;
    assert_eq!(on, a.name());

    // A second record: a new replica, probed, then taking sessions.
    records.set(NAME, Some(vec![ip(2), ip(3)]));
    let row = router
        .wait_for_replica(&name_b, Duration::from_secs(10), |r| {
            r["status"] == "healthy"
        })
        .await;
    assert_eq!(row["discovered"], true);

    // The first record goes: that replica is retired, new sessions go to the other, and the
    // session already open there goes on.
    records.set(NAME, Some(vec![ip(3)]));
    router
        .wait_for_replica(&name_a, Duration::from_secs(10), |r| r["retired"] == true)
        .await;
    for _ in 0..3 {
        assert_eq!(router.session_on().await.0, b.name());
    }
    let echoed = roundtrip(&mut kept, Message::text("still here")).await;
    assert_eq!(echoed.into_text().unwrap().as_str(), "still here");

    // A failed lookup changes nothing, and is counted.
    records.set(NAME, None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = router.status().await;
    let rows = status["replicas"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{status}");
    assert!(
        rows.iter()
            .any(|r| r["name"] == name_b.as_str() && r["retired"] == false)
    );
    let text = framecast_e2e::get_text(&router.admin_url("/metrics")).await;
    let failures: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("framecast_router_discovery_failures_total")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    assert!(failures >= 1.0, "{text}");
    let known: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("framecast_router_replicas_known")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0);
    assert_eq!(known, 2.0, "{text}");
    assert_eq!(router.session_on().await.0, b.name());
    router.shutdown().expect("the router did not panic");
}
