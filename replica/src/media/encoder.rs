//! One long-lived GStreamer pipeline per session that turns RGB frames (and optional PCM
//! audio) into fragmented MP4 chunks.
//!
//! ```text
//! appsrc (RGB) ─ videoconvert ─ x264enc | nvh264enc ─ h264parse ─┐
//!                                                                 ├─ isofmp4mux ─ appsink
//! appsrc (F32 PCM) ─ audioconvert ─ audioresample ─ opusenc|avenc_aac ┘
//! ```
//!
//! The pipeline stays up across segments: segment k+1 continues segment k's timeline, so
//! one init segment serves the whole stream. Each segment starts on a forced keyframe and
//! ends with a GAP event, which lets the muxer close the segment's last fragment at once
//! instead of waiting for the next segment's first frame.
//!
//! Every wait is bounded, bus errors become [`MediaError::Element`] naming the element, and
//! dropping the encoder takes the pipeline to `Null`, which joins its threads.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::MediaError;
use super::boxes::{ChunkKind, ChunkSplitter};
use super::codec::{self, AudioCodec};
use super::elements;
use crate::config::{AudioEncoderKind, H264Profile, MediaSettings, VideoEncoderKind};

/// Chunks waiting for the consumer; when full the muxer thread waits (backpressure).
const CHUNK_QUEUE: usize = 256;
/// Polling step while waiting for room in an `appsrc` queue.
const POLL: Duration = Duration::from_millis(2);

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

    fn frame_duration_ns(&self) -> u64 {
        1_000_000_000 / u64::from(self.fps)
    }

    fn validate(&self) -> Result<(), MediaError> {
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

/// One piece of fMP4 output, cut on box boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaChunk {
    /// Init segment (`ftyp`+`moov`) or fragment (`moof`+`mdat`).
    pub kind: ChunkKind,
    /// Segment the chunk belongs to (the init segment: the first segment).
    pub segment_idx: u32,
    /// 0-based fragment number within its segment (0 for the init segment).
    pub fragment_idx: u32,
    /// Media time the fragment covers (zero for the init segment).
    pub duration: Duration,
    /// The bytes to append to the SourceBuffer.
    pub bytes: Vec<u8>,
    /// When the muxer finished the chunk (for latency metrics and benchmarks).
    pub emitted_at: Instant,
}

impl MediaChunk {
    /// Length in bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }
}

/// What the muxer thread hands to the encoder's owner.
#[derive(Debug)]
enum Output {
    Chunk(MediaChunk),
    Failed(MediaError),
}

/// Maps fragment start times to the segment they belong to.
#[derive(Debug, Default)]
struct Timeline {
    /// `(start time in ns, segment index)` of segments begun and not yet fully emitted.
    segments: VecDeque<(u64, u32)>,
    current: Option<(u32, u32)>, // (segment, next fragment index)
}

impl Timeline {
    fn locate(&mut self, start_ns: u64) -> (u32, u32) {
        while self.segments.len() > 1 && self.segments[1].0 <= start_ns {
            self.segments.pop_front();
        }
        let segment = self.segments.front().map_or(0, |s| s.1);
        let fragment = match self.current {
            Some((s, next)) if s == segment => next,
            _ => 0,
        };
        self.current = Some((segment, fragment + 1));
        (segment, fragment)
    }
}

/// Splits the muxer output into chunks and forwards them; runs on the streaming thread.
struct ChunkSink {
    splitter: ChunkSplitter,
    open_start: Option<u64>,
    open_duration: u64,
    timeline: Arc<Mutex<Timeline>>,
    tx: SyncSender<Output>,
}

