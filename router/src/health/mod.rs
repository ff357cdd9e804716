//! Replica health, in two layers so neither needs the other's dependencies:
//!
//! - [`state`]: the per-replica state machine (`unknown` → `healthy` ⇄ `unhealthy`), pure
//!   bookkeeping that the registry stores;
//! - [`checker`]: the pingora background service that probes the replicas every interval and
//!   feeds the results into the registry.
//!
//! pingora starts backends healthy; we do not. A replica starts `unknown` and takes no
//! session until a probe succeeds.

pub mod checker;
pub mod state;
