//! Pieces both Framecast binaries share, so the router and the replica load
//! configuration, log, export metrics and speak the `/v1/stream` protocol the same way.

pub mod auth;
pub mod config;
pub mod dreamverse;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod startup;
