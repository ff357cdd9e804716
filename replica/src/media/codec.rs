//! The MSE codec string (`video/mp4; codecs="avc1.PPCCLL,opus"`) built from what the
//! encoders actually produced, never from what we asked for.
//!
//! The reference announces a fixed codec string that does not match its stream; browsers
//! then reject or mis-decode it. We read the H.264 profile/constraints/level from the SPS
//! bytes in the `avcC` record and name an audio codec only when an audio track exists.

use gstreamer as gst;

/// Audio codecs the muxer can carry for browsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// Opus (`opus` in MSE).
    Opus,
    /// AAC; the string carries the audio object type (`mp4a.40.2` for AAC-LC).
    Aac {
        /// MPEG-4 audio object type (2 = AAC-LC).
        object_type: u8,
    },
}

impl AudioCodec {
    /// The RFC 6381 codec name.
    pub fn codec_string(self) -> String {
        match self {
            AudioCodec::Opus => "opus".into(),
            AudioCodec::Aac { object_type } => format!("mp4a.40.{object_type}"),
        }
    }
}

/// `avc1.PPCCLL` from an `AVCDecoderConfigurationRecord` (the caps' `codec_data`).
pub fn avc1_from_avcc(avcc: &[u8]) -> Option<String> {
    // configurationVersion (1), AVCProfileIndication, profile_compatibility, AVCLevelIndication
    if avcc.len() < 4 || avcc[0] != 1 {
        return None;
    }
    Some(format!(
        "avc1.{:02X}{:02X}{:02X}",
        avcc[1], avcc[2], avcc[3]
    ))
}

/// The AAC audio object type from an `AudioSpecificConfig` (first 5 bits).
pub fn aac_object_type(asc: &[u8]) -> Option<u8> {
    let aot = asc.first()? >> 3;
    (aot != 0 && aot != 31).then_some(aot)
}

/// Reads `codec_data` as bytes from caps.
fn codec_data(caps: &gst::CapsRef) -> Option<Vec<u8>> {
    let s = caps.structure(0)?;
    let buffer = s.get::<gst::Buffer>("codec_data").ok()?;
    let map = buffer.map_readable().ok()?;
    Some(map.as_slice().to_vec())
}

/// The video codec string from the caps on the muxer's video input.
pub fn video_codec_from_caps(caps: &gst::CapsRef) -> Option<String> {
    let s = caps.structure(0)?;
    if s.name() != "video/x-h264" {
        return None;
    }
    avc1_from_avcc(&codec_data(caps)?)
}

/// The audio codec from the caps on the muxer's audio input.
pub fn audio_codec_from_caps(caps: &gst::CapsRef) -> Option<AudioCodec> {
    let s = caps.structure(0)?;
    match s.name().as_str() {
        "audio/x-opus" => Some(AudioCodec::Opus),
        "audio/mpeg" => {
            let object_type = codec_data(caps)
                .as_deref()
                .and_then(aac_object_type)
                .unwrap_or(2);
            Some(AudioCodec::Aac { object_type })
        }
        _ => None,
    }
}

/// `video/mp4; codecs="…"` for `MediaSource.addSourceBuffer`.
pub fn mse_mime(video: &str, audio: Option<AudioCodec>) -> String {
    match audio {
        Some(a) => format!("video/mp4; codecs=\"{video},{}\"", a.codec_string()),
        None => format!("video/mp4; codecs=\"{video}\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc1_string_comes_from_the_record_bytes() {
        // Constrained baseline (66, constraint_set1), level 3.1.
        assert_eq!(
            avc1_from_avcc(&[1, 0x42, 0xC0, 0x1F, 0xFF]).as_deref(),
            Some("avc1.42C01F")
        );
        // High profile, level 4.0.
        assert_eq!(
            avc1_from_avcc(&[1, 0x64, 0x00, 0x28]).as_deref(),
            Some("avc1.640028")
        );
        assert_eq!(avc1_from_avcc(&[0, 0x42, 0xC0, 0x1F]), None, "bad version");
        assert_eq!(avc1_from_avcc(&[1, 0x42]), None, "truncated");
    }

    #[test]
    fn aac_object_type_from_audio_specific_config() {
        // AAC-LC, 48 kHz, stereo: 00010 0011 0010 000
        assert_eq!(aac_object_type(&[0x11, 0x90]), Some(2));
        assert_eq!(aac_object_type(&[]), None);
    }

    #[test]
    fn mime_names_audio_only_when_present() {
        assert_eq!(
            mse_mime("avc1.42C01F", None),
            r#"video/mp4; codecs="avc1.42C01F""#
        );
        assert_eq!(
            mse_mime("avc1.42C01F", Some(AudioCodec::Opus)),
            r#"video/mp4; codecs="avc1.42C01F,opus""#
        );
        assert_eq!(
            mse_mime("avc1.640028", Some(AudioCodec::Aac { object_type: 2 })),
            r#"video/mp4; codecs="avc1.640028,mp4a.40.2""#
        );
    }
}
