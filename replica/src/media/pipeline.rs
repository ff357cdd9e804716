//! Builds the GStreamer graph of an encoder:
//!
//! ```text
//! appsrc (RGB) ─ videoconvert ─ x264enc | nvh264enc ─ capsfilter ─ h264parse ─┐
//!                                                                              ├─ isofmp4mux ─ appsink
//! appsrc (F32 PCM) ─ audioconvert ─ audioresample ─ opusenc | avenc_aac ───────┘
//! ```

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::settings::EncoderSettings;
use super::{MediaError, elements};
use crate::config::{AudioEncoderKind, H264Profile, VideoEncoderKind};

/// The elements an encoder talks to after building.
pub(super) struct Graph {
    pub pipeline: gst::Pipeline,
    pub video_src: gst_app::AppSrc,
    pub audio_src: Option<gst_app::AppSrc>,
    pub mux: gst::Element,
    /// The muxer's video input.
    pub mux_video_pad: gst::Pad,
    pub sink: gst_app::AppSink,
    /// `x264enc` or `nvh264enc`.
    pub encoder_name: String,
}

/// Creates and links every element for `settings` (not started).
pub(super) fn build(settings: &EncoderSettings) -> Result<Graph, MediaError> {
    let pipeline = gst::Pipeline::with_name("fmp4-encoder");
    let ns_per_fragment = settings.frame_duration_ns() * u64::from(settings.frames_per_fragment);

    // Video branch.
    let video_src = gst_app::AppSrc::builder()
        .name("video_src")
        .caps(
            &gst::Caps::builder("video/x-raw")
                .field("format", "RGB")
                .field("width", settings.width as i32)
                .field("height", settings.height as i32)
                .field("framerate", gst::Fraction::new(settings.fps as i32, 1))
                .build(),
        )
        .format(gst::Format::Time)
        .is_live(false)
        .block(false)
        .max_bytes(settings.frame_bytes() as u64 * u64::from(settings.frames_per_fragment) * 2)
        .build();
    let convert = make_named("videoconvert", "videoconvert")?;
    let nvenc = use_nvenc(settings.video_encoder)?;
    let encoder = if nvenc {
        let e = make_named("nvh264enc", "nvh264enc")?;
        e.set_property("gop-size", settings.frames_per_fragment as i32);
        e.set_property("bframes", 0u32);
        e.set_property("bitrate", settings.bitrate_kbps);
        e.set_property_from_str("preset", "low-latency-hp");
        e.set_property("zerolatency", true);
        e
    } else {
        let e = make_named("x264enc", "x264enc")?;
        e.set_property_from_str("tune", "zerolatency");
        e.set_property_from_str("speed-preset", &settings.x264_speed_preset);
        e.set_property("key-int-max", settings.frames_per_fragment);
        e.set_property("bframes", 0u32);
        e.set_property("bitrate", settings.bitrate_kbps);
        e
    };
    let encoder_name = encoder.name().to_string();
    let profile_filter = make_named("capsfilter", "h264_caps")?;
    profile_filter.set_property(
        "caps",
        gst::Caps::builder("video/x-h264")
            .field("profile", profile_caps_name(settings.profile))
            .build(),
    );
    let parse = make_named("h264parse", "h264parse")?;

    let mux = make_named("isofmp4mux", "isofmp4mux")?;
    mux.set_property("fragment-duration", ns_per_fragment);
    let sink = gst_app::AppSink::builder()
        .name("fmp4_sink")
        .sync(false)
        .build();

    add_chain(
        &pipeline,
        &[
            video_src.upcast_ref(),
            &convert,
            &encoder,
            &profile_filter,
            &parse,
            &mux,
            sink.upcast_ref(),
        ],
    )?;
    let mux_video_pad = parse
        .static_pad("src")
        .and_then(|p| p.peer())
        .ok_or_else(|| MediaError::Element {
            element: "isofmp4mux".into(),
            message: "video input pad missing after linking".into(),
        })?;

    // Audio branch.
    let audio_src = match settings.audio {
        None => None,
        Some(audio) => {
            let src = gst_app::AppSrc::builder()
                .name("audio_src")
                .caps(&gst_audio_caps(audio.sample_rate, audio.channels))
                .format(gst::Format::Time)
                .is_live(false)
                .block(false)
                .max_bytes(u64::from(audio.sample_rate) * u64::from(audio.channels) * 4)
                .build();
            let aconvert = make_named("audioconvert", "audioconvert")?;
            let resample = make_named("audioresample", "audioresample")?;
            let aenc = match audio.encoder {
                AudioEncoderKind::Opus => make_named("opusenc", "opusenc")?,
                AudioEncoderKind::Aac => make_named("avenc_aac", "avenc_aac")?,
            };
            add_chain(&pipeline, &[src.upcast_ref(), &aconvert, &resample, &aenc])?;
            link(&[&aenc, &mux])?;
            Some(src)
        }
    };
    Ok(Graph {
        pipeline,
        video_src,
        audio_src,
        mux,
        mux_video_pad,
        sink,
        encoder_name,
    })
}

fn make_named(factory: &str, name: &str) -> Result<gst::Element, MediaError> {
    let element = elements::make(factory)?;
    element.set_property("name", name);
    Ok(element)
}

/// Adds `chain` to `pipeline` and links its elements in order.
fn add_chain(pipeline: &gst::Pipeline, chain: &[&gst::Element]) -> Result<(), MediaError> {
    pipeline
        .add_many(chain.iter().copied())
        .map_err(|e| MediaError::Element {
            element: "pipeline".into(),
            message: format!("adding elements failed: {e}"),
        })?;
    link(chain)
}

fn link(chain: &[&gst::Element]) -> Result<(), MediaError> {
    gst::Element::link_many(chain).map_err(|e| MediaError::Element {
        element: chain
            .iter()
            .map(|e| e.name().to_string())
            .collect::<Vec<_>>()
            .join(" ! "),
        message: format!("linking failed: {e}"),
    })
}

/// Whether `nvh264enc` should be used for `kind`.
fn use_nvenc(kind: VideoEncoderKind) -> Result<bool, MediaError> {
    let available = gst::ElementFactory::find("nvh264enc").is_some()
        && std::path::Path::new("/dev/nvidia0").exists();
    match kind {
        VideoEncoderKind::X264 => Ok(false),
        VideoEncoderKind::Auto => Ok(available),
        VideoEncoderKind::Nvh264 if available => Ok(true),
        VideoEncoderKind::Nvh264 => Err(MediaError::MissingElement {
            element: "nvh264enc".into(),
            provider: "gstreamer1.0-plugins-bad with an NVIDIA GPU and driver",
        }),
    }
}

fn profile_caps_name(profile: H264Profile) -> &'static str {
    match profile {
        H264Profile::ConstrainedBaseline => "constrained-baseline",
        H264Profile::Main => "main",
        H264Profile::High => "high",
    }
}

fn gst_audio_caps(rate: u32, channels: u32) -> gst::Caps {
    gstreamer_audio::AudioCapsBuilder::new_interleaved()
        .format(gstreamer_audio::AudioFormat::F32le)
        .rate(rate as i32)
        .channels(channels as i32)
        .build()
}
