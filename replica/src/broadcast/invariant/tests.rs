use std::sync::Barrier;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use proptest::prelude::*;

use super::*;

/// What x264 wrote for one small clip, three ways.
#[derive(Debug)]
struct Encoded {
    /// The first Annex-B access unit, straight from x264enc.
    annexb: Vec<u8>,
    /// The `codec_data` of h264parse's `stream-format=avc` caps: an avcC record.
    avcc: Vec<u8>,
    /// isofmp4mux's whole output: init segment, then fragments.
    fmp4: Vec<u8>,
}

/// Encodes three frames of `raw` video with x264enc constrained to `h264` caps.
fn encode(raw: &str, h264: &str) -> Encoded {
    crate::media::elements::init().expect("GStreamer initialises");
    let description = format!(
        "videotestsrc num-buffers=3 ! {raw},framerate=12/1 ! x264enc ! {h264} ! tee name=t \
         t. ! queue ! appsink name=annexb sync=false \
         t. ! queue ! h264parse ! video/x-h264,stream-format=avc,alignment=au \
            ! appsink name=avc sync=false \
         t. ! queue ! h264parse ! isofmp4mux ! appsink name=fmp4 sync=false"
    );
    let pipeline = gst::parse::launch(&description)
        .expect("pipeline parses")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    pipeline.set_state(gst::State::Playing).expect("plays");
    let samples = |name: &str| {
        let sink = pipeline
            .by_name(name)
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .expect("an appsink");
        let mut samples = Vec::new();
        while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
            samples.push(sample);
        }
        assert!(
            sink.is_eos(),
            "{name} timed out: {:?}",
            bus_error(&pipeline)
        );
        samples
    };
    let bytes = |sample: &gst::Sample| {
        sample
            .buffer()
            .expect("a buffer")
            .map_readable()
            .expect("readable")
            .to_vec()
    };
    let annexb = bytes(&samples("annexb")[0]);
    let avc = samples("avc");
    let avcc = avc[0]
        .caps()
        .and_then(|caps| caps.structure(0))
        .and_then(|s| s.get::<gst::Buffer>("codec_data").ok())
        .expect("avc caps carry codec_data")
        .map_readable()
        .expect("readable")
        .to_vec();
    let fmp4 = samples("fmp4").iter().flat_map(bytes).collect();
    pipeline.set_state(gst::State::Null).expect("stops");
    Encoded { annexb, avcc, fmp4 }
}

fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    let message = bus.timed_pop_filtered(gst::ClockTime::ZERO, &[gst::MessageType::Error])?;
    Some(format!("{message:?}"))
}

fn x264(width: u32, height: u32, format: &str, profile: &str) -> Encoded {
    encode(
        &format!("video/x-raw,width={width},height={height},format={format}"),
        &format!("video/x-h264,stream-format=byte-stream,profile={profile}"),
    )
}

/// Parses the three forms and checks they agree.
fn parse_all(encoded: &Encoded) -> CodecInvariant {
    let annexb = parse_annexb(&encoded.annexb).expect("Annex-B parses");
    let avcc = parse_avcc(&encoded.avcc).expect("avcC parses");
    let init = parse_init_segment(&encoded.fmp4).expect("init segment parses");
    assert_eq!(annexb, avcc);
    assert_eq!(annexb, init);
    annexb
}

#[test]
fn x264_high_profile_parses_alike_from_annexb_avcc_and_init_segment() {
    let invariant = parse_all(&x264(320, 180, "I420", "high"));
    assert_eq!(invariant.profile_idc, 100);
    assert_eq!(invariant.chroma_format_idc, 1);
    assert_eq!(
        (invariant.bit_depth_luma, invariant.bit_depth_chroma),
        (8, 8)
    );
    // 180 is not a multiple of 16: the SPS codes 192 rows and crops 12.
    assert_eq!((invariant.width, invariant.height), (320, 180));
    assert_eq!(invariant.sps[0] & 0x1f, 7);
    assert_eq!(invariant.pps[0] & 0x1f, 8);
    assert!(invariant.codec_string().starts_with("avc1.64"));
}

