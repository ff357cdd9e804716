//! Where the WebSocket frames a replica sends start and end, read from frame headers only.
//!
//! The router tunnels an upgraded connection as bytes. When the replica dies mid-frame, the
//! client has received part of a frame and its parser waits for the rest; anything the router
//! then says would be read as payload. [`FrameBoundaries`] follows the replica→client stream
//! chunk by chunk so the router knows, at that moment, how to finish the frame in progress
//! ([`FrameBoundaries::completion`]) and whether the replica already sent a Close frame.
//!
//! It never copies or decodes payloads: it keeps the at most 14 bytes of a header split across
//! chunks and counts the payload bytes still owed. The one exception is text: its last (at most
//! 3) payload bytes of each chunk are looked at so that a UTF-8 character cut in two can be
//! completed with valid bytes; a client drops the connection on invalid UTF-8 in a text message.

/// A frame header: 2 bytes, up to 8 of extended length, 4 of mask key.
const MAX_HEADER: usize = 14;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;

/// The frame currently being received, once its first header byte has been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHead {
    fin: bool,
    opcode: u8,
}

/// A UTF-8 character cut short at the end of a text payload: its first byte and how many of
/// its `len` bytes were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CutCharacter {
    lead: u8,
    sent: u8,
    len: u8,
}

impl CutCharacter {
    /// The bytes that make the character valid UTF-8 (the second byte of E0/F0 sequences has
    /// a narrower range than 0x80..=0xBF).
    fn rest(self) -> impl Iterator<Item = u8> {
        (self.sent..self.len).map(move |i| match (i, self.lead) {
            (1, 0xE0) => 0xA0,
            (1, 0xF0) => 0x90,
            _ => 0x80,
        })
    }

    /// The cut character after `bytes` (the end of a text payload), given the one before them.
    fn after(mut cut: Option<Self>, bytes: &[u8]) -> Option<Self> {
        for &b in bytes {
            cut = match (b, cut) {
                (0x80..=0xBF, Some(c)) if c.sent + 1 < c.len => Some(Self {
                    sent: c.sent + 1,
                    ..c
                }),
                (0xC2..=0xDF, _) => Some(Self::lead(b, 2)),
                (0xE0..=0xEF, _) => Some(Self::lead(b, 3)),
                (0xF0..=0xF4, _) => Some(Self::lead(b, 4)),
                // ASCII, the last byte of a character, or bytes that are not UTF-8 anyway.
                _ => None,
            };
        }
        cut
    }

    fn lead(lead: u8, len: u8) -> Self {
        Self { lead, sent: 1, len }
    }
}

/// Bytes that would finish the frame in progress would be too many to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the frame in progress still owes {owed} payload bytes, over the {limit}-byte padding limit"
)]
pub struct PaddingTooLarge {
    /// Payload bytes the client still expects.
    pub owed: u64,
    /// The most the router pads.
    pub limit: u64,
}

/// Frame boundaries of one server→client WebSocket byte stream (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct FrameBoundaries {
    /// The header of the frame in progress, while it is incomplete.
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Payload bytes of the frame in progress not yet seen (header complete).
    payload_left: u64,
    /// Set from the first header byte until the frame's last payload byte.
    frame: Option<FrameHead>,
    /// The opcode (text or binary) of a fragmented message whose final frame has not come.
    open_message: Option<u8>,
    /// A UTF-8 character cut at the end of the text payload seen so far.
    cut: Option<CutCharacter>,
    close_seen: bool,
}

impl FrameBoundaries {
    /// At the start of the stream, between frames.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the server has sent (at least the header of) a Close frame: the connection is
    /// then ending on the server's terms, and the router must add nothing.
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// The opcode of the frame in progress (`None` between frames).
    pub fn opcode_in_progress(&self) -> Option<u8> {
        self.frame.map(|f| f.opcode)
    }

