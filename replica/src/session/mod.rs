//! Sessions: one per WebSocket.
//!
//! [`state`] holds the lifecycle and its transition table, [`controller`] the protocol loop
//! of one session, [`schedule`] which segment comes next, [`pipeline`] the generation and
//! media threads behind it, [`log`] the per-session event log and [`initial_image`] the
//! checks on an opening image, and [`writer`] the task that writes to the socket.

pub mod controller;
pub mod initial_image;
pub mod log;
pub mod pipeline;
pub mod schedule;
pub mod state;
pub mod writer;

use framecast_common::protocol::ServerMessage;

pub use controller::{SessionContext, run_session};
pub use state::{InvalidTransition, SessionState};

/// WebSocket close codes the replica uses.
pub mod close_code {
    /// Normal end.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (draining).
    pub const GOING_AWAY: u16 = 1001;
    /// The first frame was not `session_init_v2`.
    pub const UNSUPPORTED: u16 = 1003;
    /// A message exceeded the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error (media or worker failure).
    pub const INTERNAL: u16 = 1011;
    /// Try again later (capacity).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A frame for the client, queued in the session's bounded send queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A JSON control message.
    Text(String),
    /// fMP4 bytes (whole boxes).
    Binary(Vec<u8>),
    /// Close the connection with a code and reason; nothing is sent after it.
    Close(u16, String),
}

impl Outgoing {
    /// A control message as JSON text.
    pub fn text(msg: &ServerMessage) -> Self {
        Outgoing::Text(msg.to_json())
    }
}
