//! What an encoder is built from: frame geometry, codec choices, the optional audio track.

use std::time::Duration;

use super::MediaError;
use crate::config::{AudioEncoderKind, H264Profile, MediaSettings, VideoEncoderKind};

/// The optional audio track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSettings {
    /// Samples per second per channel of the PCM handed in.
    pub sample_rate: u32,
    /// Interleaved channels of the PCM handed in.
    pub channels: u32,
    /// Which encoder produces the track.
    pub encoder: AudioEncoderKind,
}

/// Everything the pipeline is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderSettings {
    /// Frame width in pixels (even).
    pub width: u32,
    /// Frame height in pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Frames per GOP and per fMP4 fragment.
    pub frames_per_fragment: u32,
    /// Which H.264 encoder to use.
    pub video_encoder: VideoEncoderKind,
    /// x264 `speed-preset`.
    pub x264_speed_preset: String,
    /// Target bitrate in kbit/s.
    pub bitrate_kbps: u32,
    /// Requested H.264 profile.
    pub profile: H264Profile,
    /// The audio track, if any.
    pub audio: Option<AudioSettings>,
    /// Longest time any single call waits for the pipeline.
    pub wait_timeout: Duration,
}

impl EncoderSettings {
    /// Settings for `width`x`height` at `fps` with fragments of about `fragment_ms`.
    pub fn new(width: u32, height: u32, fps: u32, fragment_ms: u32) -> Self {
        let frames_per_fragment = ((fps * fragment_ms).div_ceil(1000)).max(1);
        Self {
            width,
            height,
            fps,
            frames_per_fragment,
            video_encoder: VideoEncoderKind::X264,
            x264_speed_preset: "ultrafast".into(),
            bitrate_kbps: 2500,
            profile: H264Profile::default(),
            audio: None,
            wait_timeout: Duration::from_secs(10),
        }
    }

    /// Settings for `width`x`height` at `fps` with the operator's `media` configuration.
    pub fn from_config(media: &MediaSettings, width: u32, height: u32, fps: u32) -> Self {
        Self {
            video_encoder: media.video_encoder,
            x264_speed_preset: media.x264_speed_preset.clone(),
            bitrate_kbps: media.bitrate_kbps,
            profile: media.h264_profile,
            ..Self::new(width, height, fps, media.fragment_duration_ms)
        }
    }

    /// Bytes in one RGB24 frame.
    pub fn frame_bytes(&self) -> usize {
        self.width as usize * self.height as usize * 3
    }

    pub(super) fn frame_duration_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.fps)
    }

    /// Presentation time of frame `n` in ns. Computed from `n`, not summed per frame, so
    /// rounding errors do not add up; rounded up, so the muxer (which rounds down into a
    /// track timescale that is a multiple of the frame rate) gets frame `n` exactly.
    pub(super) fn frame_pts_ns(&self, n: u64) -> u64 {
        (n * 1_000_000_000).div_ceil(u64::from(self.fps))
    }

    pub(super) fn validate(&self) -> Result<(), MediaError> {
        let bad = |reason: String| Err(MediaError::InvalidSettings(reason));
        if self.width == 0
            || self.height == 0
            || !self.width.is_multiple_of(2)
            || !self.height.is_multiple_of(2)
        {
            return bad(format!(
                "frame size {}x{} must be non-zero and even (4:2:0 chroma)",
                self.width, self.height
            ));
        }
        if self.fps == 0 || self.fps > 240 {
            return bad(format!("fps {} must be between 1 and 240", self.fps));
        }
        if self.frames_per_fragment == 0 {
            return bad("frames_per_fragment must be at least 1".into());
        }
        if let Some(a) = self.audio
            && (a.sample_rate == 0 || a.channels == 0 || a.channels > 8)
        {
            return bad(format!(
                "audio {} Hz x {} channels is not supported",
                a.sample_rate, a.channels
            ));
        }
        Ok(())
    }
}
