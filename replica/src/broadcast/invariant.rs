//! The codec invariant of a rung: the H.264 sequence-level fields that every encoder worker
//! contributing segments to one rendition must agree on.
//!
//! A player decodes every segment of a rendition with the one init segment it fetched first,
//! so a segment from a worker whose encoder was set up differently (another profile, level,
//! size, or merely other SPS/PPS bytes) decodes as garbage or not at all. The first worker to
//! deliver sets the rung's invariant; every later one is checked against it
//! ([`validate_or_set`]) before its segments are used. The caller branches on the answer:
//! keep encoding, soft-fail (requeue the chunk for another worker and retire this one), or,
//! on an [`InvariantError`], hard-fail, since an encoder that emits no parseable sequence
//! header is a configuration bug nothing downstream can recover from.

use parking_lot::Mutex;

use crate::media::boxes;

#[cfg(test)]
mod tests;

/// NAL unit types (ITU-T H.264, Table 7-1).
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// Profiles whose SPS carries chroma format, bit depths and scaling matrices (H.264 7.3.2.1.1).
const HIGH_PROFILES: [u8; 13] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135];

/// The encoder's output carries no usable H.264 sequence header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantError {
    /// No sequence parameter set: the encoder is not configured to emit headers.
    #[error("no SPS NAL unit")]
    MissingSps,
    /// No picture parameter set.
    #[error("no PPS NAL unit")]
    MissingPps,
    /// The `avcC` record is cut short or has an unknown version.
    #[error("malformed avcC record: {0}")]
    Avcc(&'static str),
    /// The SPS is truncated, overflows an exp-Golomb code or holds out-of-range values.
    #[error("malformed SPS: {0}")]
    Sps(&'static str),
    /// The PPS NAL unit is empty or of another type.
    #[error("malformed PPS: {0}")]
    Pps(&'static str),
    /// The init segment has no H.264 track with an `avcC` box.
    #[error("malformed init segment: {0}")]
    InitSegment(&'static str),
}

/// What every segment of one rendition depends on, taken from the SPS and PPS.
///
/// The parsed fields name what differs when two encoders disagree; the raw parameter sets
/// catch everything else, since all segments share the one init segment that carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecInvariant {
    /// `profile_idc`: 66 baseline, 77 main, 100 high, ...
    pub profile_idc: u8,
    /// The byte after `profile_idc`: `constraint_set0..5_flag` and two reserved bits.
    pub constraint_flags: u8,
    /// `level_idc`: ten times the level number (30 is level 3.0).
    pub level_idc: u8,
    /// 0 monochrome, 1 4:2:0, 2 4:2:2, 3 4:4:4.
    pub chroma_format_idc: u32,
    /// Bits per luma sample.
    pub bit_depth_luma: u8,
    /// Bits per chroma sample.
    pub bit_depth_chroma: u8,
    /// Picture width after frame cropping, in pixels.
    pub width: u32,
    /// Picture height after frame cropping, in pixels.
    pub height: u32,
    /// The SPS NAL unit as coded: header byte included, emulation-prevention bytes kept.
    pub sps: Vec<u8>,
    /// The PPS NAL unit as coded.
    pub pps: Vec<u8>,
}

impl CodecInvariant {
    /// The RFC 6381 `CODECS` value a playlist advertises, so players can refuse a rendition
    /// they cannot decode before fetching it. `avc1`, not `avc3`: the parameter sets travel in
    /// the init segment.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_idc, self.constraint_flags, self.level_idc
        )
    }

    /// The first field in which `other` differs, for the log line of a rejected worker.
    ///
    /// The size comes first since it is the most telling (a larger picture usually needs a
    /// higher level too), and the raw parameter sets last: they differ whenever anything does.
    pub fn mismatch(&self, other: &Self) -> Option<&'static str> {
        [
            ("width", self.width == other.width),
            ("height", self.height == other.height),
            ("profile_idc", self.profile_idc == other.profile_idc),
            (
                "constraint_flags",
                self.constraint_flags == other.constraint_flags,
            ),
            ("level_idc", self.level_idc == other.level_idc),
            (
                "chroma_format_idc",
                self.chroma_format_idc == other.chroma_format_idc,
            ),
            (
                "bit_depth_luma",
                self.bit_depth_luma == other.bit_depth_luma,
            ),
            (
                "bit_depth_chroma",
                self.bit_depth_chroma == other.bit_depth_chroma,
            ),
            ("sps", self.sps == other.sps),
            ("pps", self.pps == other.pps),
        ]
        .into_iter()
        .find_map(|(field, same)| (!same).then_some(field))
    }

    /// Builds the invariant from one SPS and one PPS NAL unit.
    fn from_parameter_sets(sps: &[u8], pps: &[u8]) -> Result<Self, InvariantError> {
        let fields = parse_sps(sps)?;
        match pps.first() {
            None => return Err(InvariantError::Pps("empty NAL unit")),
            Some(header) if header & 0x1f != NAL_PPS => {
                return Err(InvariantError::Pps("not a PPS NAL unit"));
            }
            Some(_) if pps.len() < 2 => return Err(InvariantError::Pps("no payload")),
            Some(_) => {}
        }
        Ok(Self {
            profile_idc: fields.profile_idc,
            constraint_flags: fields.constraint_flags,
            level_idc: fields.level_idc,
            chroma_format_idc: fields.chroma_format_idc,
            bit_depth_luma: fields.bit_depth_luma,
            bit_depth_chroma: fields.bit_depth_chroma,
            width: fields.width,
            height: fields.height,
            sps: sps.to_vec(),
            pps: pps.to_vec(),
        })
    }
}

