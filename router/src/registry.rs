//! The replicas this router knows — the configured ones, then those discovery finds in DNS —
//! with the health and capacity the health checker records for each and the sessions routed
//! to each; it answers which replica a new session goes to (the policies themselves are in
//! [`crate::selection`]).
//!
//! The list only grows, so an index names one replica for the router's whole life (sessions
//! and retries hold indices); a discovered replica that left DNS is retired instead: it takes
//! no new sessions and is no longer probed, and comes back if its address does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use framecast_common::config::FieldError;
use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;

use crate::capacity::Capacity;
use crate::config::{RouterConfig, SelectionPolicy};
use crate::health::state::{HealthStatus, ReplicaHealth};
use crate::selection::{self, Candidate};

/// One replica, with its address already parsed out of the configured URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Label used in logs, `/status` and metrics.
    pub name: String,
    /// The base URL as configured.
    pub url: String,
    /// The base URL of its admin listener (capacity is read there).
    pub admin_url: String,
    /// `host:port` to connect to.
    pub authority: String,
    /// Host name sent as SNI when `tls` is set.
    pub host: String,
    /// Reached over TLS (an `https://` URL).
    pub tls: bool,
    /// Preferred while it has room under `primary_first`; wins ties under every policy.
    pub primary: bool,
    /// Relative share of sessions under weighted policies (at least 1).
    pub weight: u32,
    /// Found by DNS discovery rather than configured.
    pub discovered: bool,
}

/// Every replica, configured ones first in configuration order, with what the router knows
/// of each.
#[derive(Debug)]
pub struct ReplicaRegistry {
    /// Append-only (see the module docs): readers index it without a lock.
    entries: boxcar::Vec<Entry>,
    policy: SelectionPolicy,
    draining: AtomicBool,
    /// Held while discovery compares and adds, so an address is added once.
    discovering: Mutex<()>,
}

/// One replica and its mutable state (one lock per replica).
#[derive(Debug)]
struct Entry {
    replica: Replica,
    state: Mutex<ReplicaState>,
}

/// What one round of discovery changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiscoveryChanges {
    /// Indices of replicas seen for the first time.
    pub added: Vec<usize>,
    /// Indices of replicas that left the answer (retired).
    pub retired: Vec<usize>,
    /// Indices of retired replicas whose address came back.
    pub returned: Vec<usize>,
    /// Addresses not added because `max_replicas` were known already.
    pub over_limit: usize,
}

/// Everything mutable about one replica, behind one lock so selection sees a consistent view.
#[derive(Debug, Default)]
struct ReplicaState {
    health: ReplicaHealth,
    capacity: Option<Capacity>,
    /// Sessions sent here since `capacity` was read: they may not show in it yet.
    reserved: u32,
    /// Live sessions through this router.
    active: u64,
    /// Kept between selections by [`selection::round_robin`].
    round_robin_credit: i64,
    /// A discovered replica whose address left DNS: no new sessions, no probes.
    retired: bool,
}

impl ReplicaState {
    /// Whether a new session may go here.
    fn routable(&self) -> bool {
        !self.retired && self.health.is_routable()
    }

    /// Free workers after the queue and the sessions sent since the last reading; `None`
    /// when capacity is not known.
    fn free_workers(&self) -> Option<i64> {
        self.capacity.map(|c| c.free() - i64::from(self.reserved))
    }
}

/// One replica's row in the router's `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaStatus {
    pub url: String,
    pub name: String,
    /// Preferred while healthy.
    pub primary: bool,
    /// Probe history and verdict, flattened into the row.
    #[serde(flatten)]
    pub health: ReplicaHealth,
    /// Live WebSocket sessions this router has open to it.
    pub active_sessions: u64,
    /// Free workers (available minus queued minus sessions sent since the last reading);
    /// `null` when the replica's capacity is unknown.
    pub available_capacity: Option<i64>,
    /// The pool as the replica last reported it.
    pub capacity: Option<Capacity>,
    /// Found by DNS discovery rather than configured.
    pub discovered: bool,
    /// A discovered replica that left DNS: it takes no new sessions.
    pub retired: bool,
}

/// Keeps a replica's live-session count (and the sessions gauge) up while a session is
/// routed to it; dropping it ends the session, however the proxy finished.
#[derive(Debug)]
pub struct SessionGuard {
    registry: Arc<ReplicaRegistry>,
    index: usize,
}

