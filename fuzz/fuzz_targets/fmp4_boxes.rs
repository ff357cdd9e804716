//! The fMP4 box splitter and box readers on arbitrary bytes: nothing panics, and pushing the
//! stream in pieces (sizes taken from the input's first bytes) gives the same chunks, or the
//! same error, as pushing it whole.

#![no_main]

// The replica's own source, included by path (see `fuzz/Cargo.toml`).
#[allow(dead_code)]
#[path = "../../replica/src/media/boxes.rs"]
mod boxes;

use boxes::{BoxChunk, ChunkKind, ChunkSplitter, find_box, tfdt_decode_times, top_level_boxes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: how many piece sizes follow; then the sizes; the rest is the stream.
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(count);
    let sizes: Vec<usize> = if sizes.is_empty() {
        vec![usize::MAX]
    } else {
        sizes.iter().map(|&s| usize::from(s).max(1)).collect()
    };

    let whole = ChunkSplitter::new().push(stream);

    let mut splitter = ChunkSplitter::new();
    let mut chunks: Vec<BoxChunk> = Vec::new();
    let mut error = None;
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let n = sizes[i % sizes.len()].min(stream.len() - pos);
        i += 1;
        match splitter.push(&stream[pos..pos + n]) {
            Ok(out) => chunks.extend(out),
            Err(e) => {
                assert_eq!(splitter.push(&[]).unwrap_err(), e, "errors stick");
                error = Some(e);
                break;
            }
        }
        pos += n;
    }

    let mut emitted = 0;
    for chunk in &chunks {
        let boxes = top_level_boxes(&chunk.bytes).expect("a chunk holds whole boxes");
        let (last, _, _) = boxes.last().expect("a chunk is not empty");
        match chunk.kind {
            ChunkKind::Init => assert_eq!(last, b"moov"),
            ChunkKind::Fragment => assert_eq!(last, b"mdat"),
        }
        assert_eq!(
            chunk.bytes[..],
            stream[emitted..emitted + chunk.bytes.len()]
        );
        emitted += chunk.bytes.len();
    }
    match whole {
        Ok(whole) => {
            assert_eq!(error, None);
            assert_eq!(chunks, whole);
            assert_eq!(emitted + splitter.buffered(), stream.len());
        }
        Err(e) => assert_eq!(error, Some(e)),
    }

    if let Ok(boxes) = top_level_boxes(stream) {
        let end = boxes.last().map_or(0, |&(_, offset, size)| offset + size);
        assert_eq!(end, stream.len());
    }
    let _ = find_box(stream, &[b"moov", b"trak", b"mdia"]);
    if let Some(moof) = find_box(stream, &[b"moof"]) {
        let _ = tfdt_decode_times(moof);
    }
    let _ = tfdt_decode_times(stream);
});
