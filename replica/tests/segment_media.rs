//! Each segment's media is whole by the time the segment is reported done: right after
//! `end_segment`, the chunks already produced hold every frame of the segment (its last,
//! partial fragment included) and its sound up to what the audio encoder still holds (less
//! than a frame, plus the encoder's own delay, which then opens the next segment's sound
//! with no gap or overlap); nothing of a segment comes later with the next one. Real
//! x264/Opus/AAC encoders and isofmp4mux; the `moof` boxes are read back.

use std::collections::BTreeMap;

use framecast_replica::media::boxes::top_level_boxes;
use framecast_replica::media::{
    AudioEncoderKind, AudioSettings, ChunkKind, EncoderSettings, Fmp4Encoder, MediaChunk,
};

#[path = "support/decode.rs"]
mod decode;
use decode::decode_fmp4;

const W: u32 = 160;
const H: u32 = 96;
const FPS: u32 = 24;
const RATE: u32 = 48_000;

fn frame(i: u32) -> Vec<u8> {
    let mut f = vec![0u8; (W * H * 3) as usize];
    for (p, px) in f.chunks_exact_mut(3).enumerate() {
        let x = (p as u32 % W + i * 4) as u8;
        let y = (p as u32 / W) as u8;
        px.copy_from_slice(&[x, y, (i * 9) as u8]);
    }
    f
}

/// `samples` stereo frames of a tone, continuing from sample `from`.
fn tone(from: u64, samples: u64) -> Vec<f32> {
    (from..from + samples)
        .flat_map(|n| {
            let v = (n as f32 * 440.0 * std::f32::consts::TAU / RATE as f32).sin() * 0.2;
            [v, v]
        })
        .collect()
}

/// The direct children of a box payload (or of a whole buffer): `(type, payload)`.
fn children(bytes: &[u8]) -> Vec<([u8; 4], &[u8])> {
    top_level_boxes(bytes)
        .unwrap()
        .into_iter()
        .map(|(kind, offset, size)| (kind, &bytes[offset + 8..offset + size]))
        .collect()
}

fn child<'a>(bytes: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(bytes)
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, p)| p)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// What the init segment says about one track.
#[derive(Debug, Clone, Copy)]
struct Track {
    /// `vide` or `soun`.
    handler: [u8; 4],
    timescale: u32,
    /// `trex` default sample duration.
    default_duration: u32,
}

/// Tracks of an init segment by track id.
fn tracks(init: &[u8]) -> BTreeMap<u32, Track> {
    let moov = child(init, b"moov").expect("moov");
    let mut defaults = BTreeMap::new();
    if let Some(mvex) = child(moov, b"mvex") {
        for (kind, trex) in children(mvex) {
            if &kind == b"trex" {
                defaults.insert(be32(trex, 4), be32(trex, 12));
            }
        }
    }
    let mut out = BTreeMap::new();
    for (kind, trak) in children(moov) {
        if &kind != b"trak" {
            continue;
        }
        let tkhd = child(trak, b"tkhd").unwrap();
        let id = if tkhd[0] == 1 {
            be32(tkhd, 20)
        } else {
            be32(tkhd, 12)
        };
        let mdia = child(trak, b"mdia").unwrap();
        let mdhd = child(mdia, b"mdhd").unwrap();
        let timescale = if mdhd[0] == 1 {
            be32(mdhd, 20)
        } else {
            be32(mdhd, 12)
        };
        let hdlr = child(mdia, b"hdlr").unwrap();
        let handler = hdlr[8..12].try_into().unwrap();
        out.insert(
            id,
            Track {
                handler,
                timescale,
                default_duration: defaults.get(&id).copied().unwrap_or(0),
            },
        );
    }
    out
}

/// One track's part of one fragment: where it starts and what it covers, in its timescale.
#[derive(Debug, Clone, Copy)]
struct Run {
    track_id: u32,
    decode_time: u64,
    duration: u64,
    samples: u32,
}