#[test]
fn x264_constrained_baseline_is_profile_66_with_constraint_set1() {
    let invariant = parse_all(&x264(320, 180, "I420", "constrained-baseline"));
    assert_eq!(invariant.profile_idc, 66);
    assert_ne!(invariant.constraint_flags & 0x40, 0);
    assert_eq!((invariant.width, invariant.height), (320, 180));
    assert!(invariant.codec_string().starts_with("avc1.42"));
}

#[test]
fn x264_444_crops_in_single_samples() {
    let invariant = parse_all(&x264(321, 181, "Y444", "high-4:4:4"));
    assert_eq!(invariant.profile_idc, 244);
    assert_eq!(invariant.chroma_format_idc, 3);
    assert_eq!((invariant.width, invariant.height), (321, 181));
}

#[test]
fn x264_10_bit_reports_its_depth() {
    let invariant = parse_all(&x264(320, 180, "I420_10LE", "high-10"));
    assert_eq!(invariant.profile_idc, 110);
    assert_eq!(
        (invariant.bit_depth_luma, invariant.bit_depth_chroma),
        (10, 10)
    );
}

#[test]
fn workers_are_checked_against_the_first() {
    let slot = RungInvariant::new();
    let first = x264(320, 180, "I420", "high");
    let check = |encoded: &Encoded| validate_or_set(&slot, Bitstream::AnnexB(&encoded.annexb));
    assert_eq!(check(&first), Ok(InvariantCheck::Set));
    assert_eq!(
        check(&x264(320, 180, "I420", "high")),
        Ok(InvariantCheck::Matched)
    );
    assert_eq!(
        validate_or_set(&slot, Bitstream::InitSegment(&first.fmp4)),
        Ok(InvariantCheck::Matched)
    );
    assert_eq!(
        check(&x264(480, 270, "I420", "high")),
        Ok(InvariantCheck::Mismatch { field: "width" })
    );
    assert_eq!(
        check(&x264(320, 180, "I420", "constrained-baseline")),
        Ok(InvariantCheck::Mismatch {
            field: "profile_idc"
        })
    );
    assert_eq!(
        validate_or_set(&slot, Bitstream::AnnexB(b"not h264")),
        Err(InvariantError::MissingSps)
    );
    // Rejected workers leave the rung's invariant as the first set it.
    assert_eq!(slot.get(), Some(parse_annexb(&first.annexb).unwrap()));
}

#[test]
fn racing_first_workers_set_the_slot_once() {
    let invariant = parse_sps_nal(&Sps::default().nal());
    let slot = RungInvariant::default();
    let barrier = Barrier::new(8);
    let checks: Vec<InvariantCheck> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    slot.check(invariant.clone())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let count = |wanted| checks.iter().filter(|&&c| c == wanted).count();
    assert_eq!(count(InvariantCheck::Set), 1);
    assert_eq!(count(InvariantCheck::Matched), 7);
    assert_eq!(slot.get(), Some(invariant));
}

#[test]
fn mismatch_names_the_first_differing_field() {
    let base = parse_sps_nal(&Sps::default().nal());
    let with = |sps: Sps| parse_sps_nal(&sps.nal());
    assert_eq!(base.mismatch(&base.clone()), None);
    let cases = [
        (
            with(Sps {
                level_idc: 31,
                ..Sps::default()
            }),
            "level_idc",
        ),
        (
            with(Sps {
                height_map_units: 23,
                crop: [0; 4],
                ..Sps::default()
            }),
            "height",
        ),
        (
            with(Sps {
                max_num_ref_frames: 4,
                ..Sps::default()
            }),
            "sps",
        ),
    ];
    for (other, field) in cases {
        assert_eq!(base.mismatch(&other), Some(field));
    }
    let mut other_pps = base.clone();
    other_pps.pps = vec![0x68, 0xee, 0x3c, 0x80];
    assert_eq!(base.mismatch(&other_pps), Some("pps"));
    assert!(InvariantCheck::Matched.is_compatible());
    assert!(!InvariantCheck::Mismatch { field: "pps" }.is_compatible());
}

