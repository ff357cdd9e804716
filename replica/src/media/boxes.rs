//! ISO BMFF (MP4) box framing: cuts the muxer's byte stream into the chunks a Media Source
//! Extensions player appends, so every binary frame we send holds whole boxes.
//!
//! The muxer may hand out a fragment as several buffers, or several boxes in one buffer;
//! [`ChunkSplitter`] re-frames whatever it gets: the initialisation segment (`ftyp` + `moov`)
//! once, then one chunk per `moof` + `mdat` pair.

/// What a chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// `ftyp` + `moov`: codec configuration; appended once before any fragment.
    Init,
    /// `moof` + `mdat` (with any `styp`/`sidx`/`prft` that precede them): one fragment.
    Fragment,
}

/// A run of whole top-level boxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxChunk {
    /// Init segment or fragment.
    pub kind: ChunkKind,
    /// The bytes, starting and ending on box boundaries.
    pub bytes: Vec<u8>,
}

/// The stream is not valid ISO BMFF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed MP4 box stream at byte {offset}: {reason}")]
pub struct BoxError {
    /// Offset from the start of the stream.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// Reads the header of the box at the start of `bytes`: `(type, total size)`.
///
/// Returns `Ok(None)` when more bytes are needed to know.
pub fn box_header(bytes: &[u8]) -> Result<Option<([u8; 4], u64)>, String> {
    if bytes.len() < 8 {
        return Ok(None);
    }
    let size32 = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let kind = [bytes[4], bytes[5], bytes[6], bytes[7]];
    let size = match size32 {
        // Size 1: a 64-bit size follows the type.
        1 => {
            if bytes.len() < 16 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[8..16]);
            let size = u64::from_be_bytes(b);
            if size < 16 {
                return Err(format!(
                    "box `{}` has 64-bit size {size} < 16",
                    fourcc(&kind)
                ));
            }
            size
        }
        // Size 0 ("to end of file") cannot be framed in a live stream.
        0 => return Err(format!("box `{}` has size 0 (open-ended)", fourcc(&kind))),
        n if n < 8 => return Err(format!("box `{}` has size {n} < 8", fourcc(&kind))),
        n => u64::from(n),
    };
    Ok(Some((kind, size)))
}

/// A four-character code as text, for messages.
pub fn fourcc(kind: &[u8; 4]) -> String {
    String::from_utf8_lossy(kind).into_owned()
}

/// Re-frames an fMP4 byte stream into init and fragment chunks.
#[derive(Debug, Default)]
pub struct ChunkSplitter {
    pending: Vec<u8>,
    /// Bytes of complete boxes at the front of `pending` that belong to the open chunk.
    open_len: usize,
    open_kind: Option<ChunkKind>,
    consumed: u64,
    saw_init: bool,
}

impl ChunkSplitter {
    /// An empty splitter at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns every chunk that is now complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<BoxChunk>, BoxError> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let rest = &self.pending[self.open_len..];
            let header = box_header(rest).map_err(|reason| BoxError {
                offset: self.consumed + self.open_len as u64,
                reason,
            })?;
            let Some((kind, size)) = header else { break };
            let size = usize::try_from(size).map_err(|_| BoxError {
                offset: self.consumed + self.open_len as u64,
                reason: format!("box `{}` is too large", fourcc(&kind)),
            })?;
            if rest.len() < size {
                break;
            }
            // A whole box is available: decide which chunk it belongs to.
            match &kind {
                b"ftyp" | b"moov" => {
                    self.open_kind.get_or_insert(ChunkKind::Init);
                    self.open_len += size;
                    if &kind == b"moov" {
                        self.saw_init = true;
                        out.push(self.close(ChunkKind::Init));
                    }
                }
                b"moof" => {
                    if !self.saw_init {
                        return Err(BoxError {
                            offset: self.consumed + self.open_len as u64,
                            reason: "`moof` before the initialisation segment".into(),
                        });
                    }
                    self.open_kind = Some(ChunkKind::Fragment);
                    self.open_len += size;
                }
                b"mdat" => {
                    if self.open_kind != Some(ChunkKind::Fragment) {
                        return Err(BoxError {
                            offset: self.consumed + self.open_len as u64,
                            reason: "`mdat` without a preceding `moof`".into(),
                        });
                    }
                    self.open_len += size;
                    out.push(self.close(ChunkKind::Fragment));
                }
                // styp, sidx, prft, mfra, free...: travel with the next chunk boundary.
                _ => self.open_len += size,
            }
        }
        Ok(out)
    }

    /// Bytes held back because their box is not complete yet (or trailing boxes such as
    /// `mfra` that close no chunk).
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    fn close(&mut self, kind: ChunkKind) -> BoxChunk {
        let rest = self.pending.split_off(self.open_len);
        let bytes = std::mem::replace(&mut self.pending, rest);
        self.consumed += bytes.len() as u64;
        self.open_len = 0;
        self.open_kind = None;
        BoxChunk { kind, bytes }
    }
}

