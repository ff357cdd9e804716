//! Decodes a recorded fMP4 stream into RGB24 frames for analysis.
//!
//! The recordings are what a client received: an init segment and `moof`/`mdat` fragments
//! from `isofmp4mux`, with H.264 video and perhaps an audio track. GStreamer's `decodebin`
//! reads them like any MP4. A file that is truncated or not a video at all must end in an
//! error rather than a hang or a quietly shorter video: the file's top-level boxes are
//! checked first (the demuxer plays a recording cut inside a fragment up to the cut and
//! reports nothing), the bus is watched while frames are pulled, and a decode that stops
//! making progress times out.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

/// How long a decode may go without a new frame before it is declared stuck. Generous: a
/// loaded machine may take a while to open a decoder, but a broken file should not hold an
/// eval run for long.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the bus is checked for errors while waiting for a frame.
const POLL: Duration = Duration::from_millis(100);

/// A decoded recording: every video frame as tightly packed RGB24, `width * 3` bytes a row
/// (GStreamer's row padding removed), so analysis can index pixels without knowing strides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedVideo {
    pub width: u32,
    pub height: u32,
    pub frames: Vec<Vec<u8>>,
    /// Each frame's presentation time, for pacing and segment boundaries.
    pub pts_ns: Vec<u64>,
}

impl DecodedVideo {
    /// The frames as slices, the form the analysis functions take.
    pub fn frame_refs(&self) -> Vec<&[u8]> {
        self.frames.iter().map(Vec::as_slice).collect()
    }
}

/// Why a recording could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The recording stops inside a box: the stream was cut off mid-fragment.
    #[error("truncated MP4: the box at byte {offset} needs {size} bytes, the file has {len}")]
    Truncated { offset: u64, size: u64, len: u64 },
    #[error("not an MP4 file: malformed box header at byte {offset}")]
    Malformed { offset: u64 },
    #[error("cannot initialise GStreamer: {0}")]
    Init(String),
    #[error("GStreamer element {0} is not installed")]
    MissingElement(&'static str),
    /// `filesrc` takes its location as a UTF-8 string.
    #[error("path {} is not valid UTF-8", .0.display())]
    Path(PathBuf),
    /// An error posted on the pipeline's bus: a missing file, an unknown format, a corrupt
    /// stream.
    #[error("{element}: {message}{}", debug.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Stream {
        element: String,
        message: String,
        debug: Option<String>,
    },
    #[error("cannot build the decoding pipeline: {0}")]
    Build(&'static str),
    #[error("the decoding pipeline would not start")]
    StateChange,
    #[error("no frame decoded for {0:?}")]
    Stalled(Duration),
    #[error("the recording holds no video frames")]
    NoFrames,
    #[error("cannot read a decoded frame: {0}")]
    Frame(String),
    /// The analysis assumes one frame size per recording.
    #[error("frame size changed from {from:?} to {to:?}")]
    SizeChanged { from: (u32, u32), to: (u32, u32) },
}

/// Decodes every video frame of the fMP4 file at `path` into RGB24.
pub fn decode_file(path: &Path) -> Result<DecodedVideo, DecodeError> {
    let location = path
        .to_str()
        .ok_or_else(|| DecodeError::Path(path.to_path_buf()))?;
    check_boxes(path)?;
    gst::init().map_err(|e| DecodeError::Init(e.to_string()))?;

    let pipeline = Pipeline(gst::Pipeline::new());
    let src = make("filesrc")?;
    // Set as a property, never formatted into a launch string: any path is taken literally.
    src.set_property("location", location);
    let decodebin = make("decodebin")?;
    let convert = make("videoconvert")?;
    let sink = gst_app::AppSink::builder()
        .caps(
            &gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgb)
                .build(),
        )
        .sync(false)
        .build();
    pipeline
        .0
        .add_many([&src, &decodebin, &convert, sink.upcast_ref()])
        .map_err(|_| DecodeError::Build("cannot add the elements"))?;
    src.link(&decodebin)
        .map_err(|_| DecodeError::Build("cannot link filesrc to decodebin"))?;
    convert
        .link(&sink)
        .map_err(|_| DecodeError::Build("cannot link videoconvert to the RGB appsink"))?;
    link_streams(&pipeline.0, &decodebin, &convert);

    let bus = pipeline
        .0
        .bus()
        .ok_or(DecodeError::Build("a pipeline without a bus"))?;
    if pipeline.0.set_state(gst::State::Playing).is_err() {
        return Err(bus_error(&bus).unwrap_or(DecodeError::StateChange));
    }

    let mut video: Option<DecodedVideo> = None;
    let mut last_progress = Instant::now();
    loop {
        if let Some(error) = bus_error(&bus) {
            return Err(error);
        }
        match sink.try_pull_sample(gst::ClockTime::from_nseconds(POLL.as_nanos() as u64)) {
            Some(sample) => {
                push_frame(&mut video, &sample)?;
                last_progress = Instant::now();
            }
            None if sink.is_eos() => break,
            None if last_progress.elapsed() >= STALL_TIMEOUT => {
                return Err(DecodeError::Stalled(STALL_TIMEOUT));
            }
            None => {}
        }
    }
    // An error posted just before the end still fails the decode.
    if let Some(error) = bus_error(&bus) {
        return Err(error);
    }
    video.ok_or(DecodeError::NoFrames)
}

