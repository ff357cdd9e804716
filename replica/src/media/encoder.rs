//! RGB frames and optional PCM audio in, fragmented MP4 chunks out, one segment at a time.
//!
//! Two kinds of GStreamer pipeline (built by [`super::pipeline`]): one long-lived encoding
//! pipeline per session, whose H.264 and audio encoders run on one timeline across
//! segments, and one short muxing pipeline per segment. Each segment starts on a forced
//! keyframe; [`Fmp4Encoder::end_segment`] hands the segment's muxer everything the encoders
//! produced for it and ends that muxer's stream, so every fragment of the segment, its last
//! partial one and its audio included, is out when it returns. The fragments' decode times
//! are running times, so they run on across segments, and the stream's one init segment
//! (from the first segment's muxer) describes every segment's fragments.
//!
//! Every wait is bounded, bus errors become [`MediaError::Element`] naming the element, and
//! dropping the encoder takes the pipelines to `Null`, which joins their threads.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::chunks::{ChunkSink, MediaChunk, Output};
use super::codec::{self, AudioCodec};
use super::pipeline::{self, Graph, MuxGraph};
use super::settings::EncoderSettings;
use super::{MediaError, elements};

/// Chunks waiting for the consumer; when full the muxer thread waits (backpressure).
const CHUNK_QUEUE: usize = 256;
/// Polling step while waiting for the pipelines.
const POLL: Duration = Duration::from_millis(2);
/// Name of the marker sent after a segment's audio (see [`Fmp4Encoder::end_segment`]).
const AUDIO_SYNC: &str = "framecast-audio-sync";

/// A live RGB (+PCM) to fragmented-MP4 encoder.
pub struct Fmp4Encoder {
    settings: EncoderSettings,
    /// The encoding pipeline.
    pipeline: gst::Pipeline,
    video_src: gst_app::AppSrc,
    audio_src: Option<gst_app::AppSrc>,
    video_sink: gst_app::AppSink,
    audio_sink: Option<gst_app::AppSink>,
    shared: Arc<Shared>,
    /// The open segment's muxing pipeline.
    mux: Option<MuxGraph>,
    tx: SyncSender<Output>,
    chunks: Receiver<Output>,
    /// Chunks taken off the queue while waiting for the muxer (see `pump`).
    backlog: RefCell<VecDeque<Output>>,
    frames_pushed: u64,
    /// The stream-timeline index of the first frame pushed ([`Fmp4Encoder::start_timeline_at`]).
    timeline_start: u64,
    audio_samples_pushed: u64,
    audio_syncs_sent: u64,
    /// The open segment.
    segment: Option<u32>,
    /// The segment opened last (what a tail flushed by `finish` belongs to).
    last_segment: u32,
    encoder_name: String,
}

/// State the encoding pipeline's streaming threads share with the encoder.
#[derive(Default)]
struct Shared {
    route: Mutex<Route>,
    /// Encoded frames handed on (to a muxer, or held).
    frames_out: AtomicU64,
    /// The last audio sync marker seen at the audio encoder's input.
    audio_synced: AtomicU64,
    /// Whether the stream's init segment went out.
    init_sent: Arc<AtomicBool>,
}

/// Where encoded buffers go: the open segment's muxer inputs, or a hold until one opens.
#[derive(Default)]
struct Route {
    video: Option<gst_app::AppSrc>,
    audio: Option<gst_app::AppSrc>,
    held: Vec<(Track, gst::Sample)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    Video,
    Audio,
}

impl Shared {
    /// Hands one encoded buffer to the open muxer (or holds it); runs on a streaming thread.
    fn deliver(&self, track: Track, sample: gst::Sample) -> Result<(), gst::FlowError> {
        let src = {
            let mut route = self.route.lock().map_err(|_| gst::FlowError::Error)?;
            let src = match track {
                Track::Video => route.video.clone(),
                Track::Audio => route.audio.clone(),
            };
            match src {
                Some(src) => src,
                None => {
                    route.held.push((track, sample));
                    return Ok(());
                }
            }
        };
        // Pushed without the lock: a full muxer input blocks here (backpressure).
        forward(&src, &sample)
    }
}