impl SessionGuard {
    /// The replica this session went to.
    pub fn replica(&self) -> &Replica {
        self.registry.replica(self.index)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.lock(self.index).active -= 1;
        crate::observability::session_ended(&self.registry.replica(self.index).name);
    }
}

impl ReplicaRegistry {
    /// Resolves every configured replica; fails on the first bad URL (validation already
    /// rejects those, so this only fails for configs that skipped validation).
    pub fn from_config(config: &RouterConfig) -> Result<Self, FieldError> {
        let replicas = config
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let authority = r.authority().map_err(|e| {
                    FieldError::new(format!("router.replicas[{i}].{}", e.field), e.message)
                })?;
                let host = authority
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                    .unwrap_or(&authority)
                    .to_string();
                Ok(Replica {
                    name: r.display_name(),
                    url: r.url.clone(),
                    admin_url: r.admin_base().to_string(),
                    authority,
                    host,
                    tls: r.uses_tls(),
                    primary: r.primary,
                    weight: r.weight.max(1),
                    discovered: false,
                })
            })
            .collect::<Result<Vec<_>, FieldError>>()?;
        let entries = boxcar::Vec::new();
        for replica in replicas {
            entries.push(Entry {
                replica,
                state: Mutex::default(),
            });
        }
        Ok(Self {
            entries,
            policy: config.selection,
            draining: AtomicBool::new(false),
            discovering: Mutex::new(()),
        })
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, ReplicaState> {
        self.entries[i].state.lock()
    }

    /// How many replicas the router knows (retired ones included).
    pub fn len(&self) -> usize {
        self.entries.count()
    }

    /// Whether it knows none (only possible before discovery's first answer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replica `i`.
    pub fn replica(&self, i: usize) -> &Replica {
        &self.entries[i].replica
    }

    /// Whether replica `i` is retired (discovered, then gone from DNS).
    pub fn is_retired(&self, i: usize) -> bool {
        self.lock(i).retired
    }

    /// Takes discovery's newest answer, `found` (the addresses a name resolved to):
    /// addresses seen for the first time become replicas (at most `max_replicas` known in
    /// all), discovered ones missing from it are retired, retired ones back in it return.
    /// Each new replica is reached at `found`'s address, its admin listener at
    /// `admin_port`.
    pub fn discover(
        &self,
        found: &[SocketAddr],
        admin_port: u16,
        max_replicas: usize,
    ) -> DiscoveryChanges {
        let _one_at_a_time = self.discovering.lock();
        let mut changes = DiscoveryChanges::default();
        for (i, entry) in self.entries.iter() {
            if !entry.replica.discovered {
                continue;
            }
            let present = found
                .iter()
                .any(|a| a.to_string() == entry.replica.authority);
            let mut state = entry.state.lock();
            if present && state.retired {
                state.retired = false;
                changes.returned.push(i);
            } else if !present && !state.retired {
                state.retired = true;
                changes.retired.push(i);
            }
        }
        for addr in found {
            let authority = addr.to_string();
            if self
                .entries
                .iter()
                .any(|(_, e)| e.replica.authority == authority)
            {
                continue;
            }
            if self.len() >= max_replicas {
                changes.over_limit += 1;
                continue;
            }
            let host = addr.ip().to_string();
            let admin = SocketAddr::new(addr.ip(), admin_port);
            let replica = Replica {
                name: authority.clone(),
                url: format!("http://{authority}"),
                admin_url: format!("http://{admin}"),
                authority,
                host,
                tls: false,
                primary: false,
                weight: 1,
                discovered: true,
            };
            changes.added.push(self.entries.push(Entry {
                replica,
                state: Mutex::default(),
            }));
        }
        changes
    }

    /// A copy of replica `i`'s health.
    pub fn health(&self, i: usize) -> ReplicaHealth {
        self.lock(i).health.clone()
    }

    /// Applies `f` to replica `i`'s health; returns the status after it.
    pub fn update_health(&self, i: usize, f: impl FnOnce(&mut ReplicaHealth)) -> HealthStatus {
        let mut state = self.lock(i);
        f(&mut state.health);
        state.health.status
    }

    /// Records replica `i`'s capacity as just read (`None`: unreadable or not asked), which
    /// supersedes the sessions reserved since the previous reading.
    pub fn set_capacity(&self, i: usize, capacity: Option<Capacity>) {
        let mut state = self.lock(i);
        state.capacity = capacity;
        state.reserved = 0;
    }

    /// Whether any replica can take a session (drives `/readyz`).
    pub fn any_routable(&self) -> bool {
        self.can_route(&[])
    }

    /// Whether [`Self::select`] would find a replica outside `exclude`, without taking a
    /// round-robin turn.
    pub fn can_route(&self, exclude: &[usize]) -> bool {
        !self.is_draining()
            && (0..self.len()).any(|i| !exclude.contains(&i) && self.lock(i).routable())
    }

    /// Whether replica `i` may take requests now (healthy, not retired, not draining).
    pub fn can_route_to(&self, i: usize) -> bool {
        !self.is_draining() && i < self.len() && self.lock(i).routable()
    }

    /// Stops handing out replicas: the router is shutting down.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`Self::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Live sessions through this router, all replicas together.
    pub fn active_sessions(&self) -> u64 {
        (0..self.len()).map(|i| self.lock(i).active).sum()
    }

    /// Every replica with its health, sessions and capacity, for `/status`.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.entries
            .iter()
            .map(|(_, e)| {
                let (r, state) = (&e.replica, e.state.lock());
                ReplicaStatus {
                    url: r.url.clone(),
                    name: r.name.clone(),
                    primary: r.primary,
                    health: state.health.clone(),
                    active_sessions: state.active,
                    available_capacity: state.free_workers(),
                    capacity: state.capacity,
                    discovered: r.discovered,
                    retired: state.retired,
                }
            })
            .collect()
    }

    /// The replica a new session should go to under the configured policy, skipping
    /// `exclude` (replicas this session already failed to reach); `None` when no healthy
    /// replica is left or the router is draining.
    pub fn select(&self, exclude: &[usize]) -> Option<usize> {
        if self.is_draining() {
            return None;
        }
        // Every routable replica stays locked until the policy has chosen, so it sees one
        // consistent view.
        let mut routable: Vec<(usize, MutexGuard<'_, ReplicaState>)> = (0..self.len())
            .filter(|i| !exclude.contains(i))
            .map(|i| (i, self.lock(i)))
            .filter(|(_, s)| s.routable())
            .collect();
        let mut candidates: Vec<Candidate<'_>> = routable
            .iter_mut()
            .map(|(i, state)| Candidate {
                index: *i,
                primary: self.replica(*i).primary,
                weight: self.replica(*i).weight,
                active_sessions: state.active,
                free_workers: state.free_workers(),
                round_robin_credit: &mut state.round_robin_credit,
            })
            .collect();
        selection::select(self.policy, &mut candidates)
    }

    /// Counts a session against replica `i` until the guard drops, and reserves one of its
    /// free workers until its capacity is next read.
    pub fn open_session(self: &Arc<Self>, i: usize) -> SessionGuard {
        {
            let mut state = self.lock(i);
            state.active += 1;
            state.reserved += 1;
        }
        crate::observability::session_started(&self.replica(i).name);
        SessionGuard {
            registry: self.clone(),
            index: i,
        }
    }

    /// Every replica with its index: configured ones in configuration order, then the
    /// discovered ones as they appeared.
    pub fn all(&self) -> impl Iterator<Item = (usize, &Replica)> {
        self.entries.iter().map(|(i, e)| (i, &e.replica))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReplicaEndpoint;

    const T: crate::health::state::Thresholds = crate::health::state::Thresholds {
        failure: 2,
        recovery: 1,
    };

    fn endpoint(url: &str, primary: bool) -> ReplicaEndpoint {
        ReplicaEndpoint {
            url: url.into(),
            admin_url: None,
            name: None,
            primary,
            weight: 1,
        }
    }

    fn registry(policy: SelectionPolicy, replicas: Vec<ReplicaEndpoint>) -> Arc<ReplicaRegistry> {
        let config = RouterConfig {
            replicas,
            selection: policy,
            ..RouterConfig::default()
        };
        Arc::new(ReplicaRegistry::from_config(&config).unwrap())
    }

    fn healthy(registry: &ReplicaRegistry, i: usize) {
        registry.update_health(i, |h| h.success(std::time::Duration::ZERO, T));
    }

    fn down(registry: &ReplicaRegistry, i: usize) {
        for _ in 0..T.failure {
            registry.update_health(i, |h| h.failure("down".into(), T));
        }
    }

    fn capacity(available: u32, queue: u32) -> Option<Capacity> {
        Some(Capacity {
            total: 2,
            available,
            queue,
        })
    }

    fn pick(registry: &ReplicaRegistry) -> Option<&str> {
        registry
            .select(&[])
            .map(|i| registry.replica(i).authority.as_str())
    }

    #[test]
    fn prefers_the_healthy_primary_wherever_it_is_listed() {
        let r = registry(
            SelectionPolicy::PrimaryFirst,
            vec![endpoint("http://a:1", false), endpoint("https://b:2", true)],
        );
        assert!(r.select(&[]).is_none(), "unknown replicas take no sessions");
        healthy(&r, 0);
        healthy(&r, 1);
        let chosen = r.replica(r.select(&[]).unwrap());
        assert_eq!(chosen.authority, "b:2");
        assert!(chosen.tls);
        assert_eq!(chosen.host, "b");
        assert_eq!(chosen.name, "b:2");
    }

    #[test]
    fn falls_back_to_a_healthy_secondary_and_back() {
        let r = registry(
            SelectionPolicy::PrimaryFirst,
            vec![endpoint("http://a:1", true), endpoint("http://b:2", false)],
        );
        healthy(&r, 0);
        healthy(&r, 1);
        assert_eq!(pick(&r), Some("a:1"));
        down(&r, 0);
        assert_eq!(pick(&r), Some("b:2"));
        down(&r, 1);
        assert_eq!(pick(&r), None);
        assert!(!r.any_routable());
        healthy(&r, 0);
        assert_eq!(pick(&r), Some("a:1"));
        let status = r.status();
        assert_eq!(status[1].health.status, HealthStatus::Unhealthy);
        assert_eq!(status[1].health.last_error.as_deref(), Some("down"));
    }

    #[test]
    fn a_full_primary_gives_way_to_the_replica_with_most_room() {
        let r = registry(
            SelectionPolicy::PrimaryFirst,
            vec![
                endpoint("http://p:1", true),
                endpoint("http://b:2", false),
                endpoint("http://c:3", false),
            ],
        );
        (0..3).for_each(|i| healthy(&r, i));
        r.set_capacity(0, capacity(0, 0));
        r.set_capacity(1, capacity(1, 0));
        r.set_capacity(2, capacity(2, 0));
        assert_eq!(pick(&r), Some("c:3"));
        // Sessions sent since the last reading use up room until the next one.
        let _one = r.open_session(2);
        assert_eq!(r.status()[2].available_capacity, Some(1));
        assert_eq!(pick(&r), Some("b:2"), "tie at 1 goes to config order");
        let _two = r.open_session(1);
        let _three = r.open_session(2);
        // Everyone is full: the shortest queue wins, ties to the primary.
        assert_eq!(pick(&r), Some("p:1"));
        r.set_capacity(0, capacity(0, 3));
        assert_eq!(pick(&r), Some("b:2"));
        // A fresh reading supersedes the reservations.
        r.set_capacity(0, capacity(1, 0));
        assert_eq!(pick(&r), Some("p:1"));
        assert_eq!(r.status()[2].active_sessions, 2);
    }

    #[test]
    fn unknown_capacity_counts_as_room() {
        let r = registry(
            SelectionPolicy::PrimaryFirst,
            vec![endpoint("http://p:1", true), endpoint("http://b:2", false)],
        );
        healthy(&r, 0);
        healthy(&r, 1);
        r.set_capacity(1, capacity(2, 0));
        assert_eq!(pick(&r), Some("p:1"));
        assert_eq!(r.status()[0].available_capacity, None);
    }

    #[test]
    fn least_sessions_weighs_live_sessions_and_frees_them_on_drop() {
        let mut heavy = endpoint("http://b:2", false);
        heavy.weight = 2;
        let r = registry(
            SelectionPolicy::LeastSessions,
            vec![endpoint("http://a:1", false), heavy],
        );
        healthy(&r, 0);
        healthy(&r, 1);
        let mut sessions = Vec::new();
        let mut picks = Vec::new();
        for _ in 0..6 {
            let i = r.select(&[]).unwrap();
            picks.push(i);
            sessions.push(r.open_session(i));
        }
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 4, "{picks:?}");
        assert_eq!(r.active_sessions(), 6);
        sessions.retain(|s| s.replica().authority != "a:1");
        assert_eq!(r.status()[0].active_sessions, 0);
        assert_eq!(pick(&r), Some("a:1"));
    }

    #[test]
    fn round_robin_spreads_by_weight_over_healthy_replicas() {
        let mut heavy = endpoint("http://b:2", false);
        heavy.weight = 2;
        let r = registry(
            SelectionPolicy::RoundRobin,
            vec![
                endpoint("http://a:1", false),
                heavy,
                endpoint("http://c:3", false),
            ],
        );
        (0..3).for_each(|i| healthy(&r, i));
        let picks: Vec<usize> = (0..8).map(|_| r.select(&[]).unwrap()).collect();
        assert_eq!(picks, vec![1, 0, 2, 1, 1, 0, 2, 1]);
        down(&r, 1);
        let picks: Vec<usize> = (0..4).map(|_| r.select(&[]).unwrap()).collect();
        assert!(picks.contains(&0) && picks.contains(&2) && !picks.contains(&1));
    }

    #[test]
    fn discovery_adds_retires_and_brings_back_replicas_with_stable_indices() {
        let r = registry(
            SelectionPolicy::PrimaryFirst,
            vec![endpoint("http://fixed:1", true)],
        );
        let a: SocketAddr = "10.0.0.1:8000".parse().unwrap();
        let b: SocketAddr = "[fd00::2]:8000".parse().unwrap();
        let changes = r.discover(&[a, b], 8001, 16);
        assert_eq!(changes.added, vec![1, 2]);
        assert_eq!(r.replica(1).url, "http://10.0.0.1:8000");
        assert_eq!(r.replica(1).admin_url, "http://10.0.0.1:8001");
        assert_eq!(r.replica(2).authority, "[fd00::2]:8000");
        assert_eq!(r.replica(2).host, "fd00::2");
        assert!(r.replica(2).discovered && !r.replica(0).discovered);
        // New replicas start unknown: no sessions before a good probe.
        assert_eq!(r.select(&[0]), None);
        healthy(&r, 1);
        healthy(&r, 2);
        assert_eq!(r.select(&[0, 1]), Some(2));
        // The same answer again changes nothing.
        assert_eq!(r.discover(&[b, a], 8001, 16), DiscoveryChanges::default());
        // `a` leaves DNS: retired, not routable, still listed; its session goes on.
        let session = r.open_session(1);
        let changes = r.discover(&[b], 8001, 16);
        assert_eq!(changes.retired, vec![1]);
        assert!(r.is_retired(1));
        assert_eq!(r.select(&[0, 2]), None);
        let row = &r.status()[1];
        assert!(row.retired && row.discovered && row.active_sessions == 1);
        drop(session);
        // Configured replicas are never retired by discovery.
        assert!(!r.is_retired(0));
        // `a` comes back under its old index.
        let changes = r.discover(&[a, b], 8001, 16);
        assert_eq!(changes.returned, vec![1]);
        assert_eq!(r.select(&[0, 2]), Some(1));
        assert_eq!(r.len(), 3);
        // At most `max_replicas` known: new addresses beyond it are skipped.
        let c: SocketAddr = "10.0.0.3:8000".parse().unwrap();
        let changes = r.discover(&[a, b, c], 8001, 3);
        assert_eq!((changes.added.len(), changes.over_limit), (0, 1));
    }

    #[test]
    fn excluded_replicas_and_draining_routers_are_skipped() {
        let r = registry(
            SelectionPolicy::PrimaryFirst,
            vec![endpoint("http://a:1", true), endpoint("http://b:2", false)],
        );
        healthy(&r, 0);
        healthy(&r, 1);
        assert_eq!(r.select(&[0]), Some(1));
        assert_eq!(r.select(&[0, 1]), None);
        assert!(r.any_routable());
        r.start_draining();
        assert_eq!(r.select(&[]), None);
        assert!(!r.any_routable(), "/readyz turns 503 while draining");
    }
}
