//! Which replica holds a broadcast: `GET /v1/broadcast/{id}/…` must reach the replica whose
//! encoder workers write that stream's files. The first request for an id asks the routable
//! replicas for its master playlist (concurrently, one short request each); the answer is
//! kept in a bounded cache, so the segments and playlist refreshes that follow go straight
//! to the owner.

use std::time::Duration;

use framecast_common::protocol::valid_broadcast_id;
use hashlink::LruCache;
use parking_lot::Mutex;

use crate::registry::ReplicaRegistry;

/// Broadcast ids remembered at most.
const CACHE_ENTRIES: usize = 1024;
/// How long the lookup waits for each replica.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The id of `/v1/broadcast/{id}/…`, when `path` is such a path with a plausible id.
pub fn broadcast_id(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/broadcast/")?;
    let (id, file) = rest.split_once('/')?;
    (!file.is_empty() && valid_broadcast_id(id)).then_some(id)
}

/// Broadcast id → replica index.
#[derive(Debug)]
pub struct BroadcastOwners {
    client: reqwest::Client,
    cache: Mutex<LruCache<String, usize>>,
}

impl Default for BroadcastOwners {
    fn default() -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(LOOKUP_TIMEOUT)
                .build()
                .expect("a reqwest client with default TLS settings builds"),
            cache: Mutex::new(LruCache::new(CACHE_ENTRIES)),
        }
    }
}

impl BroadcastOwners {
    /// The replica serving broadcast `id`, if a routable one does.
    pub async fn owner(&self, registry: &ReplicaRegistry, id: &str) -> Option<usize> {
        let cached = self.cache.lock().get(id).copied();
        if let Some(index) = cached
            && registry.can_route_to(index)
        {
            return Some(index);
        }
        let asks = registry
            .all()
            .filter(|(i, _)| registry.can_route_to(*i))
            .map(|(i, replica)| {
                let url = format!(
                    "{}/v1/broadcast/{id}/master.m3u8",
                    replica.url.trim_end_matches('/')
                );
                let client = self.client.clone();
                async move {
                    let ok = client
                        .get(url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    ok.then_some(i)
                }
            });
        let found = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .next();
        if let Some(index) = found {
            self.cache.lock().insert(id.to_string(), index);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_broadcast_paths_with_plausible_ids_are_looked_up() {
        assert_eq!(
            broadcast_id("/v1/broadcast/ab12-x/master.m3u8"),
            Some("ab12-x")
        );
        assert_eq!(
            broadcast_id("/v1/broadcast/ab/full/seg00001.m4s"),
            Some("ab")
        );
        for path in [
            "/v1/stream",
            "/v1/broadcast/",
            "/v1/broadcast/ab",
            "/v1/broadcast/ab/",
            "/v1/broadcast/../x/master.m3u8",
            "/v1/broadcast/a%2Fb/master.m3u8",
        ] {
            assert_eq!(broadcast_id(path), None, "{path}");
        }
    }
}