    /// Follows `chunk`, the next bytes forwarded to the client.
    pub fn observe(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.payload_left > 0 {
                let n =
                    usize::try_from(self.payload_left).map_or(rest.len(), |l| l.min(rest.len()));
                if self.text_payload() {
                    let tail = &rest[n.saturating_sub(3)..n];
                    // Three bytes hold any cut character whole, so older bytes do not matter.
                    let before = if n >= 3 { None } else { self.cut };
                    self.cut = CutCharacter::after(before, tail);
                }
                self.payload_left -= n as u64;
                rest = &rest[n..];
                if self.payload_left == 0 {
                    self.end_frame();
                }
                continue;
            }
            // In a header: take bytes until its length is known and reached.
            let wanted = header_len(&self.header[..self.header_len]).unwrap_or(2);
            let n = (wanted - self.header_len).min(rest.len());
            if self.header_len == 0 {
                self.start_frame(rest[0]);
            }
            self.header[self.header_len..self.header_len + n].copy_from_slice(&rest[..n]);
            self.header_len += n;
            rest = &rest[n..];
            if header_len(&self.header[..self.header_len]) == Some(self.header_len) {
                self.payload_left = payload_len(&self.header[..self.header_len]);
                self.header_len = 0;
                if self.payload_left == 0 {
                    self.end_frame();
                }
            }
        }
    }

    /// The bytes that end the frame in progress and any fragmented message, so the next byte
    /// the client reads starts a new message: the rest of a cut header (zeros: the smallest
    /// length the bytes already sent allow; with only the first byte sent, room for the rest
    /// of a cut character), the rest of the payload (spaces in text, zeros
    /// otherwise, after completing a cut UTF-8 character), then, when a fragmented message is
    /// open, a final empty continuation frame. Empty at a message boundary; `limit` bounds the
    /// payload bytes owed.
    pub fn completion(&self, limit: u64) -> Result<Vec<u8>, PaddingTooLarge> {
        let text = self.text_payload();
        let mut rest_of_character: Vec<u8> = match self.cut {
            Some(cut) if text || self.open_message == Some(OP_TEXT) => cut.rest().collect(),
            _ => Vec::new(),
        };
        let mut out = Vec::new();
        let mut owed = self.payload_left;
        if self.header_len > 0 {
            let complete = header_len(&self.header[..self.header_len]).unwrap_or(2);
            let mut header = self.header;
            header[self.header_len..complete].fill(0);
            if self.header_len == 1 {
                // The length is ours to choose: unmasked, just room for a cut character.
                header[1] = if text {
                    rest_of_character.len() as u8
                } else {
                    0
                };
            }
            out.extend_from_slice(&header[self.header_len..complete]);
            owed = payload_len(&header[..complete]);
        }
        if owed > limit {
            return Err(PaddingTooLarge { owed, limit });
        }
        // `owed` is at most `limit`, which the caller keeps small enough to hold in memory.
        let owed = usize::try_from(owed).unwrap_or(usize::MAX);
        let completed = if text {
            let n = rest_of_character.len().min(owed);
            out.extend(rest_of_character.drain(..n));
            n
        } else {
            0
        };
        out.resize(out.len() + (owed - completed), if text { b' ' } else { 0 });
        let message_left_open = match self.frame {
            Some(FrameHead {
                fin,
                opcode: OP_TEXT | OP_BINARY | OP_CONTINUATION,
            }) => !fin,
            // A control frame may come between the fragments of a message.
            _ => self.open_message.is_some(),
        };
        if message_left_open {
            out.push(0x80 | OP_CONTINUATION);
            // At most 3 bytes: a 7-bit length.
            out.push(rest_of_character.len() as u8);
            out.extend_from_slice(&rest_of_character);
        }
        Ok(out)
    }

    fn start_frame(&mut self, first: u8) {
        let head = FrameHead {
            fin: first & 0x80 != 0,
            opcode: first & 0x0F,
        };
        match head.opcode {
            OP_CLOSE => self.close_seen = true,
            OP_TEXT | OP_BINARY => self.cut = None,
            _ => {}
        }
        self.frame = Some(head);
    }

    fn end_frame(&mut self) {
        if let Some(head) = self.frame.take() {
            match (head.opcode, head.fin) {
                (OP_TEXT | OP_BINARY, false) => self.open_message = Some(head.opcode),
                (OP_TEXT | OP_BINARY | OP_CONTINUATION, true) => {
                    self.open_message = None;
                    self.cut = None;
                }
                _ => {}
            }
        }
    }

    /// Whether the payload in progress is (part of) a text message.
    fn text_payload(&self) -> bool {
        match self.frame.map(|f| f.opcode) {
            Some(OP_TEXT) => true,
            Some(OP_CONTINUATION) => self.open_message == Some(OP_TEXT),
            _ => false,
        }
    }
}

