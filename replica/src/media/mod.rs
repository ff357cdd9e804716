//! Frames to fragmented MP4 with GStreamer.
//!
//! [`Fmp4Encoder`] owns one encoding pipeline per session and one muxing pipeline per
//! segment: `pipeline` builds both from [`EncoderSettings`], `chunks` turns a muxer's bytes
//! into [`MediaChunk`]s, [`boxes`] cuts on box boundaries, [`codec`] builds the MSE codec
//! string from what was produced, and [`elements`] initialises GStreamer and names the
//! package behind a missing element.

pub mod boxes;
mod chunks;
pub mod codec;
pub mod elements;
pub mod encoder;
mod pipeline;
mod settings;

use std::time::Duration;

pub use crate::config::{AudioEncoderKind, H264Profile};
pub use boxes::ChunkKind;
pub use chunks::MediaChunk;
pub use encoder::Fmp4Encoder;
pub use pipeline::video_encoder_name;
pub use settings::{AudioSettings, EncoderSettings};

/// What went wrong in the media layer; variants name the element or input involved.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// Encoder settings that no pipeline can honour.
    #[error("invalid encoder settings: {0}")]
    InvalidSettings(String),
    /// An element reported an error (or refused data).
    #[error("GStreamer element `{element}` failed: {message}")]
    Element {
        /// Name of the element that raised the error.
        element: String,
        /// GStreamer's message and debug detail.
        message: String,
    },
    /// A frame whose length does not match the configured size.
    #[error("frame has {got} bytes, expected {expected} (RGB24 {width}x{height})")]
    FrameSize {
        /// `width * height * 3`.
        expected: usize,
        /// What was handed in.
        got: usize,
        /// Configured width.
        width: u32,
        /// Configured height.
        height: u32,
    },
    /// Audio handed to an encoder built without an audio track.
    #[error("this encoder has no audio track")]
    NoAudioTrack,
    /// Interleaved audio whose length is not a multiple of the channel count.
    #[error("{samples} audio samples do not divide into {channels} channels")]
    AudioLength {
        /// Samples handed in.
        samples: usize,
        /// Configured channels.
        channels: u32,
    },
    /// A bounded wait ran out.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long we waited.
        after: Duration,
    },
}
