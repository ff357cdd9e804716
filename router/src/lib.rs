//! Framecast's router: the front door that hands each WebSocket session to a replica.
//!
//! Built on pingora: [`server::RouterServer`] assembles the proxy from a validated
//! [`config::RouterConfig`]; [`health::checker::HealthChecker`] probes the replicas and
//! records their [`health::state`] in the [`registry::ReplicaRegistry`];
//! [`proxy::StreamProxy`] answers the [`admin`] endpoints and sends everything else to the
//! healthy replica the registry picks with a [`selection`] policy (using the [`capacity`]
//! replicas report); [`shutdown`] drains open sessions on SIGTERM. When a replica dies
//! mid-session, [`upstream_loss`] (following frames with [`frame_boundaries`]) finishes the
//! client's frame and tells it to reconnect instead of dropping it.
//!
//! Modules, lowest layer first; each uses only modules of lower layers, never one above it
//! (`tests/layering.rs` checks this):
//!
//! 1. `config`
//! 2. `capacity`, `client_limits`, `frame_boundaries`, `observability`
//! 3. `refusal`, `health::state`, `selection`
//! 4. `registry`, `upstream_loss`
//! 5. `health::checker`, `admin`, `shutdown`, `broadcast_owner` (which replica serves a
//!    broadcast's files)
//! 6. `proxy`
//! 7. `server`

pub mod admin;
pub mod broadcast_owner;
pub mod capacity;
pub mod client_limits;
pub mod config;
pub mod discovery;
pub mod frame_boundaries;
pub mod health;
pub mod observability;
pub mod proxy;
pub mod refusal;
pub mod registry;
pub mod resolve;
pub mod selection;
pub mod server;
pub mod shutdown;
pub mod upstream_loss;