/// A client frame a replica drops the connection over: the replica then closes with the rest
/// unread, its kernel resets the connection, and the router may lose the replica's own
/// refusal to that reset. [`ClientFrames`] finds it so the router can give the refusal itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientViolation {
    /// A data frame declared over the limit (the replica's `streaming.max_message_bytes`).
    TooLarge { declared: u64, limit: u64 },
    /// Not a valid client frame: unmasked, reserved bits, an unknown opcode, or a control
    /// frame that is fragmented or over 125 bytes.
    Malformed(&'static str),
}

/// Reads the client→replica frame headers of a tunnel (headers only) for the first
/// [`ClientViolation`].
#[derive(Debug, Clone)]
pub struct ClientFrames {
    header: [u8; MAX_HEADER],
    header_len: usize,
    payload_left: u64,
    limit: u64,
    violation: Option<ClientViolation>,
}

impl ClientFrames {
    /// Data frames over `limit` payload bytes count as violations.
    pub fn new(limit: u64) -> Self {
        Self {
            header: [0; MAX_HEADER],
            header_len: 0,
            payload_left: 0,
            limit,
            violation: None,
        }
    }

    /// The first violation seen, if any.
    pub fn violation(&self) -> Option<ClientViolation> {
        self.violation
    }

    /// Follows `chunk`, the next client bytes. Stops looking after the first violation (the
    /// stream is no longer framed as the client claims).
    pub fn observe(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !rest.is_empty() && self.violation.is_none() {
            if self.payload_left > 0 {
                let n =
                    usize::try_from(self.payload_left).map_or(rest.len(), |l| l.min(rest.len()));
                self.payload_left -= n as u64;
                rest = &rest[n..];
                continue;
            }
            let wanted = header_len(&self.header[..self.header_len]).unwrap_or(2);
            let n = (wanted - self.header_len).min(rest.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&rest[..n]);
            self.header_len += n;
            rest = &rest[n..];
            if header_len(&self.header[..self.header_len]) == Some(self.header_len) {
                let header = &self.header[..self.header_len];
                self.payload_left = payload_len(header);
                self.violation = self.check(header);
                self.header_len = 0;
            }
        }
    }

    fn check(&self, header: &[u8]) -> Option<ClientViolation> {
        let (first, second) = (header[0], header[1]);
        let opcode = first & 0x0F;
        let len = payload_len(header);
        if second & 0x80 == 0 {
            return Some(ClientViolation::Malformed("unmasked client frame"));
        }
        if first & 0x70 != 0 {
            return Some(ClientViolation::Malformed("reserved bits set"));
        }
        match opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY if len > self.limit => {
                Some(ClientViolation::TooLarge {
                    declared: len,
                    limit: self.limit,
                })
            }
            OP_CONTINUATION | OP_TEXT | OP_BINARY => None,
            0x8..=0xA if len > 125 || first & 0x80 == 0 => Some(ClientViolation::Malformed(
                "fragmented or oversized control frame",
            )),
            0x8..=0xA => None,
            _ => Some(ClientViolation::Malformed("unknown opcode")),
        }
    }
}

/// Holds back the bytes of a frame until all of it has arrived, so what is forwarded to the
/// client always ends at a frame boundary: a replica that dies mid-frame then leaves nothing
/// half-sent, and the client (whose media player must not be fed a padded fragment) gets
/// only whole frames before the router's error and close. A frame larger than the limit is
/// passed through as it comes (and padded if cut; see [`FrameBoundaries::completion`]), so
/// memory stays bounded. Only headers are read; payloads are copied.
#[derive(Debug, Clone)]
pub struct WholeFrames {
    held: bytes::BytesMut,
    limit: usize,
    /// Bytes of an oversized frame still to pass through unheld.
    passing: u64,
}

impl WholeFrames {
    /// Holds frames of up to `limit` bytes (header included).
    pub fn new(limit: usize) -> Self {
        Self {
            held: bytes::BytesMut::new(),
            limit,
            passing: 0,
        }
    }

