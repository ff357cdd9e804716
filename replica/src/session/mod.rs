//! Sessions: one per WebSocket. [`state`] holds the lifecycle and its transition table.

pub mod state;

pub use state::{InvalidTransition, SessionState};
