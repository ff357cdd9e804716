//! Frames to fragmented MP4 with GStreamer.
//!
//! [`elements`] initialises GStreamer once, registers the statically linked fMP4 muxer and
//! checks that every element a pipeline needs exists, naming the Debian package that
//! provides a missing one.

pub mod elements;

/// What went wrong in the media layer; each variant names the element involved.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// GStreamer or the statically linked fMP4 plugin failed to initialise.
    #[error("GStreamer initialisation: {0}")]
    Init(String),
    /// An element factory is not installed.
    #[error("GStreamer element `{element}` is missing (install {provider})")]
    MissingElement {
        /// The factory name, such as `x264enc`.
        element: String,
        /// Where the element comes from.
        provider: &'static str,
    },
}
