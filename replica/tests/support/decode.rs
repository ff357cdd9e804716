//! Decoding fMP4 output back with GStreamer's decodebin, for the tests that check what an
//! encoder wrote. Lean on purpose (GStreamer only), so the encoder and broadcast tests can
//! include it alone: `#[path = "support/decode.rs"] mod decode;`.

use gstreamer as gst;
use gstreamer::prelude::*;

/// Decodes an fMP4 byte stream: (frames, width, height). Panics on a decoding error.
pub fn decode_fmp4(bytes: &[u8]) -> (usize, i32, i32) {
    gst::init().unwrap();
    let file = tempfile::Builder::new().suffix(".mp4").tempfile().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
        file.path().display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gstreamer_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let (mut frames, mut w, mut h) = (0, 0, 0);
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
        w = s.get::<i32>("width").unwrap();
        h = s.get::<i32>("height").unwrap();
        frames += 1;
    }
    let errors = pipeline
        .bus()
        .unwrap()
        .pop_filtered(&[gst::MessageType::Error])
        .map(|m| format!("{m:?}"));
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(errors, None);
    (frames, w, h)
}