#[test]
fn codec_string_is_hex_profile_constraints_level() {
    let high = parse_sps_nal(
        &Sps {
            profile_idc: 100,
            constraint_flags: 0,
            level_idc: 21,
            ..Sps::default()
        }
        .nal(),
    );
    assert_eq!(high.codec_string(), "avc1.640015");
    let baseline = parse_sps_nal(&Sps::default().nal());
    assert_eq!(baseline.codec_string(), "avc1.42c01e");
}

#[test]
fn cropping_follows_chroma_format_and_field_coding() {
    let cases = [
        // 4:2:0 progressive: 2x2 crop units; 20x12 MBs less 6 units at the bottom.
        (Sps::default(), (320, 180)),
        // Interlaced 1080i: 34 field map units make 68 MB rows; crop units are 2x4.
        (
            Sps {
                width_mbs: 120,
                height_map_units: 34,
                frame_mbs_only: false,
                crop: [0, 0, 0, 2],
                ..Sps::default()
            },
            (1920, 1080),
        ),
        // 4:2:2: 2x1 crop units.
        (
            Sps {
                profile_idc: 122,
                chroma_format_idc: 2,
                crop: [1, 2, 3, 4],
                ..Sps::default()
            },
            (320 - 6, 192 - 7),
        ),
        // 4:4:4: 1x1 crop units.
        (
            Sps {
                profile_idc: 244,
                chroma_format_idc: 3,
                crop: [1, 2, 3, 4],
                ..Sps::default()
            },
            (320 - 3, 192 - 7),
        ),
        // Separate colour planes code monochrome pictures: 1x1 crop units.
        (
            Sps {
                profile_idc: 244,
                chroma_format_idc: 3,
                separate_colour_plane: true,
                crop: [1, 2, 3, 4],
                ..Sps::default()
            },
            (320 - 3, 192 - 7),
        ),
        // Monochrome interlaced: 1x2 crop units.
        (
            Sps {
                profile_idc: 100,
                chroma_format_idc: 0,
                frame_mbs_only: false,
                height_map_units: 6,
                crop: [1, 0, 1, 0],
                ..Sps::default()
            },
            (320 - 1, 192 - 2),
        ),
    ];
    for (sps, size) in cases {
        let invariant = parse_sps_nal(&sps.nal());
        assert_eq!((invariant.width, invariant.height), size, "{sps:?}");
        assert_eq!(invariant.chroma_format_idc, sps.chroma_format_idc);
    }
}

#[test]
fn high_profile_fields_scaling_lists_and_poc_type_1_are_skipped_exactly() {
    let sps = Sps {
        profile_idc: 100,
        chroma_format_idc: 3,
        bit_depth_luma: 12,
        bit_depth_chroma: 10,
        // Explicit lists, a list ended early by a zero next scale, and absent lists.
        scaling_lists: vec![
            Some(vec![3; 16]),
            None,
            Some(vec![-8]),
            Some(vec![127, -128, 0, 5, -12]),
            None,
            None,
            Some(vec![1; 64]),
            None,
            None,
            Some(vec![-1, 2, -9]),
            None,
            Some(vec![0; 64]),
        ],
        poc_type: 1,
        poc_cycle: vec![1, -2, 300],
        ..Sps::default()
    };
    let invariant = parse_sps_nal(&sps.nal());
    assert_eq!(
        (invariant.bit_depth_luma, invariant.bit_depth_chroma),
        (12, 10)
    );
    assert_eq!(invariant.chroma_format_idc, 3);
    // 4:4:4 crops in single rows: 192 - 6.
    assert_eq!((invariant.width, invariant.height), (320, 186));
}

#[test]
fn emulation_prevention_bytes_are_removed_before_parsing() {
    // A POC offset of 2^30 is an exp-Golomb code with 31 leading zeros: the escaped SPS
    // must carry `00 00 03` to keep it from looking like a start code.
    let sps = Sps {
        poc_type: 1,
        poc_cycle: vec![1 << 30, -(1 << 30)],
        ..Sps::default()
    };
    let nal = sps.nal();
    assert!(nal.windows(3).any(|w| w == [0, 0, 3]), "{nal:02x?}");
    let invariant = parse_sps_nal(&nal);
    assert_eq!((invariant.width, invariant.height), (320, 180));
    assert_eq!(invariant.sps, nal);
}