/// Where a worker's first output comes from, so one entry point serves every encoder setup.
#[derive(Debug, Clone, Copy)]
pub enum Bitstream<'a> {
    /// An fMP4 init segment (`ftyp` + `moov`, possibly followed by fragments).
    InitSegment(&'a [u8]),
    /// An `avcC` box payload, e.g. the `codec_data` of `stream-format=avc` caps.
    Avcc(&'a [u8]),
    /// An Annex-B access unit, e.g. x264's first IDR with its SPS and PPS.
    AnnexB(&'a [u8]),
}

impl Bitstream<'_> {
    /// Derives the codec invariant from the sequence header this output carries.
    pub fn parse(self) -> Result<CodecInvariant, InvariantError> {
        match self {
            Self::InitSegment(bytes) => parse_init_segment(bytes),
            Self::Avcc(bytes) => parse_avcc(bytes),
            Self::AnnexB(bytes) => parse_annexb(bytes),
        }
    }
}

/// The outcome of comparing a worker's invariant with its rung's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvariantCheck {
    /// This worker was the first: the empty slot now holds its invariant.
    Set,
    /// The worker agrees with the rung; its segments may be used.
    Matched,
    /// The worker disagrees in `field`: requeue its chunk elsewhere and stop it.
    Mismatch {
        /// The first differing field, as [`CodecInvariant::mismatch`] names it.
        field: &'static str,
    },
}

impl InvariantCheck {
    /// Whether the worker's segments may join the rendition.
    pub fn is_compatible(self) -> bool {
        !matches!(self, Self::Mismatch { .. })
    }
}

/// The per-rung slot all of a rung's workers check against.
///
/// Compare and set happen under one lock, so two first workers racing cannot both set it.
#[derive(Debug, Default)]
pub struct RungInvariant {
    slot: Mutex<Option<CodecInvariant>>,
}

impl RungInvariant {
    /// An empty slot: the first worker to check sets it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the slot if it is empty, otherwise compares `candidate` with what it holds.
    pub fn check(&self, candidate: CodecInvariant) -> InvariantCheck {
        let mut slot = self.slot.lock();
        match &*slot {
            None => {
                *slot = Some(candidate);
                InvariantCheck::Set
            }
            Some(held) => match held.mismatch(&candidate) {
                None => InvariantCheck::Matched,
                Some(field) => InvariantCheck::Mismatch { field },
            },
        }
    }

    /// The rung's invariant, once a worker has set it.
    pub fn get(&self) -> Option<CodecInvariant> {
        self.slot.lock().clone()
    }
}