/// Every `traf` of every `moof` in `bytes`.
fn runs(bytes: &[u8], tracks: &BTreeMap<u32, Track>) -> Vec<Run> {
    let mut out = Vec::new();
    for (kind, moof) in children(bytes) {
        if &kind != b"moof" {
            continue;
        }
        for (kind, traf) in children(moof) {
            if &kind != b"traf" {
                continue;
            }
            let tfhd = child(traf, b"tfhd").unwrap();
            let flags = be32(tfhd, 0) & 0xff_ffff;
            let track_id = be32(tfhd, 4);
            let mut at = 8;
            if flags & 0x01 != 0 {
                at += 8;
            }
            if flags & 0x02 != 0 {
                at += 4;
            }
            let mut default_duration = tracks[&track_id].default_duration;
            if flags & 0x08 != 0 {
                default_duration = be32(tfhd, at);
            }
            let tfdt = child(traf, b"tfdt").unwrap();
            let decode_time = if tfdt[0] == 1 {
                be64(tfdt, 4)
            } else {
                u64::from(be32(tfdt, 4))
            };
            let (mut duration, mut samples) = (0u64, 0u32);
            for (kind, trun) in children(traf) {
                if &kind != b"trun" {
                    continue;
                }
                let flags = be32(trun, 0) & 0xff_ffff;
                let count = be32(trun, 4);
                let mut at = 8;
                if flags & 0x001 != 0 {
                    at += 4;
                }
                if flags & 0x004 != 0 {
                    at += 4;
                }
                for _ in 0..count {
                    if flags & 0x100 != 0 {
                        duration += u64::from(be32(trun, at));
                        at += 4;
                    } else {
                        duration += u64::from(default_duration);
                    }
                    for bit in [0x200, 0x400, 0x800] {
                        if flags & bit != 0 {
                            at += 4;
                        }
                    }
                }
                samples += count;
            }
            out.push(Run {
                track_id,
                decode_time,
                duration,
                samples,
            });
        }
    }
    out
}

/// The bytes of one segment's chunks, with the stream's init segment cut off.
fn fragment_bytes(chunks: &[MediaChunk]) -> Vec<u8> {
    chunks
        .iter()
        .filter(|c| c.kind == ChunkKind::Fragment)
        .flat_map(|c| c.bytes.iter().copied())
        .collect()
}

/// Encodes `segments` segments of `frames` frames (with their sound when the settings have
/// an audio track), takes the chunks ready right after each `end_segment`, and returns the
/// stream's init segment and each segment's chunks.
fn encode(
    settings: EncoderSettings,
    segments: u32,
    frames: u32,
) -> (Vec<u8>, Vec<Vec<MediaChunk>>) {
    let audio = settings.audio.is_some();
    let mut encoder = Fmp4Encoder::new(settings).unwrap();
    let samples_per_segment = u64::from(RATE) * u64::from(frames) / u64::from(FPS);
    let mut init = None;
    let mut per_segment = Vec::new();
    for s in 0..segments {
        let mut chunks = Vec::new();
        encoder.begin_segment(s).unwrap();
        if audio {
            encoder
                .push_audio(tone(
                    u64::from(s) * samples_per_segment,
                    samples_per_segment,
                ))
                .unwrap();
        }
        for i in 0..frames {
            encoder.push_frame(frame(s * frames + i)).unwrap();
            chunks.extend(encoder.drain_ready().unwrap());
        }
        encoder.end_segment().unwrap();
        // No waiting: what the segment is made of must be there now.
        chunks.extend(encoder.drain_ready().unwrap());
        for c in &chunks {
            assert_eq!(c.segment_idx, s, "{:?} {}", c.kind, c.fragment_idx);
        }
        if let Some(c) = chunks.iter().find(|c| c.kind == ChunkKind::Init) {
            init.get_or_insert_with(|| c.bytes.clone());
        }
        per_segment.push(chunks);
    }
    drop(encoder);
    (init.expect("an init segment"), per_segment)
}

/// One track's media in one segment's bytes, in seconds on the stream's timeline.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: f64,
    end: f64,
    /// Sum of the `trun` sample durations.
    duration: f64,
    samples: u32,
    /// Fragments with samples of this track.
    fragments: usize,
}

/// Each segment's spans by handler (`vide`, `soun`); also checks that within a segment
/// each track's fragments follow one another without a gap or an overlap.
fn spans(init: &[u8], per_segment: &[Vec<MediaChunk>]) -> Vec<BTreeMap<[u8; 4], Span>> {
    let tracks = tracks(init);
    per_segment
        .iter()
        .enumerate()
        .map(|(k, chunks)| {
            let mut next: BTreeMap<u32, u64> = BTreeMap::new();
            let mut out: BTreeMap<[u8; 4], Span> = BTreeMap::new();
            for run in runs(&fragment_bytes(chunks), &tracks) {
                if run.samples == 0 {
                    continue;
                }
                let track = tracks[&run.track_id];
                if let Some(expected) = next.get(&run.track_id) {
                    // Within one tick: the muxer rounds each fragment's start into the
                    // timescale (an AAC frame is 21333333.3 ns).
                    assert!(
                        run.decode_time.abs_diff(*expected) <= 1,
                        "segment {k}, {}: fragments follow one another: {} then {run:?}",
                        String::from_utf8_lossy(&track.handler),
                        expected
                    );
                }
                next.insert(run.track_id, run.decode_time + run.duration);
                let ts = f64::from(track.timescale);
                let start = run.decode_time as f64 / ts;
                let end = (run.decode_time + run.duration) as f64 / ts;
                let span = out.entry(track.handler).or_insert(Span {
                    start,
                    end,
                    duration: 0.0,
                    samples: 0,
                    fragments: 0,
                });
                span.end = end;
                span.duration += run.duration as f64 / ts;
                span.samples += run.samples;
                span.fragments += 1;
            }
            out
        })
        .collect()
}

