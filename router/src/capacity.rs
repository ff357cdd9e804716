//! How much work a replica can take right now, read from its `/status` (FastVideo's pool
//! status shape) after each successful health probe.
//!
//! A health probe only says "alive"; a live replica whose workers are all busy would queue a
//! new session behind others while another replica idles. Reading the pool status lets
//! selection send the session where a worker is free.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A replica's pool as it last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Workers in all.
    #[serde(rename = "total_gpus")]
    pub total: u32,
    /// Ready workers serving nobody.
    #[serde(rename = "available_gpus")]
    pub available: u32,
    /// Sessions waiting for a worker.
    #[serde(rename = "queue_size")]
    pub queue: u32,
}

impl Capacity {
    /// Free workers left once the queue is served: negative when sessions wait.
    pub fn free(&self) -> i64 {
        i64::from(self.available) - i64::from(self.queue)
    }
}

/// Reads `url` (a replica's status endpoint) within `timeout`.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Capacity, String> {
    let response = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("capacity unreadable: {e}"))?;
    if !response.status().is_success() {
        return Err(format!(
            "capacity unreadable: HTTP {}",
            response.status().as_u16()
        ));
    }
    response
        .json::<Capacity>()
        .await
        .map_err(|e| format!("capacity unreadable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_replica_pool_status_and_ignores_the_rest() {
        let body = r#"{"total_gpus":2,"available_gpus":1,"queue_size":3,
            "warmup_enabled":true,"gpu_status":{"0":{"ready":true}}}"#;
        let c: Capacity = serde_json::from_str(body).unwrap();
        assert_eq!(
            c,
            Capacity {
                total: 2,
                available: 1,
                queue: 3
            }
        );
        assert_eq!(c.free(), -2);
    }
}
