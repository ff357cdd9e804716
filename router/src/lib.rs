//! Framecast's router: the front door that hands each WebSocket session to a replica.
//!
//! Built on pingora: [`server::RouterServer`] assembles the proxy from a validated
//! [`config::RouterConfig`]; [`health::HealthChecker`] probes the replicas; [`proxy::StreamProxy`]
//! answers the [`admin`] endpoints and sends everything else to the healthy replica the
//! [`registry::ReplicaRegistry`] selects (using the [`capacity`] replicas report);
//! [`shutdown`] drains open sessions on SIGTERM.

pub mod admin;
pub mod capacity;
pub mod config;
pub mod health;
pub mod observability;
pub mod proxy;
pub mod refusal;
pub mod registry;
pub mod server;
pub mod shutdown;
