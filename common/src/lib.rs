//! Pieces both Framecast binaries share, so the router and the replica load
//! configuration, log and export metrics the same way.

pub mod config;
pub mod logging;
pub mod metrics;