/// Top-level boxes of a complete buffer: `(type, offset, size)`; for tests and tools.
pub fn top_level_boxes(bytes: &[u8]) -> Result<Vec<([u8; 4], usize, usize)>, String> {
    let mut boxes = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let (kind, size) = box_header(&bytes[pos..])?
            .ok_or_else(|| format!("truncated box header at byte {pos}"))?;
        let size = usize::try_from(size).map_err(|_| "box too large".to_string())?;
        // `pos < len`, so this cannot overflow where `pos + size` could (a 64-bit size).
        if size > bytes.len() - pos {
            return Err(format!(
                "box `{}` at {pos} overruns the buffer",
                fourcc(&kind)
            ));
        }
        boxes.push((kind, pos, size));
        pos += size;
    }
    Ok(boxes)
}

/// The payload of the box at `offset` with total `size` (as [`top_level_boxes`] gives them):
/// after the 8-byte header, or the 16-byte one of a box with a 64-bit size.
fn payload(bytes: &[u8], offset: usize, size: usize) -> &[u8] {
    let header = if bytes[offset..offset + 4] == 1u32.to_be_bytes() {
        16
    } else {
        8
    };
    &bytes[offset + header..offset + size]
}

/// Finds the first box of type `path[0]` inside `bytes`, then `path[1]` inside it, and so
/// on; returns the payload (after the box header) of the last one.
pub fn find_box<'a>(bytes: &'a [u8], path: &[&[u8; 4]]) -> Option<&'a [u8]> {
    let (first, rest) = path.split_first()?;
    let (_, offset, size) = top_level_boxes(bytes)
        .ok()?
        .into_iter()
        .find(|(kind, _, _)| kind == *first)?;
    let payload = payload(bytes, offset, size);
    if rest.is_empty() {
        Some(payload)
    } else {
        find_box(payload, rest)
    }
}

