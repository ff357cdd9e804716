//! Proves the GStreamer stack is real: the elements the encoder needs can be made, and a
//! short pipeline turns RGB frames into fragmented MP4 bytes.

use framecast_replica::media::elements;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

#[test]
fn required_elements_can_be_made() {
    for factory in ["appsrc", "x264enc", "isofmp4mux", "videoconvert", "appsink"] {
        let element = elements::make(factory).unwrap_or_else(|e| panic!("{factory}: {e}"));
        assert_eq!(
            element.factory().map(|f| f.name().to_string()).as_deref(),
            Some(factory)
        );
    }
    elements::require(&elements::REQUIRED_VIDEO_ELEMENTS).unwrap();
}

/// Box types at the top level of an ISO BMFF byte stream, in order.
fn top_level_boxes(bytes: &[u8]) -> Vec<String> {
    let mut boxes = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        boxes.push(String::from_utf8_lossy(&bytes[pos + 4..pos + 8]).into_owned());
        if size < 8 {
            break;
        }
        pos += size;
    }
    boxes
}

#[test]
fn rgb_frames_become_fragmented_mp4() {
    elements::init().unwrap();
    let (width, height, fps, frames) = (64i32, 48i32, 8i32, 16u64);
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time is-live=false \
           caps=video/x-raw,format=RGB,width={width},height={height},framerate={fps}/1 \
         ! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={} bframes=0 \
         ! h264parse ! isofmp4mux fragment-duration=500000000 ! appsink name=sink sync=false",
        fps / 2
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();

    let frame_ns = 1_000_000_000 / fps as u64;
    for i in 0..frames {
        let mut buffer =
            gst::Buffer::from_mut_slice(vec![(i * 16) as u8; (width * height * 3) as usize]);
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i * frame_ns));
            b.set_duration(gst::ClockTime::from_nseconds(frame_ns));
        }
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();

    let mut bytes = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let buffer = sample.buffer().unwrap();
        bytes.extend_from_slice(&buffer.map_readable().unwrap());
    }
    pipeline.set_state(gst::State::Null).unwrap();

    let boxes = top_level_boxes(&bytes);
    assert_eq!(boxes.first().map(String::as_str), Some("ftyp"), "{boxes:?}");
    assert!(boxes.iter().any(|b| b == "moov"), "{boxes:?}");
    let fragments = boxes.iter().filter(|b| *b == "moof").count();
    assert!(fragments >= 2, "2 s of video in 0.5 s fragments: {boxes:?}");
    assert_eq!(
        fragments,
        boxes.iter().filter(|b| *b == "mdat").count(),
        "{boxes:?}"
    );
}