/// Pushes `sample`'s buffer into a muxer input, timestamped in running time.
fn forward(src: &gst_app::AppSrc, sample: &gst::Sample) -> Result<(), gst::FlowError> {
    let mut buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
    if let Some(segment) = sample
        .segment()
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
    {
        let b = buffer.make_mut();
        let pts = b.pts().and_then(|pts| segment.to_running_time(pts));
        let dts = b.dts().and_then(|dts| {
            segment
                .to_running_time_full(dts)
                .map(|t| t.positive().unwrap_or(gst::ClockTime::ZERO))
        });
        b.set_pts(pts);
        b.set_dts(dts);
    }
    if let Some(caps) = sample.caps()
        && src.caps().as_ref().map(|c| c.as_ref()) != Some(caps)
    {
        src.set_caps(Some(&caps.to_owned()));
    }
    src.push_buffer(buffer).map(|_| ())
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
    /// Builds the encoding pipeline and starts it; the first chunk appears once frames are
    /// pushed.
    pub fn new(settings: EncoderSettings) -> Result<Self, MediaError> {
        settings.validate()?;
        elements::init()?;
        let Graph {
            pipeline,
            video_src,
            audio_src,
            video_sink,
            audio_sink,
            audio_encoder_sink_pad,
            encoder_name,
        } = pipeline::build(&settings)?;
        let shared = Arc::new(Shared::default());

        let state = shared.clone();
        video_sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let delivered = state.deliver(Track::Video, sample);
                    state.frames_out.fetch_add(1, Ordering::AcqRel);
                    delivered.map(|()| gst::FlowSuccess::Ok)
                })
                .build(),
        );
        if let Some(sink) = &audio_sink {
            let state = shared.clone();
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        state
                            .deliver(Track::Audio, sample)
                            .map(|()| gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        }
        if let Some(pad) = audio_encoder_sink_pad {
            // The audio encoder pushes what it encodes on the thread that hands it input, so
            // once a marker sent after some audio reaches its input, everything the encoder
            // could make of that audio has been delivered.
            let state = shared.clone();
            pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(event)) = &info.data
                    && let Some(s) = event.structure()
                    && s.name() == AUDIO_SYNC
                {
                    if let Ok(seq) = s.get::<u64>("seq") {
                        state.audio_synced.fetch_max(seq, Ordering::AcqRel);
                    }
                    return gst::PadProbeReturn::Drop;
                }
                gst::PadProbeReturn::Ok
            });
        }

        let (tx, chunks) = sync_channel(CHUNK_QUEUE);
        let encoder = Self {
            settings,
            pipeline,
            video_src,
            audio_src,
            video_sink,
            audio_sink,
            shared,
            mux: None,
            tx,
            chunks,
            backlog: RefCell::new(VecDeque::new()),
            frames_pushed: 0,
            timeline_start: 0,
            audio_samples_pushed: 0,
            audio_syncs_sent: 0,
            segment: None,
            last_segment: 0,
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

    /// Places the first frame at index `frame` of the stream's timeline instead of 0 (its
    /// sound at the same time), so a stream resumed in a new encoder continues the fMP4
    /// timeline of the one it replaces: fragment decode times run on from where the client's
    /// media stopped. Only before anything was pushed.
    pub fn start_timeline_at(&mut self, frame: u64) -> Result<(), MediaError> {
        if self.frames_pushed > 0 || self.audio_samples_pushed > 0 {
            return Err(MediaError::InvalidSettings(
                "the timeline start is set before the first frame".into(),
            ));
        }
        self.timeline_start = frame;
        Ok(())
    }

    /// Moves the timeline forward so the next frame pushed sits at index `frame` of the
    /// stream: a broadcast encoder worker that claims segments 3 and then 7 of a rendition
    /// gives segment 7 the decode times a single encoder would have given it. Only between
    /// segments, and never backwards (a decoder cannot go back in time).
    pub fn jump_timeline_to(&mut self, frame: u64) -> Result<(), MediaError> {
        let next = self.timeline_start + self.frames_pushed;
        if self.segment.is_some() || frame < next {
            return Err(MediaError::InvalidSettings(format!(
                "the timeline moves forward between segments only (next frame {next}, asked {frame})"
            )));
        }
        self.timeline_start = frame - self.frames_pushed;
        Ok(())
    }

    /// Index on the stream's timeline of the next frame pushed.
    pub fn next_frame(&self) -> u64 {
        self.timeline_start + self.frames_pushed
    }

    /// Presentation time of the `n`-th frame this encoder pushes.
    fn frame_pts(&self, n: u64) -> u64 {
        self.settings.frame_pts_ns(self.timeline_start + n)
    }

    /// Starts segment `segment_idx` (ending the open one first, if any): its first frame
    /// becomes a keyframe, and its chunks come from a muxer of its own.
    pub fn begin_segment(&mut self, segment_idx: u32) -> Result<(), MediaError> {
        self.check_bus()?;
        if self.segment.is_some() {
            self.end_segment()?;
        }
        self.open_mux(segment_idx)?;
        if self.frames_pushed > 0 {
            let start = self.frame_pts(self.frames_pushed);
            let event = gstreamer_video::DownstreamForceKeyUnitEvent::builder()
                .timestamp(gst::ClockTime::from_nseconds(start))
                .all_headers(true)
                .build();
            self.video_src.send_event(event);
        }
        self.segment = Some(segment_idx);
        Ok(())
    }

    /// Builds and starts segment `segment_idx`'s muxer, routes the encoders' output to it
    /// and hands it whatever was held since the previous segment ended.
    fn open_mux(&mut self, segment_idx: u32) -> Result<(), MediaError> {
        let graph = pipeline::build_mux(&self.settings)?;
        let sink_state = Mutex::new(ChunkSink::new(
            segment_idx,
            self.shared.init_sent.clone(),
            self.tx.clone(),
        ));
        graph.sink.set_callbacks(
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
        // Known caps up front: a muxer input that ends without any buffer still has its
        // track, so track ids stay those of the stream's init segment.
        graph
            .video_src
            .set_caps(sink_caps(&self.video_sink).as_ref());
        if let (Some(src), Some(sink)) = (&graph.audio_src, &self.audio_sink) {
            src.set_caps(sink_caps(sink).as_ref());
        }
        if graph.pipeline.set_state(gst::State::Playing).is_err() {
            let err = pipeline_error(&graph.pipeline).unwrap_or_else(|| MediaError::Element {
                element: "fmp4-segment-mux".into(),
                message: "failed to start".into(),
            });
            let _ = graph.pipeline.set_state(gst::State::Null);
            return Err(err);
        }
        // Owned from here on, so `Drop` stops it whatever happens next.
        let graph = self.mux.insert(graph);
        self.last_segment = segment_idx;
        // Under the lock, so what was held goes in before anything delivered from now on.
        let mut route = self.shared.route.lock().expect("route lock");
        for (track, sample) in std::mem::take(&mut route.held) {
            let src = match track {
                Track::Video => Some(&graph.video_src),
                Track::Audio => graph.audio_src.as_ref(),
            };
            if let Some(src) = src {
                forward(src, &sample).map_err(|flow| MediaError::Element {
                    element: src.name().to_string(),
                    message: format!("push refused: {flow:?}"),
                })?;
            }
        }
        route.video = Some(graph.video_src.clone());
        route.audio = graph.audio_src.clone();
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
        let pts = self.frame_pts(self.frames_pushed);
        let end = self.frame_pts(self.frames_pushed + 1);
        let mut buffer = gst::Buffer::from_mut_slice(frame);
        {
            let b = buffer.get_mut().expect("new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_duration(gst::ClockTime::from_nseconds(end - pts));
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
        if self.segment.is_none() {
            self.begin_segment(0)?;
        }
        let frames = (samples.len() / channels) as u64;
        let rate = u64::from(audio.sample_rate);
        let offset = self.frame_pts(0);
        let pts = offset + self.audio_samples_pushed * 1_000_000_000 / rate;
        let end = offset + (self.audio_samples_pushed + frames) * 1_000_000_000 / rate;
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

    /// Ends the current segment. When this returns, every chunk of the segment has been
    /// produced (take them with [`Self::drain_ready`]): all its frames, its last partial
    /// fragment included, and all of its audio the audio encoder has encoded.
    ///
    /// isofmp4mux finalises a fragment only once every input has data past its end, which
    /// at a segment's end would be the next segment's frames and sound. So once every
    /// encoded frame and all the audio the encoder has released (a marker sent after the
    /// segment's audio has reached the encoder's input) are in the segment's muxer, its
    /// inputs are ended and the muxer writes out everything. An audio encoder works in
    /// whole frames and may keep a little more (AAC's one-frame delay, Opus's 6.5 ms
    /// lookahead), so the last part of a segment's sound that does not fill a frame goes
    /// out at the start of the next segment's audio, where it belongs on the timeline.
    pub fn end_segment(&mut self) -> Result<(), MediaError> {
        if self.segment.is_none() && self.mux.is_none() {
            return Ok(());
        }
        let deadline = Instant::now() + self.settings.wait_timeout;
        let frames_pushed = self.frames_pushed;
        let shared = self.shared.clone();
        self.wait_until(deadline, "the segment's last frame to be encoded", || {
            shared.frames_out.load(Ordering::Acquire) >= frames_pushed
        })?;
        if let Some(src) = self.audio_src.clone() {
            self.audio_syncs_sent += 1;
            let seq = self.audio_syncs_sent;
            let marker = gst::Structure::builder(AUDIO_SYNC)
                .field("seq", seq)
                .build();
            src.send_event(gst::event::CustomDownstream::new(marker));
            self.wait_until(deadline, "the segment's audio to be encoded", || {
                shared.audio_synced.load(Ordering::Acquire) >= seq
            })?;
        }
        self.segment = None;
        self.close_mux(deadline)
    }

    /// Ends the open muxer's inputs and waits until it has written everything out.
    fn close_mux(&mut self, deadline: Instant) -> Result<(), MediaError> {
        let Some(graph) = self.mux.take() else {
            return Ok(());
        };
        if let Ok(mut route) = self.shared.route.lock() {
            route.video = None;
            route.audio = None;
        }
        let _ = graph.video_src.end_of_stream();
        if let Some(src) = &graph.audio_src {
            let _ = src.end_of_stream();
        }
        let bus = graph.pipeline.bus().expect("pipelines have a bus");
        let result = loop {
            self.pump();
            if let Some(e) = self.bus_error() {
                break Err(e);
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(MediaError::Timeout {
                    what: "the segment's muxer to write its last fragment".into(),
                    after: self.settings.wait_timeout,
                });
            }
            let wait = (deadline - now).min(Duration::from_millis(20));
            let msg = bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(wait.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            );
            match msg.as_ref().map(|m| m.view()) {
                Some(gst::MessageView::Eos(_)) => break Ok(()),
                Some(gst::MessageView::Error(err)) => break Err(element_error(err)),
                _ => {}
            }
        };
        // Null joins the muxer's threads; its appsink handed on every chunk before the EOS.
        let _ = graph.pipeline.set_state(gst::State::Null);
        result?;
        self.pump();
        Ok(())
    }

    /// Polls `done` until it holds, taking chunks off the queue meanwhile so a full queue
    /// cannot stall the muxer this waits for.
    fn wait_until(
        &self,
        deadline: Instant,
        what: &str,
        done: impl Fn() -> bool,
    ) -> Result<(), MediaError> {
        while !done() {
            self.check_bus()?;
            self.pump();
            if Instant::now() >= deadline {
                return Err(MediaError::Timeout {
                    what: format!("{what} ({})", self.encoder_name),
                    after: self.settings.wait_timeout,
                });
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Moves what is in the chunk queue to the backlog.
    fn pump(&self) {
        let mut backlog = self.backlog.borrow_mut();
        while let Ok(item) = self.chunks.try_recv() {
            backlog.push_back(item);
        }
    }

    fn take_backlog(&self) -> Option<Result<MediaChunk, MediaError>> {
        match self.backlog.borrow_mut().pop_front()? {
            Output::Chunk(c) => Some(Ok(c)),
            Output::Failed(e) => Some(Err(e)),
        }
    }

    /// The next chunk, waiting up to `timeout`; `Ok(None)` when none arrived in time.
    pub fn next_chunk(&self, timeout: Duration) -> Result<Option<MediaChunk>, MediaError> {
        if let Some(item) = self.take_backlog() {
            return item.map(Some);
        }
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
        self.pump();
        let mut out = Vec::new();
        while let Some(item) = self.take_backlog() {
            out.push(item?);
        }
        Ok(out)
    }

    /// The MSE mime type, known once the encoders negotiated (after the first frame).
    pub fn mime(&self) -> Option<String> {
        let video = codec::video_codec_from_caps(&*sink_caps(&self.video_sink)?)?;
        let audio: Option<AudioCodec> = match &self.audio_sink {
            Some(sink) => Some(codec::audio_codec_from_caps(&*sink_caps(sink)?)?),
            None => None,
        };
        Some(codec::mse_mime(&video, audio))
    }

    /// Ends the stream: the encoders flush what they still hold (the end of the sound),
    /// which goes out with the last segment; waits (up to `timeout`) and returns the chunks
    /// not yet taken. The pipelines are stopped whatever happens.
    pub fn finish(mut self, timeout: Duration) -> Result<Vec<MediaChunk>, MediaError> {
        let deadline = Instant::now() + timeout;
        let _ = self.video_src.end_of_stream();
        if let Some(src) = &self.audio_src {
            let _ = src.end_of_stream();
        }
        let bus = self.pipeline.bus().expect("pipelines have a bus");
        loop {
            self.pump();
            if let Some(e) = self.mux.as_ref().and_then(|m| pipeline_error(&m.pipeline)) {
                return Err(e);
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
        // Everything the encoders made is now in the open muxer, or held for a new one.
        let held = self.shared.route.lock().map_or(0, |r| r.held.len());
        if self.mux.is_none() && held > 0 {
            self.open_mux(self.last_segment)?;
        }
        self.segment = None;
        self.close_mux(deadline)?;
        self.drain_ready()
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

    /// An error from the encoding pipeline or the open segment's muxer.
    fn bus_error(&self) -> Option<MediaError> {
        pipeline_error(&self.pipeline)
            .or_else(|| self.mux.as_ref().and_then(|m| pipeline_error(&m.pipeline)))
    }
}

/// The caps an appsink negotiated.
fn sink_caps(sink: &gst_app::AppSink) -> Option<gst::Caps> {
    sink.static_pad("sink")?.current_caps()
}

fn pipeline_error(pipeline: &gst::Pipeline) -> Option<MediaError> {
    let bus = pipeline.bus()?;
    let msg = bus.pop_filtered(&[gst::MessageType::Error])?;
    match msg.view() {
        gst::MessageView::Error(err) => Some(element_error(err)),
        _ => None,
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
        // up at once instead of holding up the state changes below for its whole timeout.
        let (_, disconnected) = sync_channel(1);
        drop(std::mem::replace(&mut self.chunks, disconnected));
        // Null joins the streaming threads and frees every buffer the pipelines hold; the
        // muxer first, which unblocks an encoder thread waiting for room in its inputs.
        if let Some(graph) = self.mux.take() {
            let _ = graph.pipeline.set_state(gst::State::Null);
        }
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
