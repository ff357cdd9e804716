//! One long-lived GStreamer pipeline per session (built by [`super::pipeline`]) that turns
//! RGB frames and optional PCM audio into fragmented MP4 chunks.
//!
//! The pipeline stays up across segments: segment k+1 continues segment k's timeline, so
//! one init segment serves the whole stream. Each segment starts on a forced keyframe and
//! ends with a GAP event, which lets the muxer close the segment's last fragment at once
//! instead of waiting for the next segment's first frame.
//!
//! Every wait is bounded, bus errors become [`MediaError::Element`] naming the element, and
//! dropping the encoder takes the pipeline to `Null`, which joins its threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::chunks::{ChunkSink, MediaChunk, Output, Timeline};
use super::codec::{self, AudioCodec};
use super::pipeline::{self, Graph};
use super::settings::EncoderSettings;
use super::{MediaError, elements};

/// Chunks waiting for the consumer; when full the muxer thread waits (backpressure).
const CHUNK_QUEUE: usize = 256;
/// Polling step while waiting for room in an `appsrc` queue.
const POLL: Duration = Duration::from_millis(2);

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

impl Fmp4Encoder {
    /// Builds the pipeline and starts it; the first chunk appears once frames are pushed.
    pub fn new(settings: EncoderSettings) -> Result<Self, MediaError> {
        settings.validate()?;
        elements::init()?;
        let Graph {
            pipeline,
            video_src,
            audio_src,
            mux,
            mux_video_pad,
            sink,
            encoder_name,
        } = pipeline::build(&settings)?;
        let frames_at_mux = Arc::new(AtomicU64::new(0));
        let counter = frames_at_mux.clone();
        mux_video_pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counter.fetch_add(1, Ordering::Release);
            gst::PadProbeReturn::Ok
        });

        let (tx, chunks) = sync_channel(CHUNK_QUEUE);
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let sink_state = Mutex::new(ChunkSink::new(timeline.clone(), tx));
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
