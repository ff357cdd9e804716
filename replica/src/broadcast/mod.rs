//! Broadcast: one generated stream for many viewers, as an ABR ladder of CMAF segments listed
//! in live HLS playlists, so ordinary HTTP caches and CDNs can carry it. Each rung (rendition)
//! is encoded by parallel encoder workers that claim whole segments from the rung's bounded
//! queue; every worker contributing to a rung must match the rung's codec invariant.

pub mod invariant;
pub mod ladder;
pub mod playlist;
pub mod queue;
pub mod rung;
pub mod worker;

pub use ladder::{BroadcastError, Ladder, LadderPlan};