impl ChunkSink {
    fn on_buffer(&mut self, buffer: &gst::BufferRef) -> Result<(), gst::FlowError> {
        let is_header = buffer.flags().contains(gst::BufferFlags::HEADER);
        if !is_header && self.open_start.is_none() {
            self.open_start = buffer.pts().map(gst::ClockTime::nseconds);
            self.open_duration = 0;
        }
        if !is_header {
            self.open_duration += buffer.duration().map_or(0, gst::ClockTime::nseconds);
        }
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let chunks = match self.splitter.push(map.as_slice()) {
            Ok(chunks) => chunks,
            Err(err) => {
                let _ = self.tx.try_send(Output::Failed(MediaError::Element {
                    element: "isofmp4mux".into(),
                    message: err.to_string(),
                }));
                return Err(gst::FlowError::Error);
            }
        };
        for chunk in chunks {
            let (segment_idx, fragment_idx, duration) = match chunk.kind {
                ChunkKind::Init => (
                    self.timeline
                        .lock()
                        .map_or(0, |t| t.segments.front().map_or(0, |s| s.1)),
                    0,
                    Duration::ZERO,
                ),
                ChunkKind::Fragment => {
                    let start = self.open_start.take().unwrap_or(0);
                    let (s, f) = self
                        .timeline
                        .lock()
                        .map_err(|_| gst::FlowError::Error)?
                        .locate(start);
                    (
                        s,
                        f,
                        Duration::from_nanos(std::mem::take(&mut self.open_duration)),
                    )
                }
            };
            self.send(Output::Chunk(MediaChunk {
                kind: chunk.kind,
                segment_idx,
                fragment_idx,
                duration,
                bytes: chunk.bytes,
                emitted_at: Instant::now(),
            }))?;
        }
        Ok(())
    }

    /// Waits for room in the queue, so a slow consumer slows the whole pipeline down and the
    /// producer's bounded `push_frame` reports it. Dropping the encoder disconnects the queue,
    /// which ends this wait.
    fn send(&self, mut item: Output) -> Result<(), gst::FlowError> {
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(gst::FlowError::Flushing),
                Err(TrySendError::Full(back)) => {
                    item = back;
                    std::thread::sleep(POLL);
                }
            }
        }
    }
}

/// A live RGB (+PCM) to fragmented-MP4 encoder.
pub struct Fmp4Encoder {
    settings: EncoderSettings,
    pipeline: gst::Pipeline,
    video_src: gst_app::AppSrc,
    audio_src: Option<gst_app::AppSrc>,
    mux: gst::Element,
    /// The muxer's video input, where segment-closing GAP events are sent.
    mux_video_pad: gst::Pad,
    /// Encoded frames that have reached the muxer (counted by a pad probe).
    frames_at_mux: Arc<AtomicU64>,
    chunks: Receiver<Output>,
    timeline: Arc<Mutex<Timeline>>,
    frames_pushed: u64,
    audio_samples_pushed: u64,
    segment: Option<u32>,
    segment_frames: u64,
    encoder_name: String,
}

impl std::fmt::Debug for Fmp4Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fmp4Encoder")
            .field("settings", &self.settings)
            .field("encoder", &self.encoder_name)
            .field("frames_pushed", &self.frames_pushed)
            .field("segment", &self.segment)
            .finish_non_exhaustive()
    }
}

