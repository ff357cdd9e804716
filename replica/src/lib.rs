//! Framecast's replica: generates video with libtorch, encodes it to fragmented MP4 with
//! GStreamer and streams it over WebSocket.
//!
//! Layers import only the ones below them (a test in `tests/layering.rs` holds them to it):
//!
//! ```text
//! server, worker_process   the HTTP/WebSocket front; the `framecast-replica worker` process
//! session                  one protocol loop per WebSocket: admission, worker binding, messages
//! pool                     workers (in-process or child processes) and the FIFO queue for them
//! pipeline                 one session's generation and media threads
//! generate, media          generators (Wan2.1 in tch, the mock); the GStreamer fMP4 encoder
//! config, device, store,   settings, the libtorch device probe, continuation-state stores,
//! status, observability,   what /status reports, metric names and recorders, the LLM
//! prompt                   prompt pipeline (LLM providers, operations, safety filter)
//! ```

pub mod broadcast;
pub mod config;
pub mod device;
pub mod device_check;
pub mod generate;
pub mod media;
pub mod observability;
pub mod pipeline;
pub mod pool;
pub mod prompt;
pub mod server;
pub mod session;
pub mod status;
pub mod store;
pub mod worker_process;