const EPS: f64 = 1e-6;
/// One tick of a 48 kHz track, and a bit: the muxer's rounding of an audio start.
const AUDIO_TICK: f64 = 1.5 / RATE as f64;

/// Checks that every segment's bytes hold all of its frames and its sound, and nothing of
/// another segment. `audio_lag` bounds how much of a segment's sound the audio encoder may
/// still hold when the segment ends (what it cannot encode before more sound arrives).
fn check_segments(kind: Option<AudioEncoderKind>, frames: u32, audio_lag: f64) {
    let mut settings = EncoderSettings::new(W, H, FPS, 250);
    settings.audio = kind.map(|encoder| AudioSettings {
        sample_rate: RATE,
        channels: 2,
        encoder,
    });
    let (init, per_segment) = encode(settings, 3, frames);
    let seconds = f64::from(frames) / f64::from(FPS);
    let mut audio_end = 0.0;
    for (k, spans) in spans(&init, &per_segment).iter().enumerate() {
        let (seg_start, seg_end) = (k as f64 * seconds, (k + 1) as f64 * seconds);
        let video = spans
            .get(b"vide")
            .unwrap_or_else(|| panic!("segment {k}: no video in its bytes: {spans:?}"));
        assert_eq!(video.samples, frames, "segment {k}: every frame: {video:?}");
        assert!(
            (video.start - seg_start).abs() < EPS
                && (video.end - seg_end).abs() < EPS
                && (video.duration - seconds).abs() < EPS,
            "segment {k}: video covers exactly {seg_start}..{seg_end}: {video:?}"
        );
        assert_eq!(
            video.fragments as u32,
            frames.div_ceil(6),
            "segment {k}: 6-frame fragments, the last one partial: {video:?}"
        );
        if kind.is_none() {
            assert_eq!(spans.len(), 1, "{spans:?}");
            continue;
        }
        let audio = spans
            .get(b"soun")
            .unwrap_or_else(|| panic!("segment {k}: no audio in its bytes: {spans:?}"));
        // The sound runs on from where the previous segment's stopped...
        assert!(
            (audio.start - audio_end).abs() < AUDIO_TICK,
            "segment {k}: audio starts where segment {} left off ({audio_end}): {audio:?}",
            k.saturating_sub(1)
        );
        // ...and reaches the segment's end, short of it by no more than the encoder holds.
        assert!(
            audio.end <= seg_end + EPS && audio.end >= seg_end - audio_lag,
            "segment {k}: audio ends within {audio_lag} s before {seg_end}: {audio:?}"
        );
        assert!(
            (audio.duration - seconds).abs() <= audio_lag,
            "segment {k}: audio lasts {seconds} s within {audio_lag} s: {audio:?}"
        );
        audio_end = audio.end;
    }
}

/// One Opus frame (20 ms): what opusenc may hold at a segment's end (a partial frame plus
/// its 6.5 ms lookahead stay under that for the lengths here).
const OPUS_LAG: f64 = 0.020;
/// Two AAC frames (1024 samples each at 48 kHz): a partial frame plus avenc_aac's delay.
const AAC_LAG: f64 = 2.0 * 1024.0 / RATE as f64;

#[test]
fn each_segment_holds_all_its_video_and_opus_audio() {
    check_segments(Some(AudioEncoderKind::Opus), 24, OPUS_LAG);
}

#[test]
fn each_segment_holds_all_its_video_and_aac_audio() {
    check_segments(Some(AudioEncoderKind::Aac), 24, AAC_LAG);
}

#[test]
fn a_segment_of_a_partial_fragment_holds_all_its_frames() {
    // 20 frames in 6-frame fragments: three whole fragments and one of 2 frames.
    check_segments(None, 20, 0.0);
}

#[test]
fn a_segment_of_a_partial_fragment_holds_all_its_frames_and_sound() {
    check_segments(Some(AudioEncoderKind::Opus), 20, OPUS_LAG);
}

#[test]
fn each_segment_saved_with_the_init_segment_plays_all_its_frames() {
    let (init, per_segment) = encode(EncoderSettings::new(W, H, FPS, 250), 3, 20);
    for (k, chunks) in per_segment.iter().enumerate() {
        let file = [init.clone(), fragment_bytes(chunks)].concat();
        assert_eq!(decode_fmp4(&file).0, 20, "segment {k}");
    }
}
