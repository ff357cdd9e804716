//! Per-client limits at the front door: concurrent WebSocket sessions and new sessions per
//! minute for each client address, so one address cannot take every replica's workers.
//!
//! The client address is the TCP peer's, unless that peer is a configured trusted proxy:
//! then it is the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (a
//! client can prepend anything to that header, but not what the proxies appended).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use parking_lot::Mutex;

use crate::config::ClientLimitsConfig;

/// The window `new_sessions_per_ip_per_minute` counts in.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Why a client's new session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientRefusal {
    /// The address holds `max_sessions_per_ip` sessions already.
    #[error("this address already has {0} open sessions, the most allowed")]
    TooManySessions(u32),
    /// The address opened `new_sessions_per_ip_per_minute` sessions within a minute.
    #[error("this address opened {0} sessions within a minute, the most allowed")]
    TooFast(u32),
}

/// Counts sessions per client address.
#[derive(Debug)]
pub struct ClientLimiter {
    max_sessions: u32,
    per_minute: u32,
    trusted: Vec<IpNet>,
    clients: Arc<Mutex<HashMap<IpAddr, ClientCount>>>,
}

#[derive(Debug)]
struct ClientCount {
    open: u32,
    window_start: Instant,
    opened_in_window: u32,
}

/// One admitted session of a client; dropping it frees the slot.
#[derive(Debug)]
pub struct ClientSlot {
    ip: IpAddr,
    clients: Arc<Mutex<HashMap<IpAddr, ClientCount>>>,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut clients = self.clients.lock();
        if let Some(count) = clients.get_mut(&self.ip) {
            count.open = count.open.saturating_sub(1);
            // Forget idle addresses once their rate window is over, so the map stays small.
            if count.open == 0 && count.window_start.elapsed() >= RATE_WINDOW {
                clients.remove(&self.ip);
            }
        }
    }
}

impl ClientLimiter {
    /// A limiter as `config` says; the trusted proxies were checked by config validation.
    pub fn new(config: &ClientLimitsConfig) -> Self {
        Self {
            max_sessions: config.max_sessions_per_ip,
            per_minute: config.new_sessions_per_ip_per_minute,
            trusted: config.trusted_networks(),
            clients: Arc::default(),
        }
    }

    /// The client behind a connection from `peer` carrying `forwarded_for`.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let Some(header) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for entry in header.rsplit(',') {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) if self.is_trusted(ip) => client = ip,
                Ok(ip) => return ip,
                // A malformed entry ends what can be believed.
                Err(_) => return client,
            }
        }
        client
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Admits one more session of `ip`, or says which limit it hit.
    pub fn admit(&self, ip: IpAddr) -> Result<ClientSlot, ClientRefusal> {
        let mut clients = self.clients.lock();
        let now = Instant::now();
        let count = clients.entry(ip).or_insert(ClientCount {
            open: 0,
            window_start: now,
            opened_in_window: 0,
        });
        if now.duration_since(count.window_start) >= RATE_WINDOW {
            count.window_start = now;
            count.opened_in_window = 0;
        }
        if self.max_sessions > 0 && count.open >= self.max_sessions {
            return Err(ClientRefusal::TooManySessions(self.max_sessions));
        }
        if self.per_minute > 0 && count.opened_in_window >= self.per_minute {
            return Err(ClientRefusal::TooFast(self.per_minute));
        }
        count.open += 1;
        count.opened_in_window += 1;
        Ok(ClientSlot {
            ip,
            clients: self.clients.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: u32, per_minute: u32, trusted: &[&str]) -> ClientLimiter {
        ClientLimiter::new(&ClientLimitsConfig {
            max_sessions_per_ip: max,
            new_sessions_per_ip_per_minute: per_minute,
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn concurrent_sessions_are_bounded_per_address_and_freed_on_drop() {
        let l = limiter(2, 0, &[]);
        let a = l.admit(ip("10.0.0.1")).unwrap();
        let _b = l.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            l.admit(ip("10.0.0.1")).unwrap_err(),
            ClientRefusal::TooManySessions(2)
        );
        assert!(
            l.admit(ip("10.0.0.2")).is_ok(),
            "other addresses are not affected"
        );
        drop(a);
        assert!(l.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn new_sessions_per_minute_are_bounded_even_when_each_closes() {
        let l = limiter(0, 3, &[]);
        for _ in 0..3 {
            drop(l.admit(ip("10.0.0.1")).unwrap());
        }
        assert_eq!(
            l.admit(ip("10.0.0.1")).unwrap_err(),
            ClientRefusal::TooFast(3)
        );
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let l = limiter(0, 0, &[]);
        let slots: Vec<_> = (0..500).map(|_| l.admit(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(slots.len(), 500);
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let l = limiter(1, 0, &["10.1.0.0/16", "192.168.1.7"]);
        // An untrusted peer's header is ignored: it could say anything.
        assert_eq!(
            l.client_ip(ip("203.0.113.9"), Some("1.2.3.4")),
            ip("203.0.113.9")
        );
        // Behind a trusted proxy: the rightmost address that is not a proxy.
        assert_eq!(
            l.client_ip(ip("10.1.2.3"), Some("6.6.6.6, 198.51.100.4, 192.168.1.7")),
            ip("198.51.100.4")
        );
        assert_eq!(l.client_ip(ip("10.1.2.3"), None), ip("10.1.2.3"));
        assert_eq!(
            l.client_ip(ip("10.1.2.3"), Some("junk, 198.51.100.4")),
            ip("198.51.100.4")
        );
        assert_eq!(
            l.client_ip(ip("10.1.2.3"), Some("198.51.100.4, junk")),
            ip("10.1.2.3")
        );
    }
}
