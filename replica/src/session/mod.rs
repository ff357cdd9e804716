//! Sessions: one per WebSocket.
//!
//! [`controller`] holds the session value and the order of its stages: `admission` (the
//! opening frame and capacity), `binding` (queueing for a worker and starting the
//! pipeline there) and `event_loop` (client messages and pipeline events). [`state`] is the
//! lifecycle and its transition table, [`schedule`] which segment comes next, [`log`] the
//! per-session event log, [`initial_image`] the checks on an opening image, and [`writer`]
//! the task that writes to the socket, which [`resume_gate`] holds until a
//! segment's resume record is stored. [`dreamverse`] serves the Dreamverse protocol (`/ws`)
//! with the same pieces.

mod admission;
mod binding;
mod context;
pub mod controller;
mod drain;
pub mod dreamverse;
mod event_loop;
pub mod initial_image;
pub mod limits;
pub mod log;
mod prompt_steps;
pub mod resume;
pub mod resume_gate;
pub mod schedule;
pub mod state;
pub mod writer;

pub use crate::pipeline::Outgoing;
pub use context::SessionContext;
pub use controller::run_session;
pub use drain::Drain;
pub use dreamverse::run_dreamverse_session;
pub use state::{InvalidTransition, SessionState};

/// WebSocket close codes the replica uses.
pub mod close_code {
    /// Normal end.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (draining).
    pub const GOING_AWAY: u16 = 1001;
    /// The first frame was not `session_init_v2`.
    pub const UNSUPPORTED: u16 = 1003;
    /// A policy refusal (Dreamverse: the safety filter blocked an opening prompt).
    pub const POLICY: u16 = 1008;
    /// A message exceeded the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error (media or worker failure).
    pub const INTERNAL: u16 = 1011;
    /// Try again later (capacity).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}
