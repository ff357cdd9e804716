//! Framecast's router: the front door that hands each WebSocket session to a replica.
//!
//! Built on pingora: [`server::RouterServer`] assembles the proxy from a validated
//! [`config::RouterConfig`]; [`proxy::StreamProxy`] picks the replica for each request from
//! the [`registry::ReplicaRegistry`].

pub mod config;
pub mod proxy;
pub mod registry;
pub mod server;