#[test]
fn unescape_drops_only_emulation_prevention_bytes() {
    assert_eq!(unescape(&[0, 0, 3, 1]), [0, 0, 1]);
    assert_eq!(unescape(&[0, 0, 3, 0, 0, 3]), [0, 0, 0, 0]);
    assert_eq!(unescape(&[0, 3, 0, 0, 3]), [0, 3, 0, 0]);
    assert_eq!(unescape(&[1, 0, 0, 2, 3]), [1, 0, 0, 2, 3]);
}

#[test]
fn annexb_accepts_three_and_four_byte_start_codes() {
    let sps = Sps::default().nal();
    let mut stream = vec![0, 0, 0, 1, 0x09, 0xf0];
    stream.extend([0, 0, 1]);
    stream.extend(&sps);
    stream.extend([0, 0, 0, 1]);
    stream.extend(PPS);
    stream.extend([0, 0, 0, 1, 0x65, 0x88, 0x84, 0, 0]);
    let invariant = parse_annexb(&stream).expect("parses");
    assert_eq!(invariant.sps, sps);
    assert_eq!(invariant.pps, PPS);
}

#[test]
fn malformed_bitstreams_are_errors() {
    let sps = Sps::default().nal();
    let annexb = |nals: &[&[u8]]| -> Vec<u8> {
        nals.iter()
            .flat_map(|nal| [&[0, 0, 0, 1][..], *nal].concat())
            .collect()
    };
    let random = {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..512)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect::<Vec<_>>()
    };
    let cases: [(&str, Result<CodecInvariant, InvariantError>); 16] = [
        ("empty annexb", parse_annexb(&[])),
        ("empty avcC", parse_avcc(&[])),
        ("empty init", parse_init_segment(&[])),
        ("random annexb", parse_annexb(&random)),
        ("random avcC", parse_avcc(&random)),
        ("random init", parse_init_segment(&random)),
        ("only a PPS", parse_annexb(&annexb(&[PPS]))),
        ("only an SPS", parse_annexb(&annexb(&[&sps]))),
        ("truncated SPS", parse_annexb(&annexb(&[&sps[..6], PPS]))),
        ("SPS header only", parse_annexb(&annexb(&[&[0x67], PPS]))),
        (
            // seq_parameter_set_id with 48 leading zeros.
            "exp-Golomb overflow",
            parse_annexb(&annexb(&[
                &[0x67, 0x42, 0xc0, 0x1e, 0, 0, 0, 0, 0, 0, 0x80],
                PPS,
            ])),
        ),
        ("avcC without SPS", parse_avcc(&avcc(&[], &[PPS]))),
        ("avcC without PPS", parse_avcc(&avcc(&[&sps], &[]))),
        ("PPS in the SPS slot", parse_avcc(&avcc(&[PPS], &[PPS]))),
        ("SPS in the PPS slot", parse_avcc(&avcc(&[&sps], &[&sps]))),
        (
            "avcC version 0",
            parse_avcc(&[&[0], &avcc(&[&sps], &[PPS])[1..]].concat()),
        ),
    ];
    for (name, result) in cases {
        assert!(result.is_err(), "{name}: {result:?}");
    }
    assert_eq!(
        parse_annexb(&annexb(&[PPS])),
        Err(InvariantError::MissingSps)
    );
    assert_eq!(
        parse_avcc(&avcc(&[&sps], &[])),
        Err(InvariantError::MissingPps)
    );

    // Every truncation of a good avcC record fails rather than reading past its end.
    let record = avcc(&[&sps], &[PPS]);
    for len in 0..record.len() {
        assert!(parse_avcc(&record[..len]).is_err(), "avcC cut at {len}");
    }
    assert!(parse_avcc(&record).is_ok());
    // Cropping more than the coded picture.
    let over_cropped = Sps {
        crop: [0, 0, 0, 96],
        ..Sps::default()
    };
    assert!(parse_annexb(&annexb(&[&over_cropped.nal(), PPS])).is_err());
}