/// Parses a worker's first output and compares it with (or sets) its rung's invariant.
///
/// `Err` only for a malformed bitstream; a well-formed but different one is `Ok(Mismatch)`.
pub fn validate_or_set(
    slot: &RungInvariant,
    first: Bitstream<'_>,
) -> Result<InvariantCheck, InvariantError> {
    Ok(slot.check(first.parse()?))
}

/// Parses an `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15 5.3.3.1), where MP4 carries
/// the parameter sets. The first SPS and first PPS make the invariant.
pub fn parse_avcc(avcc: &[u8]) -> Result<CodecInvariant, InvariantError> {
    let mut rest = avcc;
    let header = take(&mut rest, 6)?;
    if header[0] != 1 {
        return Err(InvariantError::Avcc("configurationVersion is not 1"));
    }
    // profile, compatibility and level repeat the SPS's; the invariant takes them from there.
    let sps = length_prefixed_nal_units(&mut rest, header[5] & 0x1f)?;
    let pps_count = take(&mut rest, 1)?[0];
    let pps = length_prefixed_nal_units(&mut rest, pps_count)?;
    // The high-profile extension fields that may follow repeat the SPS too.
    CodecInvariant::from_parameter_sets(
        sps.ok_or(InvariantError::MissingSps)?,
        pps.ok_or(InvariantError::MissingPps)?,
    )
}

/// Reads `count` NAL units, each after a 16-bit length; returns the first.
fn length_prefixed_nal_units<'a>(
    rest: &mut &'a [u8],
    count: u8,
) -> Result<Option<&'a [u8]>, InvariantError> {
    let mut first = None;
    for _ in 0..count {
        let len = take(rest, 2)?;
        let nal = take(rest, usize::from(u16::from_be_bytes([len[0], len[1]])))?;
        first.get_or_insert(nal);
    }
    Ok(first)
}

/// Splits `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], InvariantError> {
    let (head, tail) = rest
        .split_at_checked(n)
        .ok_or(InvariantError::Avcc("truncated"))?;
    *rest = tail;
    Ok(head)
}

/// Parses the first SPS and first PPS of an Annex-B byte stream (start codes `00 00 01` or
/// `00 00 00 01`), such as an encoder's first IDR access unit.
pub fn parse_annexb(packet: &[u8]) -> Result<CodecInvariant, InvariantError> {
    let (mut sps, mut pps) = (None, None);
    for nal in annexb_nal_units(packet) {
        match nal[0] & 0x1f {
            NAL_SPS => _ = sps.get_or_insert(nal),
            NAL_PPS => _ = pps.get_or_insert(nal),
            _ => {}
        }
    }
    CodecInvariant::from_parameter_sets(
        sps.ok_or(InvariantError::MissingSps)?,
        pps.ok_or(InvariantError::MissingPps)?,
    )
}

/// The non-empty NAL units between start codes. Trailing zero bytes belong to the next start
/// code (or are `trailing_zero_8bits`), never to the NAL unit, whose last byte holds the RBSP
/// stop bit.
fn annexb_nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = start_code(stream).map(|at| &stream[at + 3..]);
    std::iter::from_fn(move || {
        loop {
            let current = rest?;
            let (mut nal, next) = match start_code(current) {
                Some(at) => (&current[..at], Some(&current[at + 3..])),
                None => (current, None),
            };
            rest = next;
            while let [head @ .., 0] = nal {
                nal = head;
            }
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    })
}

/// Offset of the first `00 00 01`.
fn start_code(bytes: &[u8]) -> Option<usize> {
    bytes.windows(3).position(|w| w == [0, 0, 1])
}

