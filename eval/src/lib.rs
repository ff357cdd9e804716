//! `framecast-eval`: does the served video follow its prompts? It drives a prompt set through
//! a running stack over WebSocket ([`client`]), records each stream's fMP4, decodes the
//! recordings with a bounded prefetch pool ([`pool`], [`decode`]), measures each stream against
//! its caption ([`analyze`], [`score`]), and writes JSON plus an HTML contact sheet
//! ([`report`]). [`run`] puts these together; [`world`] reads the trainer's ground truth. [`timing`] measures
//! only the serving figures, for models with nothing to score.

pub mod analyze;
pub mod client;
pub mod decode;
pub mod pool;
pub mod report;
pub mod run;
pub mod score;
pub mod timing;
pub mod world;