fn make_named(factory: &str, name: &str) -> Result<gst::Element, MediaError> {
    let element = elements::make(factory)?;
    element.set_property("name", name);
    Ok(element)
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

impl Fmp4Encoder {
    /// Builds the pipeline and starts it; the first chunk appears once frames are pushed.
    pub fn new(settings: EncoderSettings) -> Result<Self, MediaError> {
        settings.validate()?;
        elements::init()?;
        let pipeline = gst::Pipeline::with_name("fmp4-encoder");
        let ns_per_fragment =
            settings.frame_duration_ns() * u64::from(settings.frames_per_fragment);

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

        pipeline
            .add_many([
                video_src.upcast_ref(),
                &convert,
                &encoder,
                &profile_filter,
                &parse,
                &mux,
                sink.upcast_ref(),
            ])
            .map_err(|e| MediaError::Element {
                element: "pipeline".into(),
                message: e.to_string(),
            })?;
        link(&[
            video_src.upcast_ref(),
            &convert,
            &encoder,
            &profile_filter,
            &parse,
            &mux,
        ])?;
        link(&[&mux, sink.upcast_ref()])?;
        let mux_video_pad = parse
            .static_pad("src")
            .and_then(|p| p.peer())
            .ok_or_else(|| MediaError::Element {
                element: "isofmp4mux".into(),
                message: "video input pad missing after linking".into(),
            })?;
        let frames_at_mux = Arc::new(AtomicU64::new(0));
        let counter = frames_at_mux.clone();
        mux_video_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::Release);
            gst::PadProbeReturn::Ok
        });

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
                pipeline
                    .add_many([src.upcast_ref(), &aconvert, &resample, &aenc])
                    .map_err(|e| MediaError::Element {
                        element: "pipeline".into(),
                        message: e.to_string(),
                    })?;
                link(&[src.upcast_ref(), &aconvert, &resample, &aenc, &mux])?;
                Some(src)
            }
        };

        let (tx, chunks) = sync_channel(CHUNK_QUEUE);
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let sink_state = Mutex::new(ChunkSink {
            splitter: ChunkSplitter::new(),
            open_start: None,
            open_duration: 0,
            timeline: timeline.clone(),
            tx,
        });
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |appsink| {
                    let sample = appsink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let mut state = sink_state.lock().map_err(|_| gst::FlowError::Error)?;
                    if let Some(list) = sample.buffer_list() {
                        for buffer in list.iter() {
                            state.on_buffer(buffer)?;
                        }
                    } else if let Some(buffer) = sample.buffer() {
                        state.on_buffer(buffer)?;
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );

        let encoder = Self {
            settings,
            pipeline,
            video_src,
            audio_src,
            mux,
            mux_video_pad,
            frames_at_mux,
            chunks,
            timeline,
            frames_pushed: 0,
            audio_samples_pushed: 0,
            segment: None,
            segment_frames: 0,
            encoder_name,
        };
        encoder
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| {
                encoder.bus_error().unwrap_or_else(|| MediaError::Element {
                    element: "pipeline".into(),
                    message: "failed to start".into(),
                })
            })?;
        Ok(encoder)
    }

    /// The settings the pipeline was built from.
    pub fn settings(&self) -> &EncoderSettings {
        &self.settings
    }

    /// `x264enc` or `nvh264enc`.
    pub fn video_encoder_name(&self) -> &str {
        &self.encoder_name
    }

    /// Starts segment `segment_idx`: its first frame becomes a keyframe and a new fragment.
    pub fn begin_segment(&mut self, segment_idx: u32) -> Result<(), MediaError> {
        self.check_bus()?;
        let start = self.frames_pushed * self.settings.frame_duration_ns();
        if let Ok(mut t) = self.timeline.lock() {
            t.segments.push_back((start, segment_idx));
        }
        if self.frames_pushed > 0 {
            let event = gstreamer_video::DownstreamForceKeyUnitEvent::builder()
                .timestamp(gst::ClockTime::from_nseconds(start))
                .all_headers(true)
                .build();
            self.video_src.send_event(event);
        }
        self.segment = Some(segment_idx);
        self.segment_frames = 0;
        Ok(())
    }

    /// Pushes one RGB24 frame (owned: the pipeline keeps it without copying).
    pub fn push_frame(&mut self, frame: Vec<u8>) -> Result<(), MediaError> {
        if self.segment.is_none() {
            self.begin_segment(0)?;
        }
        let expected = self.settings.frame_bytes();
        if frame.len() != expected {
            return Err(MediaError::FrameSize {
                expected,
                got: frame.len(),
                width: self.settings.width,
                height: self.settings.height,
            });
        }
        let frame_ns = self.settings.frame_duration_ns();
        let mut buffer = gst::Buffer::from_mut_slice(frame);
        {
            let b = buffer.get_mut().expect("new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds(self.frames_pushed * frame_ns));
            b.set_duration(gst::ClockTime::from_nseconds(frame_ns));
        }
        let src = self.video_src.clone();
        self.push_bounded(&src, buffer)?;
        self.frames_pushed += 1;
        self.segment_frames += 1;
        Ok(())
    }

    /// Pushes interleaved f32 PCM for the audio track.
    pub fn push_audio(&mut self, samples: Vec<f32>) -> Result<(), MediaError> {
        let (Some(src), Some(audio)) = (self.audio_src.clone(), self.settings.audio) else {
            return Err(MediaError::NoAudioTrack);
        };
        let channels = audio.channels as usize;
        if !samples.len().is_multiple_of(channels) {
            return Err(MediaError::AudioLength {
                samples: samples.len(),
                channels: audio.channels,
            });
        }
        let frames = (samples.len() / channels) as u64;
        let rate = u64::from(audio.sample_rate);
        let pts = self.audio_samples_pushed * 1_000_000_000 / rate;
        let end = (self.audio_samples_pushed + frames) * 1_000_000_000 / rate;
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut buffer = gst::Buffer::from_mut_slice(bytes);
        {
            let b = buffer.get_mut().expect("new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(end - pts));
        }
        self.push_bounded(&src, buffer)?;
        self.audio_samples_pushed += frames;
        Ok(())
    }

    /// Ends the current segment: the muxer closes its last fragment without waiting for the
    /// next segment's first frame.
    ///
    /// isofmp4mux finalises an H.264 GOP only once the GOP after next has begun, so once every
    /// encoded frame has reached the muxer we hand its video input two zero-length GAP events
    /// at the segment's end time; each becomes an empty GAP "keyframe" that the muxer drops
    /// when writing. (An audio track's tail still waits for the next segment's audio.)
    pub fn end_segment(&mut self) -> Result<(), MediaError> {
        let deadline = Instant::now() + self.settings.wait_timeout;
        while self.frames_at_mux.load(Ordering::Acquire) < self.frames_pushed {
            self.check_bus()?;
            if Instant::now() >= deadline {
                return Err(MediaError::Timeout {
                    what: format!("{} to encode the segment's last frame", self.encoder_name),
                    after: self.settings.wait_timeout,
                });
            }
            std::thread::sleep(POLL);
        }
        // Our timestamps are running times; the encoder may shift its output segment (x264enc
        // adds 1000 hours so DTS stays positive), so translate into the muxer input's segment.
        let running_end =
            gst::ClockTime::from_nseconds(self.frames_pushed * self.settings.frame_duration_ns());
        let end = self
            .mux_video_pad
            .sticky_event::<gst::event::Segment>(0)
            .and_then(|ev| ev.segment().downcast_ref::<gst::ClockTime>().cloned())
            .and_then(|seg| seg.position_from_running_time(running_end))
            .unwrap_or(running_end);
        for _ in 0..2 {
            let gap = gst::event::Gap::builder(end)
                .duration(gst::ClockTime::ZERO)
                .build();
            if !self.mux_video_pad.send_event(gap) {
                self.check_bus()?;
            }
        }
        self.segment = None;
        Ok(())
    }

    /// The next chunk, waiting up to `timeout`; `Ok(None)` when none arrived in time.
    pub fn next_chunk(&self, timeout: Duration) -> Result<Option<MediaChunk>, MediaError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_bus()?;
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(20));
            match self.chunks.recv_timeout(step) {
                Ok(Output::Chunk(c)) => return Ok(Some(c)),
                Ok(Output::Failed(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => continue,
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }

    /// Every chunk already produced, without waiting.
    pub fn drain_ready(&self) -> Result<Vec<MediaChunk>, MediaError> {
        self.check_bus()?;
        let mut out = Vec::new();
        while let Ok(item) = self.chunks.try_recv() {
            match item {
                Output::Chunk(c) => out.push(c),
                Output::Failed(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The MSE mime type, known once the encoders negotiated (after the first frame).
    pub fn mime(&self) -> Option<String> {
        let video = codec::video_codec_from_caps(&*self.mux_input_caps("video/")?)?;
        let audio: Option<AudioCodec> = match self.audio_src {
            Some(_) => Some(codec::audio_codec_from_caps(
                &*self.mux_input_caps("audio/")?,
            )?),
            None => None,
        };
        Some(codec::mse_mime(&video, audio))
    }

    /// Negotiated caps on the muxer input whose media type starts with `prefix`.
    fn mux_input_caps(&self, prefix: &str) -> Option<gst::Caps> {
        self.mux.sink_pads().into_iter().find_map(|pad| {
            let caps = pad.current_caps()?;
            let is_match = caps.structure(0)?.name().starts_with(prefix);
            is_match.then_some(caps)
        })
    }

    /// Ends the stream, waits (up to `timeout`) for the muxer to drain, and returns the
    /// chunks not yet taken. The pipeline is stopped whatever happens.
    pub fn finish(self, timeout: Duration) -> Result<Vec<MediaChunk>, MediaError> {
        let _ = self.video_src.end_of_stream();
        if let Some(src) = &self.audio_src {
            let _ = src.end_of_stream();
        }
        let bus = self.pipeline.bus().expect("pipelines have a bus");
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            while let Ok(item) = self.chunks.try_recv() {
                match item {
                    Output::Chunk(c) => out.push(c),
                    Output::Failed(e) => return Err(e),
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(MediaError::Timeout {
                    what: "draining the encoder at finish".into(),
                    after: timeout,
                });
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            let msg = bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(wait.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
            match msg.as_ref().map(|m| m.view()) {
                Some(gst::MessageView::Eos(_)) => break,
                Some(gst::MessageView::Error(err)) => return Err(element_error(err)),
                _ => {}
            }
        }
        while let Ok(item) = self.chunks.try_recv() {
            match item {
                Output::Chunk(c) => out.push(c),
                Output::Failed(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn push_bounded(&self, src: &gst_app::AppSrc, buffer: gst::Buffer) -> Result<(), MediaError> {
        let deadline = Instant::now() + self.settings.wait_timeout;
        let limit = src.max_bytes();
        loop {
            self.check_bus()?;
            if src.current_level_bytes() < limit {
                break;
            }
            if Instant::now() >= deadline {
                return Err(MediaError::Timeout {
                    what: format!("room in {}", src.name()),
                    after: self.settings.wait_timeout,
                });
            }
            std::thread::sleep(POLL);
        }
        src.push_buffer(buffer).map_err(|flow| {
            self.bus_error().unwrap_or_else(|| MediaError::Element {
                element: src.name().to_string(),
                message: format!("push refused: {flow:?}"),
            })
        })?;
        Ok(())
    }

    fn check_bus(&self) -> Result<(), MediaError> {
        match self.bus_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn bus_error(&self) -> Option<MediaError> {
        let bus = self.pipeline.bus()?;
        let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
        match msg.view() {
            gst::MessageView::Error(err) => Some(element_error(err)),
            _ => None,
        }
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

fn element_error(err: &gst::message::Error) -> MediaError {
    MediaError::Element {
        element: err
            .src()
            .map(|s| s.name().to_string())
            .unwrap_or_else(|| "pipeline".into()),
        message: match err.debug() {
            Some(debug) => format!("{} ({debug})", err.error()),
            None => err.error().to_string(),
        },
    }
}

impl Drop for Fmp4Encoder {
    fn drop(&mut self) {
        // Disconnect the chunk queue first: a muxer thread waiting for room in it then gives
        // up at once instead of holding up the state change below for its whole timeout.
        let (_, disconnected) = sync_channel(1);
        drop(std::mem::replace(&mut self.chunks, disconnected));
        // Null joins the streaming threads and frees every buffer the pipeline holds.
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