    /// What of `chunk`, after the bytes held so far, can go to the client now: everything up
    /// to the end of the last complete frame (and any bytes of an oversized frame).
    pub fn push(&mut self, chunk: &[u8]) -> bytes::Bytes {
        let mut out = bytes::BytesMut::new();
        let mut rest = chunk;
        if self.passing > 0 {
            let n = usize::try_from(self.passing).map_or(rest.len(), |p| p.min(rest.len()));
            out.extend_from_slice(&rest[..n]);
            self.passing -= n as u64;
            rest = &rest[n..];
        }
        self.held.extend_from_slice(rest);
        while self.passing == 0 {
            let Some(header) = header_len(&self.held).filter(|&h| h <= self.held.len()) else {
                break;
            };
            let total = (header as u64).saturating_add(payload_len(&self.held[..header]));
            if total <= self.held.len() as u64 {
                out.extend_from_slice(&self.held.split_to(total as usize));
            } else if total > self.limit as u64 {
                self.passing = total - self.held.len() as u64;
                out.extend_from_slice(&self.held.split());
            } else {
                break;
            }
        }
        out.freeze()
    }

    /// Bytes held back: the start of a frame that has not fully arrived.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// A header's full length once its first two bytes are known.
fn header_len(header: &[u8]) -> Option<usize> {
    let second = *header.get(1)?;
    let extended = match second & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + extended + mask)
}