#[test]
fn init_segments_without_h264_are_errors() {
    let mp4_box = |kind: &[u8; 4], payload: &[u8]| -> Vec<u8> {
        let size = u32::try_from(8 + payload.len()).unwrap();
        [&size.to_be_bytes()[..], kind, payload].concat()
    };
    let ftyp = mp4_box(b"ftyp", b"iso6\0\0\0\0");
    let init_with_entry = |entry: &[u8]| {
        let stsd = mp4_box(b"stsd", &[&[0; 8][..], entry].concat());
        let stbl = mp4_box(b"stbl", &stsd);
        let minf = mp4_box(b"minf", &stbl);
        let mdia = mp4_box(b"mdia", &minf);
        let trak = mp4_box(b"trak", &mdia);
        [ftyp.clone(), mp4_box(b"moov", &trak)].concat()
    };
    let record = avcc(&[&Sps::default().nal()], &[PPS]);
    let avc1 = mp4_box(
        b"avc1",
        &[&[0; 78][..], &mp4_box(b"avcC", &record)].concat(),
    );
    assert_eq!(
        parse_init_segment(&init_with_entry(&avc1)),
        parse_avcc(&record)
    );
    assert!(parse_init_segment(&ftyp).is_err(), "no moov");
    assert!(parse_init_segment(&[ftyp.clone(), mp4_box(b"moov", &[])].concat()).is_err());
    let opus = mp4_box(b"Opus", &[0; 40]);
    assert!(
        parse_init_segment(&init_with_entry(&opus)).is_err(),
        "audio only"
    );
    let short = mp4_box(b"avc1", &[0; 40]);
    assert!(
        parse_init_segment(&init_with_entry(&short)).is_err(),
        "short avc1"
    );
    let no_avcc = mp4_box(b"avc1", &[0; 78]);
    assert!(
        parse_init_segment(&init_with_entry(&no_avcc)).is_err(),
        "no avcC"
    );
    let good = init_with_entry(&avc1);
    assert!(
        parse_init_segment(&good[..good.len() - 1]).is_err(),
        "truncated"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
        let _ = parse_annexb(&bytes);
        let _ = parse_avcc(&bytes);
        let _ = parse_init_segment(&bytes);
        // Reach the SPS parser with arbitrary payloads.
        let stream = [&[0, 0, 1, 0x67][..], &bytes, &[0, 0, 1], PPS].concat();
        let _ = parse_annexb(&stream);
        let _ = parse_avcc(&avcc(&[&[&[0x67][..], &bytes].concat()], &[PPS]));
    }

    #[test]
    fn flipped_bits_in_a_valid_sps_never_panic(bit in 8..(Sps::default().nal().len() * 8)) {
        let mut sps = Sps::default().nal();
        sps[bit / 8] ^= 0x80 >> (bit % 8);
        let _ = parse_avcc(&avcc(&[&sps], &[PPS]));
    }
}

/// A PPS NAL unit (its contents are not parsed).
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

fn parse_sps_nal(sps: &[u8]) -> CodecInvariant {
    CodecInvariant::from_parameter_sets(sps, PPS).expect("a valid SPS")
}

/// An avcC record with these parameter sets.
fn avcc(sps: &[&[u8]], pps: &[&[u8]]) -> Vec<u8> {
    let profile = sps
        .first()
        .and_then(|s| s.get(1..4))
        .unwrap_or(&[66, 0xc0, 30]);
    let mut record = [&[1][..], profile, &[0xff]].concat();
    record.push(0xe0 | u8::try_from(sps.len()).unwrap());
    let push_all = |record: &mut Vec<u8>, nals: &[&[u8]]| {
        for nal in nals {
            record.extend(u16::try_from(nal.len()).unwrap().to_be_bytes());
            record.extend(*nal);
        }
    };
    push_all(&mut record, sps);
    record.push(u8::try_from(pps.len()).unwrap());
    push_all(&mut record, pps);
    record
}

