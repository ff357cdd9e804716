//! Framecast's replica: generates video with libtorch, encodes it to fragmented MP4 with
//! GStreamer and streams it over WebSocket.
//!
//! [`config`] holds the layered settings, [`device`] picks and self-tests the libtorch
//! device, [`media`] owns GStreamer, and [`server`] is the axum HTTP/WebSocket front.

pub mod config;
pub mod device;
pub mod generate;
pub mod media;
pub mod observability;
pub mod pool;
pub mod server;
pub mod session;
pub mod store;