/// Walks the file's top-level boxes and fails unless the last one ends exactly at the end of
/// the file. A cut on a fragment boundary is indistinguishable from a stream that ended
/// there, and reads as the shorter video it is.
fn check_boxes(path: &Path) -> Result<(), DecodeError> {
    let io_error = |source| DecodeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let len = file.metadata().map_err(io_error)?.len();
    let mut offset = 0;
    while offset < len {
        let left = len - offset;
        let mut header = [0u8; 16];
        let header_len = left.min(16) as usize;
        file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
        file.read_exact(&mut header[..header_len])
            .map_err(io_error)?;
        if header_len < 8 {
            return Err(DecodeError::Truncated {
                offset,
                size: 8,
                len,
            });
        }
        let size = match u32::from_be_bytes([header[0], header[1], header[2], header[3]]) {
            // The last box, running to the end of the file.
            0 => left,
            // A 64-bit size follows the type.
            1 if header_len == 16 => {
                u64::from_be_bytes(header[8..16].try_into().unwrap_or_default())
            }
            1 => {
                return Err(DecodeError::Truncated {
                    offset,
                    size: 16,
                    len,
                });
            }
            size => u64::from(size),
        };
        if size < 8 {
            return Err(DecodeError::Malformed { offset });
        }
        if size > left {
            return Err(DecodeError::Truncated { offset, size, len });
        }
        offset += size;
    }
    Ok(())
}

/// Sets the pipeline to `Null` however the decode ends, so its threads and file are released.
struct Pipeline(gst::Pipeline);

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

fn make(factory: &'static str) -> Result<gst::Element, DecodeError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| DecodeError::MissingElement(factory))
}

/// Links `decodebin`'s video pad to `convert` once the file's streams are known. Any other
/// stream (an audio track) goes to a `fakesink`: left unlinked, it could stop the demuxer.
fn link_streams(pipeline: &gst::Pipeline, decodebin: &gst::Element, convert: &gst::Element) {
    let pipeline = pipeline.downgrade();
    let convert = convert.downgrade();
    decodebin.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(convert)) = (pipeline.upgrade(), convert.upgrade()) else {
            return;
        };
        let is_video = pad
            .current_caps()
            .and_then(|caps| caps.structure(0).map(|s| s.name().starts_with("video/")))
            .unwrap_or(false);
        let linked = if is_video {
            convert
                .static_pad("sink")
                .filter(|sink| !sink.is_linked())
                .is_some_and(|sink| pad.link(&sink).is_ok())
        } else {
            false
        };
        if linked {
            return;
        }
        // A second video track or any other stream is drained and ignored.
        if let Ok(fakesink) = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .build()
            && pipeline.add(&fakesink).is_ok()
        {
            let _ = fakesink.sync_state_with_parent();
            if let Some(sink) = fakesink.static_pad("sink") {
                let _ = pad.link(&sink);
            }
        }
    });
}

/// The first error waiting on the bus, if any; other messages are dropped.
fn bus_error(bus: &gst::Bus) -> Option<DecodeError> {
    let message = bus.pop_filtered(&[gst::MessageType::Error])?;
    let gst::MessageView::Error(error) = message.view() else {
        return None;
    };
    Some(DecodeError::Stream {
        element: error
            .src()
            .map(|s| s.path_string().to_string())
            .unwrap_or_else(|| "pipeline".into()),
        message: error.error().to_string(),
        debug: error.debug().map(|d| d.to_string()),
    })
}

/// Copies one decoded sample into `video`, dropping the row padding.
fn push_frame(video: &mut Option<DecodedVideo>, sample: &gst::Sample) -> Result<(), DecodeError> {
    let frame_error = |what: &str| DecodeError::Frame(what.to_string());
    let caps = sample
        .caps()
        .ok_or_else(|| frame_error("sample without caps"))?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| frame_error(&e.to_string()))?;
    let buffer = sample
        .buffer()
        .ok_or_else(|| frame_error("sample without a buffer"))?;
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
        .map_err(|e| frame_error(&e.to_string()))?;
    let (width, height) = (frame.width(), frame.height());
    let row = width as usize * 3;
    let stride = usize::try_from(frame.plane_stride()[0])
        .ok()
        .filter(|&s| s >= row)
        .ok_or_else(|| frame_error("RGB plane stride shorter than a row"))?;
    let data = frame
        .plane_data(0)
        .map_err(|e| frame_error(&e.to_string()))?;
    let mut rgb = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        let line = data
            .get(y * stride..y * stride + row)
            .ok_or_else(|| frame_error("RGB plane shorter than its rows"))?;
        rgb.extend_from_slice(line);
    }

    let video = video.get_or_insert_with(|| DecodedVideo {
        width,
        height,
        frames: Vec::new(),
        pts_ns: Vec::new(),
    });
    if (video.width, video.height) != (width, height) {
        return Err(DecodeError::SizeChanged {
            from: (video.width, video.height),
            to: (width, height),
        });
    }
    // A frame without a timestamp (never seen from MP4) keeps its predecessor's.
    let pts = buffer
        .pts()
        .map(gst::ClockTime::nseconds)
        .unwrap_or_else(|| video.pts_ns.last().copied().unwrap_or(0));
    video.frames.push(rgb);
    video.pts_ns.push(pts);
    Ok(())
}

#[cfg(test)]
mod tests;
