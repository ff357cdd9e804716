//! Builds the GStreamer graphs of an encoder: one long-lived encoding pipeline per session
//!
//! ```text
//! appsrc (RGB) ─ videoconvert ─ x264enc | nvh264enc ─ capsfilter ─ h264parse ─ appsink (H.264)
//! appsrc (F32 PCM) ─ audioconvert ─ audioresample ─ opusenc | avenc_aac ─ appsink (Opus | AAC)
//! ```
//!
//! and one short muxing pipeline per segment, fed with what the encoders produced:
//!
//! ```text
//! appsrc (H.264) ─┐
//!                 ├─ isofmp4mux ─ appsink (fMP4)
//! appsrc (audio) ─┘
//! ```
//!
//! The encoders stay up across segments (one timeline, no re-initialisation); the muxer is
//! ended at each segment's end, which is the only way to make isofmp4mux write out
//! everything it holds: it finalises a fragment only once every input has data past it.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::settings::EncoderSettings;
use super::{MediaError, elements};
use crate::config::{AudioEncoderKind, H264Profile, VideoEncoderKind};

/// The encoding pipeline's elements the encoder talks to after building.
pub(super) struct Graph {
    pub pipeline: gst::Pipeline,
    pub video_src: gst_app::AppSrc,
    pub audio_src: Option<gst_app::AppSrc>,
    /// Receives the encoded H.264 access units.
    pub video_sink: gst_app::AppSink,
    /// Receives the encoded audio frames.
    pub audio_sink: Option<gst_app::AppSink>,
    /// The audio encoder's input, where audio sync markers are seen.
    pub audio_encoder_sink_pad: Option<gst::Pad>,
    /// `x264enc` or `nvh264enc`.
    pub encoder_name: String,
}

/// Creates and links every element of the encoding pipeline for `settings` (not started).
pub(super) fn build(settings: &EncoderSettings) -> Result<Graph, MediaError> {
    let pipeline = gst::Pipeline::with_name("fmp4-encoder");
    // What isofmp4mux accepts, so the encoders negotiate exactly as if linked to it.
    let mux_caps = mux_sink_caps()?;

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
    let video_sink = encoded_sink("video_es", &mux_caps);
    add_chain(
        &pipeline,
        &[
            video_src.upcast_ref(),
            &convert,
            &encoder,
            &profile_filter,
            &parse,
            video_sink.upcast_ref(),
        ],
    )?;

    // Audio branch.
    let (audio_src, audio_sink, audio_encoder_sink_pad) = match settings.audio {
        None => (None, None, None),
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
            let sink = encoded_sink("audio_es", &mux_caps);
            add_chain(
                &pipeline,
                &[
                    src.upcast_ref(),
                    &aconvert,
                    &resample,
                    &aenc,
                    sink.upcast_ref(),
                ],
            )?;
            let pad = aenc.static_pad("sink").ok_or_else(|| MediaError::Element {
                element: aenc.name().to_string(),
                message: "no sink pad".into(),
            })?;
            (Some(src), Some(sink), Some(pad))
        }
    };
    Ok(Graph {
        pipeline,
        video_src,
        audio_src,
        video_sink,
        audio_sink,
        audio_encoder_sink_pad,
        encoder_name,
    })
}

/// One segment's muxing pipeline.
pub(super) struct MuxGraph {
    pub pipeline: gst::Pipeline,
    pub video_src: gst_app::AppSrc,
    pub audio_src: Option<gst_app::AppSrc>,
    pub sink: gst_app::AppSink,
}

/// Creates and links a muxing pipeline for `settings` (not started). Its inputs take encoded
/// buffers timestamped in running time, and block when they hold about two fragments, so a
/// consumer that stops reading slows the encoders down.
pub(super) fn build_mux(settings: &EncoderSettings) -> Result<MuxGraph, MediaError> {
    let pipeline = gst::Pipeline::with_name("fmp4-segment-mux");
    let ns_per_fragment = settings.frame_duration_ns() * u64::from(settings.frames_per_fragment);
    let input = |name: &str| {
        let src = gst_app::AppSrc::builder()
            .name(name)
            .format(gst::Format::Time)
            .is_live(false)
            .block(true)
            .max_bytes(0)
            .build();
        src.set_property("max-time", 2 * ns_per_fragment);
        src
    };
    let video_src = input("video_in");
    let mux = make_named("isofmp4mux", "isofmp4mux")?;
    mux.set_property("fragment-duration", ns_per_fragment);
    // Keyframes come from the encoder's GOP length and each segment's forced keyframe; the
    // inputs here are appsrcs, which could not act on the muxer's requests anyway.
    mux.set_property("send-force-keyunit", false);
    let sink = gst_app::AppSink::builder()
        .name("fmp4_sink")
        .sync(false)
        .build();
    add_chain(
        &pipeline,
        &[video_src.upcast_ref(), &mux, sink.upcast_ref()],
    )?;
    let audio_src = match settings.audio {
        None => None,
        Some(_) => {
            let src = input("audio_in");
            pipeline.add(&src).map_err(|e| MediaError::Element {
                element: "pipeline".into(),
                message: format!("adding elements failed: {e}"),
            })?;
            link(&[src.upcast_ref(), &mux])?;
            Some(src)
        }
    };
    Ok(MuxGraph {
        pipeline,
        video_src,
        audio_src,
        sink,
    })
}

/// The caps isofmp4mux's sink pads accept.
fn mux_sink_caps() -> Result<gst::Caps, MediaError> {
    elements::init()?;
    let missing = || MediaError::MissingElement {
        element: "isofmp4mux".into(),
        provider: "the gst-plugin-fmp4 crate (registered statically)",
    };
    let factory = gst::ElementFactory::find("isofmp4mux").ok_or_else(missing)?;
    factory
        .static_pad_templates()
        .into_iter()
        .find(|t| t.direction() == gst::PadDirection::Sink)
        .map(|t| t.caps())
        .ok_or_else(missing)
}

/// An appsink for encoded buffers that accepts what the muxer accepts.
fn encoded_sink(name: &str, caps: &gst::Caps) -> gst_app::AppSink {
    let sink = gst_app::AppSink::builder()
        .name(name)
        .caps(caps)
        .sync(false)
        .build();
    sink.set_property("enable-last-sample", false);
    sink
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

/// The video encoder element `kind` resolves to here (`x264enc` or `nvh264enc`), or why the
/// one asked for cannot be had: what `/readyz` reports and every session uses.
pub fn video_encoder_name(kind: VideoEncoderKind) -> Result<&'static str, MediaError> {
    super::elements::init()?;
    Ok(if use_nvenc(kind)? {
        "nvh264enc"
    } else {
        "x264enc"
    })
}

/// Whether GStreamer can encode with NVENC in this process, asked once. The nvcodec plugin
/// registers `nvh264enc` only for a CUDA device whose NVENC it could open, and an instance
/// must reach READY (its CUDA context): no device-node path is assumed, since a container
/// given the host's GPU 3 sees `/dev/nvidia3` (and CUDA calls it device 0), and a driver
/// mounted without the `video` capability has CUDA but no NVENC.
fn nvenc_usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        let Ok(element) = gst::ElementFactory::make("nvh264enc").build() else {
            return false;
        };
        let usable = element.set_state(gst::State::Ready).is_ok();
        let _ = element.set_state(gst::State::Null);
        usable
    })
}

/// Whether `nvh264enc` should be used for `kind`.
fn use_nvenc(kind: VideoEncoderKind) -> Result<bool, MediaError> {
    let available = nvenc_usable();
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