/// Finds the first H.264 track's `avcC` in an fMP4 init segment and parses it.
pub fn parse_init_segment(init: &[u8]) -> Result<CodecInvariant, InvariantError> {
    let moov = boxes::find_box(init, &[b"moov"])
        .ok_or(InvariantError::InitSegment("no readable moov box"))?;
    for (kind, trak) in children(moov)? {
        if kind != *b"trak" {
            continue;
        }
        let Some(stsd) = boxes::find_box(trak, &[b"mdia", b"minf", b"stbl", b"stsd"]) else {
            continue;
        };
        // A full box: version and flags, then entry_count, then the sample entries.
        let entries = stsd
            .get(8..)
            .ok_or(InvariantError::InitSegment("truncated stsd"))?;
        for (kind, entry) in children(entries)? {
            if kind == *b"avc1" || kind == *b"avc3" {
                // SampleEntry (8 bytes) and VisualSampleEntry (70) fields precede child boxes.
                let avcc = entry
                    .get(78..)
                    .and_then(|children| boxes::find_box(children, &[b"avcC"]))
                    .ok_or(InvariantError::InitSegment(
                        "avc1 sample entry without avcC",
                    ))?;
                return parse_avcc(avcc);
            }
        }
    }
    Err(InvariantError::InitSegment("no avc1/avc3 track"))
}

/// A box's type and payload.
type MpegBox<'a> = ([u8; 4], &'a [u8]);

/// Each box directly inside `bytes`.
fn children(bytes: &[u8]) -> Result<Vec<MpegBox<'_>>, InvariantError> {
    let found = boxes::top_level_boxes(bytes)
        .map_err(|_| InvariantError::InitSegment("malformed box structure"))?;
    Ok(found
        .into_iter()
        .map(|(kind, offset, size)| {
            // `top_level_boxes` checked the size covers the header: 16 bytes for a 64-bit one.
            let header = if bytes[offset..offset + 4] == 1u32.to_be_bytes() {
                16
            } else {
                8
            };
            (kind, &bytes[offset + header..offset + size])
        })
        .collect())
}

/// What the invariant takes from an SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpsFields {
    profile_idc: u8,
    constraint_flags: u8,
    level_idc: u8,
    chroma_format_idc: u32,
    bit_depth_luma: u8,
    bit_depth_chroma: u8,
    width: u32,
    height: u32,
}

/// Parses `seq_parameter_set_data` (H.264 7.3.2.1.1) up to the frame cropping offsets; the
/// VUI that follows changes no decoding constraint and is left unread.
fn parse_sps(nal: &[u8]) -> Result<SpsFields, InvariantError> {
    let (&header, body) = nal
        .split_first()
        .ok_or(InvariantError::Sps("empty NAL unit"))?;
    if header & 0x80 != 0 {
        return Err(InvariantError::Sps("forbidden_zero_bit is set"));
    }
    if header & 0x1f != NAL_SPS {
        return Err(InvariantError::Sps("not an SPS NAL unit"));
    }
    let rbsp = unescape(body);
    let mut r = BitReader::new(&rbsp);

    let profile_idc = r.byte()?;
    let constraint_flags = r.byte()?;
    let level_idc = r.byte()?;
    r.ue_max(31, "seq_parameter_set_id out of range")?;

    let (mut chroma_format_idc, mut separate_colour_plane) = (1, false);
    let (mut bit_depth_luma, mut bit_depth_chroma) = (8, 8);
    if HIGH_PROFILES.contains(&profile_idc) {
        chroma_format_idc = r.ue_max(3, "chroma_format_idc out of range")?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        bit_depth_luma += r.ue_max(6, "bit_depth_luma_minus8 out of range")? as u8;
        bit_depth_chroma += r.ue_max(6, "bit_depth_chroma_minus8 out of range")? as u8;
        r.flag()?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            // seq_scaling_matrix_present_flag: six 4x4 lists, then two or six 8x8 ones.
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }

    r.ue_max(12, "log2_max_frame_num_minus4 out of range")?;
    match r.ue_max(2, "pic_order_cnt_type out of range")? {
        0 => _ = r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4 out of range")?,
        1 => {
            r.flag()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle out of range")?;
            for _ in 0..cycle {
                r.se()?; // offset_for_ref_frame
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_in_mbs = u64::from(r.ue()?) + 1;
    let height_in_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.flag()?; // mb_adaptive_frame_field_flag
    }
    r.flag()?; // direct_8x8_inference_flag
    let [left, right, top, bottom] = if r.flag()? {
        [r.ue()?, r.ue()?, r.ue()?, r.ue()?].map(u64::from)
    } else {
        [0; 4]
    };

    // Equations 7-18 to 7-21 and the frame_crop_*_offset semantics: a map unit is a field
    // macroblock pair unless frames are progressive-only, and crop offsets count chroma
    // sample positions (in fields when interlaced).
    let fields_per_frame = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane {
        0
    } else {
        chroma_format_idc
    };
    let (crop_unit_x, crop_unit_y) = match chroma_array_type {
        1 => (2, 2 * fields_per_frame),
        2 => (2, fields_per_frame),
        _ => (1, fields_per_frame),
    };
    let dimension = |coded: u64, crop: u64| {
        coded
            .checked_sub(crop)
            .filter(|&size| size > 0)
            .ok_or(InvariantError::Sps("frame cropping leaves no picture"))
            .and_then(|size| {
                u32::try_from(size).map_err(|_| InvariantError::Sps("picture too large"))
            })
    };
    let width = dimension(width_in_mbs * 16, crop_unit_x * (left + right))?;
    let height = dimension(
        fields_per_frame * height_in_map_units * 16,
        crop_unit_y * (top + bottom),
    )?;

    Ok(SpsFields {
        profile_idc,
        constraint_flags,
        level_idc,
        chroma_format_idc,
        bit_depth_luma,
        bit_depth_chroma,
        width,
        height,
    })
}

/// Skips one `scaling_list()` (H.264 7.3.2.1.1.1): its length depends on the deltas, since
/// a next scale of 0 ends the explicit values.
fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), InvariantError> {
    let (mut last_scale, mut next_scale) = (8_i64, 8_i64);
    for _ in 0..size {
        if next_scale != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(InvariantError::Sps("delta_scale out of range"));
            }
            next_scale = (last_scale + delta + 256) % 256;
        }
        if next_scale != 0 {
            last_scale = next_scale;
        }
    }
    Ok(())
}