/// `baseMediaDecodeTime` of every `traf` in a `moof` payload, in track order.
pub fn tfdt_decode_times(moof_payload: &[u8]) -> Vec<u64> {
    let Ok(boxes) = top_level_boxes(moof_payload) else {
        return Vec::new();
    };
    boxes
        .into_iter()
        .filter(|(kind, _, _)| kind == b"traf")
        .filter_map(|(_, offset, size)| {
            let tfdt = find_box(payload(moof_payload, offset, size), &[b"tfdt"])?;
            // FullBox: version (1) + flags (3), then a 32- or 64-bit time.
            match tfdt.first()? {
                1 => Some(u64::from_be_bytes(tfdt.get(4..12)?.try_into().ok()?)),
                _ => Some(u64::from(u32::from_be_bytes(
                    tfdt.get(4..8)?.try_into().ok()?,
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(payload);
        b
    }

    fn stream() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let init = [mp4_box(b"ftyp", b"isom"), mp4_box(b"moov", &[1; 20])].concat();
        let frag1 = [mp4_box(b"moof", &[2; 12]), mp4_box(b"mdat", &[3; 40])].concat();
        let frag2 = [mp4_box(b"moof", &[4; 12]), mp4_box(b"mdat", &[5; 7])].concat();
        (init, frag1, frag2)
    }

    #[test]
    fn whole_stream_in_one_push_splits_on_box_boundaries() {
        let (init, f1, f2) = stream();
        let all = [init.clone(), f1.clone(), f2.clone()].concat();
        let chunks = ChunkSplitter::new().push(&all).unwrap();
        assert_eq!(
            chunks,
            vec![
                BoxChunk {
                    kind: ChunkKind::Init,
                    bytes: init
                },
                BoxChunk {
                    kind: ChunkKind::Fragment,
                    bytes: f1
                },
                BoxChunk {
                    kind: ChunkKind::Fragment,
                    bytes: f2
                },
            ]
        );
    }

    #[test]
    fn byte_by_byte_pushes_give_the_same_chunks() {
        let (init, f1, f2) = stream();
        let all = [init.clone(), f1.clone(), f2.clone()].concat();
        let mut splitter = ChunkSplitter::new();
        let mut chunks = Vec::new();
        for b in &all {
            chunks.extend(splitter.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].bytes, f1);
        assert_eq!(chunks[2].bytes, f2);
        assert_eq!(splitter.buffered(), 0);
    }

    #[test]
    fn incomplete_fragment_is_held_back() {
        let (init, f1, _) = stream();
        let mut splitter = ChunkSplitter::new();
        let chunks = splitter
            .push(&[init, f1[..f1.len() - 1].to_vec()].concat())
            .unwrap();
        assert_eq!(chunks.len(), 1, "only the init segment is complete");
        assert_eq!(splitter.push(&f1[f1.len() - 1..]).unwrap().len(), 1);
    }

    #[test]
    fn malformed_streams_are_errors() {
        let err = ChunkSplitter::new()
            .push(&[0, 0, 0, 4, b'm', b'o', b'o', b'f'])
            .unwrap_err();
        assert!(err.reason.contains("size 4"), "{err}");
        let frag = [mp4_box(b"moof", &[]), mp4_box(b"mdat", &[])].concat();
        let err = ChunkSplitter::new().push(&frag).unwrap_err();
        assert!(
            err.reason.contains("before the initialisation segment"),
            "{err}"
        );
    }

    #[test]
    fn large_box_size_is_read() {
        let mut b = 1u32.to_be_bytes().to_vec();
        b.extend_from_slice(b"mdat");
        b.extend_from_slice(&20u64.to_be_bytes());
        b.extend_from_slice(&[0; 4]);
        assert_eq!(box_header(&b).unwrap(), Some((*b"mdat", 20)));
    }

    fn large_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut b = 1u32.to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(&(payload.len() as u64 + 16).to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn a_64_bit_size_past_the_end_is_an_error_not_an_overflow() {
        // `pos + size` overflowed here (a panic in debug builds, a wrong slice in release).
        let mut bytes = mp4_box(b"free", &[]);
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(b"mdat");
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(top_level_boxes(&bytes).unwrap_err().contains("overruns"));
        assert_eq!(find_box(&bytes, &[b"mdat"]), None);
        assert_eq!(tfdt_decode_times(&bytes), Vec::<u64>::new());
    }

    #[test]
    fn payloads_of_boxes_with_64_bit_sizes_start_after_the_long_header() {
        let tfdt = large_box(
            b"tfdt",
            &[[0, 0, 0, 0].as_slice(), &7u32.to_be_bytes()].concat(),
        );
        let moof = large_box(b"traf", &tfdt);
        assert_eq!(find_box(&moof, &[b"traf", b"tfdt"]), Some(&tfdt[16..]));
        assert_eq!(tfdt_decode_times(&moof), vec![7]);
    }

    #[test]
    fn tfdt_is_read_from_version_0_and_1_boxes() {
        let tfdt_v1 = mp4_box(
            b"tfdt",
            &[[1, 0, 0, 0].as_slice(), &90_000u64.to_be_bytes()].concat(),
        );
        let tfdt_v0 = mp4_box(
            b"tfdt",
            &[[0, 0, 0, 0].as_slice(), &48_000u32.to_be_bytes()].concat(),
        );
        let moof = [mp4_box(b"traf", &tfdt_v1), mp4_box(b"traf", &tfdt_v0)].concat();
        assert_eq!(tfdt_decode_times(&moof), vec![90_000, 48_000]);
    }
}