/// The payload length a complete header declares.
fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7F {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => header[2..10]
            .iter()
            .fold(0, |len, &b| (len << 8) | u64::from(b)),
        short => u64::from(short),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read, Write};

    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
    use tokio_tungstenite::tungstenite::{Error, Message};

    use super::*;

    const LIMIT: u64 = 1 << 20;

    /// `frame`, masked as a client sends it (the key is zero: the bytes stay readable).
    fn masked(frame: &[u8]) -> Vec<u8> {
        let mut out = frame[..2].to_vec();
        out[1] |= 0x80;
        let extra = match frame[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        out.extend_from_slice(&frame[2..2 + extra]);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&frame[2 + extra..]);
        out
    }

    #[test]
    fn client_frames_over_the_limit_or_malformed_are_found_at_every_cut() {
        let ok = masked(&frame(true, OP_TEXT, b"{\"type\":\"ping\"}", false));
        let big = masked(&frame(true, OP_BINARY, &[0; 300], false));
        for (stream, expected) in [
            ([ok.clone(), ok.clone()].concat(), None),
            (
                [ok.clone(), big.clone()].concat(),
                Some(ClientViolation::TooLarge {
                    declared: 300,
                    limit: 200,
                }),
            ),
            (
                [ok.clone(), frame(true, OP_TEXT, b"unmasked", false)].concat(),
                Some(ClientViolation::Malformed("unmasked client frame")),
            ),
            (
                masked(&frame(true, 0x3, b"x", false)),
                Some(ClientViolation::Malformed("unknown opcode")),
            ),
            (
                masked(&[0xC1, 1, b'x']),
                Some(ClientViolation::Malformed("reserved bits set")),
            ),
            (
                masked(&frame(false, 0x9, b"ping", false)),
                Some(ClientViolation::Malformed(
                    "fragmented or oversized control frame",
                )),
            ),
        ] {
            for cut in 0..=stream.len() {
                let mut client = ClientFrames::new(200);
                client.observe(&stream[..cut]);
                client.observe(&stream[cut..]);
                assert_eq!(client.violation(), expected, "cut at {cut}");
            }
        }
    }

    #[test]
    fn whole_frames_go_out_only_once_complete_at_every_cut() {
        let stream: Vec<u8> = [
            frame(true, OP_TEXT, b"hello", false),
            frame(true, OP_BINARY, &[7u8; 300], false),
            frame(true, OP_BINARY, &[9u8; 40], true),
        ]
        .concat();
        let ends = [7, 7 + 304, stream.len()];
        for cut in 0..=stream.len() {
            let mut whole = WholeFrames::new(1 << 20);
            let first = whole.push(&stream[..cut]);
            let boundary = ends.iter().rev().find(|&&e| e <= cut).copied().unwrap_or(0);
            assert_eq!(first.len(), boundary, "cut at {cut}");
            assert_eq!(whole.held(), cut - boundary);
            let second = whole.push(&stream[cut..]);
            assert_eq!([&first[..], &second[..]].concat(), stream, "cut at {cut}");
            assert_eq!(whole.held(), 0);
        }
    }

    #[test]
    fn a_frame_over_the_limit_passes_through_as_it_comes() {
        let big = frame(true, OP_BINARY, &[1u8; 1000], false);
        let small = frame(true, OP_TEXT, b"ok", false);
        let mut whole = WholeFrames::new(100);
        // Its header is known: what arrived goes out, and so does the rest as it comes.
        assert_eq!(whole.push(&big[..10]).len(), 10);
        assert_eq!(whole.push(&big[10..600]).len(), 590);
        let rest = [&big[600..], &small[..3]].concat();
        // The rest of the big frame, and the small one waits for its last byte.
        assert_eq!(whole.push(&rest).len(), big.len() - 600);
        assert_eq!(whole.push(&small[3..]), bytes::Bytes::from(small.clone()));
    }

    /// A server frame with `payload` (7, 16 or 64-bit length, as short as it fits, or
    /// `force_64` for the long form).
    fn frame(fin: bool, opcode: u8, payload: &[u8], force_64: bool) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 && !force_64 => out.push(n as u8),
            n if n <= 0xFFFF && !force_64 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    fn text(s: &str) -> Vec<u8> {
        frame(true, OP_TEXT, s.as_bytes(), false)
    }

    /// Reads `bytes` as a WebSocket client does: the messages, then the error that ended it
    /// (the end of input included).
    fn client_reads(bytes: Vec<u8>) -> (Vec<Message>, Error) {
        struct Replay(Cursor<Vec<u8>>);
        impl Read for Replay {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0.read(buf)
            }
        }
        impl Write for Replay {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut ws = WebSocket::from_raw_socket(Replay(Cursor::new(bytes)), Role::Client, None);
        let mut messages = Vec::new();
        loop {
            match ws.read() {
                Ok(m) => messages.push(m),
                Err(e) => return (messages, e),
            }
        }
    }

    /// `stream` cut after each of its bytes, completed, then followed by a marker frame: the
    /// client must read the marker as the next message after whatever the cut left, and the
    /// tracker must agree it is between frames again.
    fn every_cut_is_completed(stream: &[u8]) {
        for k in 0..=stream.len() {
            let mut frames = FrameBoundaries::new();
            frames.observe(&stream[..k]);
            let completion = frames.completion(LIMIT).unwrap();
            let mut bytes = stream[..k].to_vec();
            bytes.extend_from_slice(&completion);
            let mut after = frames.clone();
            after.observe(&completion);
            assert!(
                after.frame.is_none() && after.open_message.is_none() && after.header_len == 0,
                "cut at {k}: still inside a frame after {completion:?}"
            );
            bytes.extend_from_slice(&text("marker"));
            let (messages, end) = client_reads(bytes);
            assert_eq!(
                messages.last(),
                Some(&Message::text("marker")),
                "cut at {k}: the client read {messages:?} then {end}"
            );
        }
    }

    #[test]
    fn headers_split_at_every_byte_with_7_16_and_64_bit_lengths() {
        for payload_len in [0, 5, 125, 126, 300, 70_000] {
            for force_64 in [false, true] {
                let payload = vec![7u8; payload_len];
                let bytes = frame(true, OP_BINARY, &payload, force_64);
                for k in 0..=bytes.len().min(20) {
                    let mut frames = FrameBoundaries::new();
                    frames.observe(&bytes[..k]);
                    assert_eq!(frames.frame.is_some(), k > 0 && k < bytes.len());
                    // After the header, exactly the rest of the frame is owed.
                    let header = bytes.len() - payload_len;
                    if k >= header {
                        assert_eq!(frames.completion(LIMIT).unwrap().len(), bytes.len() - k);
                    }
                    frames.observe(&bytes[k..]);
                    assert!(frames.frame.is_none(), "{payload_len} split at {k}");
                    assert_eq!(frames.payload_left, 0);
                    assert!(frames.completion(LIMIT).unwrap().is_empty());
                }
            }
        }
    }

    #[test]
    fn a_header_fed_one_byte_at_a_time_is_followed() {
        let bytes = frame(false, OP_TEXT, &[b'a'; 300], true);
        let mut frames = FrameBoundaries::new();
        for b in &bytes[..10] {
            frames.observe(std::slice::from_ref(b));
        }
        assert_eq!(frames.payload_left, 300);
        assert_eq!(frames.opcode_in_progress(), Some(OP_TEXT));
        for b in &bytes[10..] {
            frames.observe(std::slice::from_ref(b));
        }
        assert_eq!(frames.opcode_in_progress(), None);
        assert_eq!(frames.open_message, Some(OP_TEXT), "fin was not set");
    }

    #[test]
    fn several_frames_in_one_chunk_end_between_frames() {
        let mut bytes = text("one");
        bytes.extend(frame(true, OP_BINARY, &[1; 200], false));
        bytes.extend(frame(true, 0x9, b"ping", false));
        bytes.extend(text("two"));
        let mut frames = FrameBoundaries::new();
        frames.observe(&bytes);
        assert!(frames.frame.is_none());
        assert!(!frames.close_seen());
        assert!(frames.completion(LIMIT).unwrap().is_empty());
        // The same chunk with one more header byte: a frame has started.
        bytes.push(0x82);
        let mut frames = FrameBoundaries::new();
        frames.observe(&bytes);
        assert_eq!(frames.opcode_in_progress(), Some(OP_BINARY));
        assert_eq!(frames.completion(LIMIT).unwrap(), vec![0]);
    }

    #[test]
    fn a_close_frame_is_seen_from_its_first_byte() {
        let close = frame(true, OP_CLOSE, &[0x03, 0xE8], false);
        let mut frames = FrameBoundaries::new();
        frames.observe(&text("bye"));
        assert!(!frames.close_seen());
        frames.observe(&close[..1]);
        assert!(frames.close_seen());
        frames.observe(&close[1..]);
        assert!(frames.close_seen());
    }

    #[test]
    fn a_partial_frame_at_the_end_is_padded_with_zeros_or_spaces() {
        let binary = frame(true, OP_BINARY, &[9; 300], false);
        let mut frames = FrameBoundaries::new();
        frames.observe(&binary[..104]);
        assert_eq!(frames.completion(LIMIT).unwrap(), vec![0; 200]);

        let long_text = "x".repeat(300);
        let text_frame = text(&long_text);
        let mut frames = FrameBoundaries::new();
        frames.observe(&text_frame[..4 + 250]);
        assert_eq!(frames.completion(LIMIT).unwrap(), vec![b' '; 50]);
    }

    #[test]
    fn a_payload_over_the_limit_is_not_padded() {
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        let mut frames = FrameBoundaries::new();
        frames.observe(&header);
        frames.observe(&[0; 1000]);
        assert_eq!(
            frames.completion(LIMIT),
            Err(PaddingTooLarge {
                owed: (1 << 40) - 1000,
                limit: LIMIT
            })
        );
    }

    #[test]
    fn every_cut_of_text_binary_and_control_frames_is_completed() {
        let mut stream = text("héllo wörld ✓ 😀 ė");
        stream.extend(frame(true, OP_BINARY, &[0xAB; 300], false));
        stream.extend(frame(true, 0x9, b"ping", false));
        stream.extend(frame(true, OP_BINARY, &[1; 130], true));
        stream.extend(text("€"));
        every_cut_is_completed(&stream);
    }

    #[test]
    fn every_cut_of_a_fragmented_message_is_completed() {
        // A text message in three fragments with a ping between two, characters cut across
        // fragments, then a fragmented binary message.
        let word = "añ😀b".as_bytes();
        let mut stream = frame(false, OP_TEXT, &word[..3], false);
        stream.extend(frame(true, 0x9, b"p", false));
        stream.extend(frame(false, OP_CONTINUATION, &word[3..5], false));
        stream.extend(frame(true, OP_CONTINUATION, &word[5..], false));
        stream.extend(frame(false, OP_BINARY, &[1; 3], false));
        stream.extend(frame(true, OP_CONTINUATION, &[2; 3], false));
        every_cut_is_completed(&stream);

        // The cut "ñ" (C3 B1) is completed with the smallest valid byte, keeping the length.
        let mut frames = FrameBoundaries::new();
        frames.observe(&stream[..2 + 2]);
        let mut bytes = stream[..4].to_vec();
        bytes.extend(frames.completion(LIMIT).unwrap());
        let (messages, _) = client_reads(bytes);
        assert_eq!(messages, vec![Message::text("aÀ")]);
    }

    #[test]
    fn a_cut_character_is_completed_with_valid_bytes() {
        for c in ["é", "ࠀ", "✓", "퟿", "😀", "\u{10FFFF}"] {
            let bytes = c.as_bytes();
            for sent in 1..bytes.len() {
                let cut = CutCharacter::after(None, &bytes[..sent]).unwrap();
                let mut whole = bytes[..sent].to_vec();
                whole.extend(cut.rest());
                assert!(std::str::from_utf8(&whole).is_ok(), "{c} cut after {sent}");
            }
            assert_eq!(CutCharacter::after(None, bytes), None);
        }
    }
}