/// The RBSP of a NAL unit payload: every emulation-prevention byte (the `03` of `00 00 03`)
/// removed.
fn unescape(payload: &[u8]) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(payload.len());
    let mut zeros = 0;
    for &byte in payload {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        rbsp.push(byte);
    }
    rbsp
}

/// Reads an RBSP MSB-first; running past the end is a truncated SPS.
#[derive(Debug)]
struct BitReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, position: 0 }
    }

    fn bit(&mut self) -> Result<u32, InvariantError> {
        let byte = self
            .bytes
            .get(self.position / 8)
            .ok_or(InvariantError::Sps("truncated"))?;
        let bit = (byte >> (7 - self.position % 8)) & 1;
        self.position += 1;
        Ok(u32::from(bit))
    }

    fn flag(&mut self) -> Result<bool, InvariantError> {
        Ok(self.bit()? == 1)
    }

    /// `n` (at most 32) bits as an unsigned number.
    fn bits(&mut self, n: u32) -> Result<u32, InvariantError> {
        (0..n).try_fold(0, |value, _| Ok((value << 1) | self.bit()?))
    }

    fn byte(&mut self) -> Result<u8, InvariantError> {
        Ok(self.bits(8)? as u8)
    }

    /// `ue(v)`: an unsigned exp-Golomb code. H.264 values fit 32 bits, so a code with more
    /// than 31 leading zeros is malformed.
    fn ue(&mut self) -> Result<u32, InvariantError> {
        let mut zeros = 0;
        while !self.flag()? {
            zeros += 1;
            if zeros > 31 {
                return Err(InvariantError::Sps("exp-Golomb code longer than 32 bits"));
            }
        }
        // At most 2^31 - 1 + 2^31 - 1: no overflow.
        Ok((1 << zeros) - 1 + self.bits(zeros)?)
    }

    fn ue_max(&mut self, max: u32, error: &'static str) -> Result<u32, InvariantError> {
        match self.ue()? {
            value if value <= max => Ok(value),
            _ => Err(InvariantError::Sps(error)),
        }
    }

    /// `se(v)`: 1, 2, 3, 4, ... code +1, -1, +2, -2, ...
    fn se(&mut self) -> Result<i64, InvariantError> {
        let code = i64::from(self.ue()?);
        Ok(if code % 2 == 1 {
            (code + 1) / 2
        } else {
            -(code / 2)
        })
    }
}