/// The SPS fields the tests vary; the default is constrained baseline 320x180 at level 3.0.
#[derive(Debug, Clone)]
struct Sps {
    profile_idc: u8,
    constraint_flags: u8,
    level_idc: u8,
    chroma_format_idc: u32,
    separate_colour_plane: bool,
    bit_depth_luma: u32,
    bit_depth_chroma: u32,
    /// Per list: absent, or the delta_scale values coded for it.
    scaling_lists: Vec<Option<Vec<i64>>>,
    poc_type: u32,
    poc_cycle: Vec<i64>,
    max_num_ref_frames: u32,
    width_mbs: u32,
    height_map_units: u32,
    frame_mbs_only: bool,
    crop: [u32; 4],
}

impl Default for Sps {
    fn default() -> Self {
        Self {
            profile_idc: 66,
            constraint_flags: 0xc0,
            level_idc: 30,
            chroma_format_idc: 1,
            separate_colour_plane: false,
            bit_depth_luma: 8,
            bit_depth_chroma: 8,
            scaling_lists: Vec::new(),
            poc_type: 2,
            poc_cycle: Vec::new(),
            max_num_ref_frames: 1,
            width_mbs: 20,
            height_map_units: 12,
            frame_mbs_only: true,
            crop: [0, 0, 0, 6],
        }
    }
}

impl Sps {
    /// The escaped NAL unit, header byte included.
    fn nal(&self) -> Vec<u8> {
        let mut w = BitWriter::default();
        w.bits(u64::from(self.profile_idc), 8);
        w.bits(u64::from(self.constraint_flags), 8);
        w.bits(u64::from(self.level_idc), 8);
        w.ue(0); // seq_parameter_set_id
        if HIGH_PROFILES.contains(&self.profile_idc) {
            w.ue(self.chroma_format_idc);
            if self.chroma_format_idc == 3 {
                w.flag(self.separate_colour_plane);
            }
            w.ue(self.bit_depth_luma - 8);
            w.ue(self.bit_depth_chroma - 8);
            w.flag(false); // qpprime_y_zero_transform_bypass_flag
            w.flag(!self.scaling_lists.is_empty());
            for list in &self.scaling_lists {
                w.flag(list.is_some());
                for &delta in list.iter().flatten() {
                    w.se(delta);
                }
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(self.poc_type);
        match self.poc_type {
            0 => w.ue(2),
            1 => {
                w.flag(false);
                w.se(-1);
                w.se(0);
                w.ue(u32::try_from(self.poc_cycle.len()).unwrap());
                for &offset in &self.poc_cycle {
                    w.se(offset);
                }
            }
            _ => {}
        }
        w.ue(self.max_num_ref_frames);
        w.flag(false); // gaps_in_frame_num_value_allowed_flag
        w.ue(self.width_mbs - 1);
        w.ue(self.height_map_units - 1);
        w.flag(self.frame_mbs_only);
        if !self.frame_mbs_only {
            w.flag(false);
        }
        w.flag(true); // direct_8x8_inference_flag
        w.flag(self.crop != [0; 4]);
        if self.crop != [0; 4] {
            self.crop.iter().for_each(|&c| w.ue(c));
        }
        w.flag(false); // vui_parameters_present_flag
        [vec![0x67], escape(&w.finish())].concat()
    }
}

/// Inserts emulation-prevention bytes.
fn escape(rbsp: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut zeros = 0;
    for &byte in rbsp {
        if zeros >= 2 && byte <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

#[derive(Debug, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn flag(&mut self, bit: bool) {
        if self.bits.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if bit {
            *self.bytes.last_mut().unwrap() |= 0x80 >> (self.bits % 8);
        }
        self.bits += 1;
    }

    fn bits(&mut self, value: u64, n: u32) {
        for i in (0..n).rev() {
            self.flag((value >> i) & 1 == 1);
        }
    }

    fn ue(&mut self, value: u32) {
        let coded = u64::from(value) + 1;
        let len = 64 - coded.leading_zeros();
        self.bits(0, len - 1);
        self.bits(coded, len);
    }

    fn se(&mut self, value: i64) {
        let code = if value > 0 { 2 * value - 1 } else { -2 * value };
        self.ue(u32::try_from(code).unwrap());
    }

    /// The RBSP with its stop bit and alignment.
    fn finish(mut self) -> Vec<u8> {
        self.flag(true);
        self.bytes
    }
}
