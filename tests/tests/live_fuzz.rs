//! A live protocol fuzzer: the real replica (mock generator, subprocess workers) and the real
//! router in front of it get a seeded, deterministic mix of about 5,000 hostile frames over
//! a few hundred sessions — mutated valid messages (byte flips, truncation, type confusion,
//! huge and NaN-ish numbers, deep nesting, unknown types, missing and extra fields, strings up
//! to just over the frame limit), binary frames, invalid UTF-8, empty frames, fragmented and
//! malformed WebSocket frames, random bytes and pings.
//!
//! Whatever comes in, every frame the server sends is a JSON text message with a `type`
//! (every `error` with a `code`) or binary fMP4, neither process dies, no worker process is
//! restarted, memory stays bounded, every worker is free again afterwards, and a normal
//! session still streams through the router.
//!
//! Every session the replica has no reason to end (its opening frame is accepted, no frame is
//! oversized or malformed, no single-clip stream) must end with a close frame. Sessions the
//! replica ends while the client still sends often lose their close frame to a TCP reset (the
//! replica closes its socket with the client's frames unread), and pingora #946 tears a tunnel
//! down right after the 101 now and then; both are counted and printed, and fail the test
//! only with `FRAMECAST_FUZZ_STRICT_CLOSE=1`.
//!
//! `FRAMECAST_FUZZ_SEED=<n>` replays another input set; `FRAMECAST_FUZZ_FRAMES=<n>` sizes it;
//! `FRAMECAST_FUZZ_ONLY=<i>,<j>` (with `FRAMECAST_FUZZ_REPEAT=<n>`) replays single sessions of
//! the seed; `FRAMECAST_FUZZ_VERBOSE=1` prints every session that ended without a close code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framecast_e2e::{
    ChildGuard, get_json, proc_status_bytes, rss_bytes, start_mock_replica, start_router,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};

const DEFAULT_SEED: u64 = 0x5eed_f4a3_ca57_0013;
const DEFAULT_FRAMES: usize = 5_000;
/// Largest client message the replica takes (`streaming.max_message_bytes`, default 1 MiB);
/// with `max_init_image_bytes` at 256 KiB the opening frame's limit is the same.
const FRAME_LIMIT: usize = 1 << 20;
const WORKERS: usize = 2;
/// Clients fuzzing at once: more than the workers, so sessions also wait in the queue.
const CONCURRENCY: usize = 4;

/// Where the replica serves `/status` and `/metrics` (its admin listener): the one place
/// to change if that moves again.
fn admin_base(replica_base: &str) -> String {
    framecast_e2e::admin_base(replica_base)
}

// ---------------------------------------------------------------------------------------
// Input generation (deterministic per seed)
// ---------------------------------------------------------------------------------------

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so nearby seeds give unrelated streams (and never 0).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, lo: usize, hi: usize) -> Vec<u8> {
        let n = self.range(lo, hi);
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn ascii(&mut self, lo: usize, hi: usize) -> String {
        let n = self.range(lo, hi);
        (0..n)
            .map(|_| char::from(32 + (self.next() % 95) as u8))
            .collect()
    }

    /// A string of any Unicode: ASCII, accents, CJK, emoji, controls, NUL.
    fn unicode(&mut self, lo: usize, hi: usize) -> String {
        let n = self.range(lo, hi);
        const POOL: &[char] = &[
            'a',
            'Z',
            ' ',
            '"',
            '\\',
            '\0',
            '\n',
            '\u{7f}',
            'é',
            'ß',
            '中',
            '文',
            '🎥',
            '🌊',
            '\u{202e}',
            '\u{feff}',
            '\u{fffd}',
            '\u{10ffff}',
        ];
        (0..n).map(|_| *self.pick(POOL)).collect()
    }
}

/// One frame a fuzzing client sends.
#[derive(Debug, Clone)]
enum Out {
    Text(String),
    /// A text frame whose payload need not be UTF-8.
    RawText(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// Frames written as they are: fragments, reserved bits and opcodes.
    Frames(Vec<Frame>),
}

impl Out {
    /// Whether the server may end the session on this frame (larger than the limit, not
    /// UTF-8 text, a protocol violation).
    fn ends_session(&self) -> bool {
        match self {
            Out::Text(t) => t.len() > FRAME_LIMIT,
            Out::Binary(b) => b.len() > FRAME_LIMIT,
            Out::RawText(_) => true,
            Out::Ping(_) | Out::Pong(_) => false,
            Out::Frames(frames) => {
                let mut in_message = false;
                frames.iter().any(|f| {
                    let h = f.header();
                    let bad = h.rsv1
                        || match h.opcode {
                            OpCode::Data(Data::Reserved(_)) | OpCode::Control(_)
                                if f.payload().len() > 125 =>
                            {
                                true
                            }
                            OpCode::Data(Data::Reserved(_)) => true,
                            OpCode::Data(Data::Continue) => !in_message,
                            OpCode::Data(_) => in_message,
                            OpCode::Control(_) => false,
                        };
                    if let OpCode::Data(_) = h.opcode {
                        in_message = !h.is_final;
                    }
                    bad
                })
            }
        }
    }

    fn label(&self) -> String {
        match self {
            Out::Text(t) if t.len() > FRAME_LIMIT => "oversized_text".into(),
            Out::Text(t) => {
                let kind = serde_json::from_str::<Value>(t)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(str::to_string));
                let kind: String = kind
                    .unwrap_or_else(|| "?".into())
                    .chars()
                    .take(40)
                    .collect();
                if t.contains(r#""single_clip_mode":true"#) {
                    // The replica ends this stream after one segment.
                    format!("text:{kind}(single_clip)")
                } else if t.len() > 10_000 {
                    format!("text:{kind}({} bytes)", t.len())
                } else {
                    format!("text:{kind}")
                }
            }
            Out::RawText(_) => "invalid_utf8_text".into(),
            Out::Binary(b) if b.len() > FRAME_LIMIT => "oversized_binary".into(),
            Out::Binary(_) => "binary".into(),
            Out::Ping(_) => "ping".into(),
            Out::Pong(_) => "pong".into(),
            Out::Frames(f) => format!(
                "frames:{}",
                f.iter()
                    .map(|f| format!(
                        "{:?}{}",
                        f.header().opcode,
                        if f.header().rsv1 { "+rsv1" } else { "" }
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    fn into_messages(self) -> Vec<Message> {
        match self {
            Out::Text(t) => vec![Message::text(t)],
            Out::RawText(b) => vec![Message::Frame(Frame::message(
                b,
                OpCode::Data(Data::Text),
                true,
            ))],
            Out::Binary(b) => vec![Message::binary(b)],
            Out::Ping(b) => vec![Message::Ping(Bytes::from(b))],
            Out::Pong(b) => vec![Message::Pong(Bytes::from(b))],
            Out::Frames(frames) => frames.into_iter().map(Message::Frame).collect(),
        }
    }
}

const PROMPTS: &[&str] = &[
    "a calm sea at dusk",
    "a red fox running through snow",
    "time-lapse of clouds over mountains",
];

fn valid_init(rng: &mut Rng) -> Value {
    let mut init = json!({"type": "session_init_v2"});
    if rng.chance(50) {
        init["client_id"] = json!(format!("fuzz-{}", rng.next() % 1000));
    }
    if rng.chance(40) {
        init["curated_prompts"] = json!(PROMPTS);
    }
    if rng.chance(30) {
        init["loop_generation_enabled"] = json!(rng.chance(50));
    }
    if rng.chance(30) {
        init["auto_extension_enabled"] = json!(rng.chance(50));
    }
    if rng.chance(20) {
        init["enhancement_enabled"] = json!(rng.chance(50));
    }
    if rng.chance(20) {
        init["single_clip_mode"] = json!(rng.chance(50));
    }
    if rng.chance(30) {
        init["stream_mode"] = json!("av_fmp4");
    }
    if rng.chance(10) {
        init["preset"] = json!("fuzz");
        init["preset_label"] = json!("Fuzz");
    }
    init
}

fn valid_message(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0..=3 => {
            let mut m = json!({"type": "segment_prompt_source", "prompt": *rng.pick(PROMPTS)});
            if rng.chance(30) {
                m["negative_prompt"] = json!("blurry");
            }
            if rng.chance(30) {
                m["source"] = json!(*rng.pick(&["curated", "enhanced", "user", "auto_extension"]));
            }
            if rng.chance(30) {
                m["seed"] = json!(rng.next() >> 20);
            }
            if rng.chance(30) {
                m["num_inference_steps"] = json!(rng.range(1, 8));
            }
            if rng.chance(30) {
                m["guidance_scale"] = json!(rng.below(2000) as f64 / 100.0);
            }
            m
        }
        4 => json!({"type": "seed_prompts_updated", "seed_prompts": PROMPTS}),
        5 => {
            let kind = *rng.pick(&[
                "enhancement_updated",
                "auto_extension_updated",
                "loop_generation_updated",
            ]);
            json!({"type": kind, "enabled": rng.chance(50)})
        }
        6 => json!({"type": "generation_paused_updated", "paused": rng.chance(50)}),
        7 => json!({"type": "snapshot_state"}),
        _ => json!({"type": "ping"}),
    }
}

/// A value of the wrong kind, or a hostile one of the right kind.
fn hostile_value(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => json!("42"),
        1 => json!("NaN"),
        2 => json!("Infinity"),
        3 => json!(u64::MAX),
        4 => json!(i64::MIN),
        5 => json!(1e308),
        6 => json!(-1e-308),
        7 => json!(9_007_199_254_740_993u64),
        8 => json!(0.5),
        9 => json!(-1),
        10 => Value::Null,
        11 => json!(true),
        12 => json!([1, "two", null, {"three": 3}]),
        13 => json!({"nested": {"deeper": [[]]}}),
        14 => json!(rng.unicode(0, 64)),
        _ => json!(""),
    }
}

/// Raw JSON tokens that no JSON value can hold.
fn hostile_token(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => "NaN".into(),
        1 => "-Infinity".into(),
        2 => "1e999".into(),
        3 => "-0".into(),
        4 => "1e-400".into(),
        5 => "18446744073709551616".into(),
        6 => "\"\\ud800\"".into(),
        7 => "0x10".into(),
        8 => {
            let depth = rng.range(100, 300);
            format!("{}{}", "[".repeat(depth), "]".repeat(depth))
        }
        _ => {
            let depth = rng.range(1_000, 50_000);
            format!("{}{}", "{\"a\":[".repeat(depth), "]}".repeat(depth))
        }
    }
}

/// A JSON-level mutation of `message` (still valid JSON unless a raw token is spliced in).
fn mutate_json(rng: &mut Rng, mut message: Value) -> String {
    let keys: Vec<String> = message
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let key = rng.pick(&keys).clone();
    match rng.below(12) {
        // Type confusion or a hostile value in an existing field.
        0..=2 => message[key.as_str()] = hostile_value(rng),
        // Numbers as strings, strings as numbers.
        3 => {
            if let Some(obj) = message.as_object_mut() {
                for v in obj.values_mut() {
                    *v = match v.take() {
                        Value::Number(n) => json!(n.to_string()),
                        Value::String(s) if s.parse::<f64>().is_err() => json!(s.len()),
                        Value::Bool(b) => json!(u8::from(b)),
                        other => other,
                    };
                }
            }
        }
        // Missing field (the `type` included).
        4 => {
            message.as_object_mut().unwrap().remove(&key);
        }
        // Extra fields.
        5 => {
            for _ in 0..rng.range(1, 20) {
                let name = rng.ascii(1, 12);
                message[name] = hostile_value(rng);
            }
            message["__proto__"] = json!({"polluted": true});
        }
        // Unknown or mis-typed `type`.
        6 => {
            message["type"] = match rng.below(5) {
                0 => json!("SEGMENT_PROMPT_SOURCE"),
                1 => json!(rng.ascii(0, 40)),
                2 => json!(7),
                3 => json!(["segment_prompt_source"]),
                _ => json!("session_init_v2"),
            };
        }
        // A huge string, below or just over the frame limit.
        7 => {
            let size = *rng.pick(&[
                2_001,
                65_536,
                FRAME_LIMIT - 200,
                FRAME_LIMIT - 60,
                FRAME_LIMIT + 1,
            ]);
            message[key.as_str()] = json!("x".repeat(size));
        }
        // Deep arrays as a value.
        8 => {
            let mut v = json!(0);
            for _ in 0..rng.range(10, 120) {
                v = json!([v]);
            }
            message[key.as_str()] = v;
        }
        // A raw token spliced in where a value goes.
        9 => {
            message[key.as_str()] = json!("@@TOKEN@@");
            let token = hostile_token(rng);
            return message.to_string().replace("\"@@TOKEN@@\"", &token);
        }
        // Not an object at all.
        10 => {
            return match rng.below(4) {
                0 => format!("[{message}]"),
                1 => "null".into(),
                2 => json!(message.to_string()).to_string(),
                _ => "{}".into(),
            };
        }
        // Duplicate keys: the last one counts.
        _ => {
            let text = message.to_string();
            return format!("{{\"type\":\"ping\",{}", &text[1..]);
        }
    }
    message.to_string()
}

/// A text-level mutation of `text`: ASCII byte flips, truncation, insertion, repetition.
fn mutate_text(rng: &mut Rng, text: String) -> String {
    let mut bytes = text.into_bytes();
    match rng.below(5) {
        0 => {
            for _ in 0..rng.range(1, 6) {
                if bytes.is_empty() {
                    break;
                }
                let i = rng.below(bytes.len());
                // Flip within 7 bits so the text stays UTF-8 (invalid UTF-8 is its own case).
                if bytes[i].is_ascii() {
                    bytes[i] ^= 1 << rng.below(7);
                }
            }
        }
        1 => {
            let cut = rng.below(bytes.len().max(1));
            bytes.truncate(cut);
        }
        2 => {
            let at = rng.below(bytes.len() + 1);
            let junk = rng.ascii(1, 16).into_bytes();
            bytes.splice(at..at, junk);
        }
        3 => {
            let copy = bytes.clone();
            bytes.extend_from_slice(&copy);
        }
        _ => {
            let pad = " \t\r\n".repeat(rng.range(1, 100));
            bytes = [pad.as_bytes(), &bytes, pad.as_bytes()].concat();
        }
    }
    String::from_utf8(bytes).expect("ASCII edits keep UTF-8")
}

fn fragments(rng: &mut Rng, payload: Vec<u8>, opcode: Data) -> Vec<Frame> {
    let parts = rng.range(2, 4).min(payload.len().max(2));
    let size = payload.len().div_ceil(parts).max(1);
    let chunks: Vec<Vec<u8>> = if payload.is_empty() {
        vec![Vec::new(), Vec::new()]
    } else {
        payload.chunks(size).map(<[u8]>::to_vec).collect()
    };
    let last = chunks.len() - 1;
    let mut frames = Vec::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let op = if i == 0 {
            OpCode::Data(opcode)
        } else {
            OpCode::Data(Data::Continue)
        };
        frames.push(Frame::message(chunk, op, i == last));
        // A control frame may come between fragments.
        if i != last && rng.chance(30) {
            frames.push(Frame::ping(b"between".to_vec()));
        }
    }
    frames
}

/// Frames after which the server may rightly end the session (frame too big, a protocol
/// violation): sent last.
fn terminal_frame(rng: &mut Rng) -> Out {
    match rng.below(7) {
        0 => Out::Text(format!(
            "{{\"type\":\"segment_prompt_source\",\"prompt\":\"{}\"}}",
            "y".repeat(FRAME_LIMIT)
        )),
        1 => Out::Binary(rng.bytes(FRAME_LIMIT + 1, FRAME_LIMIT + 4096)),
        2 => {
            // Invalid UTF-8 in a text frame.
            let mut b = br#"{"type":"segment_prompt_source","prompt":""#.to_vec();
            b.extend_from_slice(&[0xff, 0xfe, 0xc0, 0x80, 0xed, 0xa0, 0x80]);
            b.extend_from_slice(br#""}"#);
            Out::RawText(b)
        }
        3 => {
            // A fragmented message that never ends, then a new message.
            let first = Frame::message(b"{\"type\":".to_vec(), OpCode::Data(Data::Text), false);
            let next = Frame::message(b"{}".to_vec(), OpCode::Data(Data::Text), true);
            Out::Frames(vec![first, next])
        }
        4 => {
            // A continuation with nothing to continue.
            Out::Frames(vec![Frame::message(
                b"orphan".to_vec(),
                OpCode::Data(Data::Continue),
                true,
            )])
        }
        5 => {
            // Reserved bits and opcodes.
            let mut header = FrameHeader::default();
            if rng.chance(50) {
                header.rsv1 = true;
                header.opcode = OpCode::Data(Data::Text);
            } else {
                header.opcode = OpCode::Data(Data::Reserved(3 + rng.below(5) as u8));
            }
            Out::Frames(vec![Frame::from_payload(
                header,
                Bytes::from(b"{\"type\":\"ping\"}".to_vec()),
            )])
        }
        _ => {
            // A ping too long for a control frame.
            Out::Frames(vec![Frame::ping(rng.bytes(126, 325))])
        }
    }
}

/// One frame of the mix sent after the opening frame.
fn fuzz_frame(rng: &mut Rng) -> Out {
    match rng.below(100) {
        0..=11 => Out::Text(valid_message(rng).to_string()),
        12..=41 => {
            let message = valid_message(rng);
            Out::Text(mutate_json(rng, message))
        }
        42..=59 => {
            let message = valid_message(rng).to_string();
            Out::Text(mutate_text(rng, message))
        }
        60..=64 => Out::Text(rng.unicode(0, 300)),
        65..=67 => Out::Text(String::new()),
        68..=71 => Out::Binary(Vec::new()),
        72..=76 => Out::Binary(rng.bytes(1, 4096)),
        77..=78 => Out::Binary(valid_message(rng).to_string().into_bytes()),
        79..=80 => {
            // Invalid UTF-8 in a binary frame is just bytes.
            let mut b = rng.bytes(1, 64);
            b.extend_from_slice(&[0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x90, 0x28]);
            Out::Binary(b)
        }
        81..=86 => Out::Ping(rng.bytes(0, 125)),
        87..=88 => Out::Pong(rng.bytes(0, 125)),
        89..=92 => {
            // A valid message split into fragments.
            let payload = valid_message(rng).to_string().into_bytes();
            Out::Frames(fragments(rng, payload, Data::Text))
        }
        93..=94 => {
            let payload = rng.bytes(0, 512);
            Out::Frames(fragments(rng, payload, Data::Binary))
        }
        95..=96 => {
            // A session_init_v2 again (refused: duplicate).
            Out::Text(valid_init(rng).to_string())
        }
        _ => Out::Text(format!(
            "{{\"type\":\"segment_prompt_source\",\"prompt\":{}}}",
            hostile_token(rng)
        )),
    }
}

/// The opening frame: mostly a valid init (maybe with extra fields), sometimes mutated or
/// random bytes; true when the replica must accept it.
fn opening_frame(rng: &mut Rng) -> (Out, bool) {
    let init = valid_init(rng);
    let roll = rng.below(100);
    let out = match roll {
        0..=64 => Out::Text(init.to_string()),
        65..=71 => {
            let mut init = init;
            for _ in 0..rng.range(1, 5) {
                init[rng.ascii(8, 8)] = hostile_value(rng);
            }
            Out::Text(init.to_string())
        }
        72..=81 => Out::Text(mutate_json(rng, init)),
        82..=85 => Out::Text(mutate_text(rng, init.to_string())),
        86..=87 => {
            // A forged continuation state (refused; the session streams from scratch).
            let mut init = init;
            init["continuation_state"] = json!({
                "kind": "mock/v1",
                "payload": {"blob": "00000000000000000000000000000000", "segment": 3},
                "signature": "deadbeef"
            });
            Out::Text(init.to_string())
        }
        88 => {
            // An initial image that is not one.
            let mut init = init;
            init["initial_image"] = json!({"mime": "image/png", "data": rng.ascii(200, 200)});
            Out::Text(init.to_string())
        }
        89..=92 => Out::Binary(rng.bytes(0, 256)),
        93..=95 => Out::Text(rng.unicode(0, 100)),
        96 => Out::Text(String::new()),
        _ => Out::Ping(rng.bytes(8, 8)),
    };
    (out, matches!(roll, 0..=71 | 86..=88))
}

/// What one fuzzing session sends, from its own seed.
#[derive(Debug, Clone, Copy)]
struct Plan {
    index: usize,
    seed: u64,
    frames: usize,
    through_router: bool,
    /// Milliseconds between frames (0: as fast as the socket takes them).
    pause_ms: u64,
}

/// The frames of a session, and whether its opening frame is one the replica accepts.
fn session_frames(plan: &Plan) -> (Vec<Out>, bool) {
    let mut rng = Rng::new(plan.seed);
    let _ = rng.next(); // the frame count was drawn from this stream's first value
    let (opening, accepted) = opening_frame(&mut rng);
    let mut out = vec![opening];
    while out.len() + 1 < plan.frames {
        out.push(fuzz_frame(&mut rng));
    }
    out.push(if rng.chance(12) {
        terminal_frame(&mut rng)
    } else {
        fuzz_frame(&mut rng)
    });
    (out, accepted)
}

fn plans(seed: u64, total_frames: usize) -> Vec<Plan> {
    let mut plans = Vec::new();
    let mut frames = 0;
    while frames < total_frames {
        let index = plans.len();
        let session_seed = seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = Rng::new(session_seed);
        let n = 2 + (rng.next() % 40) as usize;
        // Most sessions send at once; some leave time for segments to stream meanwhile.
        let pause_ms = *Rng::new(!session_seed).pick(&[0, 0, 0, 0, 5, 20]);
        plans.push(Plan {
            index,
            seed: session_seed,
            frames: n,
            // One session in six talks to the replica directly.
            through_router: index % 6 != 0,
            pause_ms,
        });
        frames += n;
    }
    plans
}

// ---------------------------------------------------------------------------------------
// Running sessions and checking what comes back
// ---------------------------------------------------------------------------------------

/// What one session saw from the server.
#[derive(Debug, Default)]
struct Seen {
    texts: usize,
    binaries: usize,
    media_bytes: usize,
    error_codes: BTreeMap<String, usize>,
    /// Frames that break the protocol: the test fails on any.
    violations: Vec<String>,
    /// Close code (0 for a close frame without one), `None` when none came.
    close: Option<u16>,
    /// How the read side ended without a close frame.
    ended: Option<String>,
    /// The last frame the client sent (or tried to), and whether all went out.
    last_sent: String,
    sent_all: bool,
    /// The first frame after which the server may end the session, if any.
    ending_frame: Option<String>,
    /// Whether the opening frame is one the replica accepts.
    accepted: bool,
}

/// Known box types an fMP4 binary frame starts with.
const BOXES: &[&[u8; 4]] = &[
    b"ftyp", b"moov", b"moof", b"mdat", b"styp", b"sidx", b"emsg", b"prft", b"free",
];

fn check_server_frame(message: Message, seen: &mut Seen) -> bool {
    match message {
        Message::Text(t) => {
            seen.texts += 1;
            match serde_json::from_str::<Value>(&t) {
                Ok(v) if v["type"].is_string() => {
                    if v["type"] == "error" {
                        match v["code"].as_str() {
                            Some(code) if !code.is_empty() => {
                                *seen.error_codes.entry(code.to_string()).or_default() += 1;
                            }
                            _ => seen.violations.push(format!("error without a code: {t}")),
                        }
                        if !v["retryable"].is_boolean() {
                            seen.violations
                                .push(format!("error without a retryable flag: {t}"));
                        }
                    }
                }
                Ok(_) => seen
                    .violations
                    .push(format!("JSON without a string type: {t}")),
                Err(e) => seen
                    .violations
                    .push(format!("text that is not JSON ({e}): {t}")),
            }
            true
        }
        Message::Binary(b) => {
            seen.binaries += 1;
            seen.media_bytes += b.len();
            let is_box = b.len() >= 8
                && u32::from_be_bytes([b[0], b[1], b[2], b[3]]) >= 8
                && BOXES.iter().any(|name| &b[4..8] == *name);
            if !is_box {
                seen.violations.push(format!(
                    "binary frame of {} bytes that is not fMP4: {:02x?}",
                    b.len(),
                    &b[..b.len().min(16)]
                ));
            }
            true
        }
        Message::Ping(_) | Message::Pong(_) => true,
        Message::Close(frame) => {
            seen.close = Some(frame.map_or(0, |f| u16::from(f.code)));
            false
        }
        Message::Frame(f) => {
            seen.violations.push(format!("raw frame: {f:?}"));
            true
        }
    }
}

/// Codes a server or router may close a session with.
const CLOSE_CODES: &[u16] = &[0, 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013];

async fn run_session(plan: Plan, replica: Arc<String>, router: Arc<String>) -> (Plan, Seen) {
    let base = if plan.through_router {
        router.as_str()
    } else {
        replica.as_str()
    };
    let url = format!("{}/v1/stream", base.replace("http", "ws"));
    // Room for the largest hostile frame the client writes.
    let config = WebSocketConfig::default()
        .max_frame_size(Some(4 * FRAME_LIMIT))
        .max_message_size(Some(4 * FRAME_LIMIT));
    let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), false);
    let mut seen = Seen::default();
    let ws = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok((ws, _))) => ws,
        other => {
            seen.violations.push(format!(
                "session {} could not connect: {other:?}",
                plan.index
            ));
            return (plan, seen);
        }
    };
    let (mut sink, mut stream) = ws.split();
    let reader = tokio::spawn(async move {
        let mut seen = Seen::default();
        loop {
            match stream.next().await {
                Some(Ok(m)) => {
                    if !check_server_frame(m, &mut seen) {
                        // tungstenite answers the close; read to the end of the stream.
                        while let Some(Ok(m)) = stream.next().await {
                            seen.violations.push(format!("frame after close: {m:?}"));
                        }
                        break;
                    }
                }
                Some(Err(e)) => {
                    seen.ended = Some(format!("error: {e}"));
                    break;
                }
                None => {
                    seen.ended = Some("eof".into());
                    break;
                }
            }
        }
        seen
    });
    let (frames, accepted) = session_frames(&plan);
    let ending_frame = frames
        .iter()
        .enumerate()
        .find(|(i, f)| {
            // A single-clip stream is ended by the replica after its first segment.
            let single_clip = matches!(f, Out::Text(t) if t.contains(r#""single_clip_mode":true"#));
            f.ends_session() || (*i == 0 && (!accepted || single_clip))
        })
        .map(|(i, f)| format!("#{i} {}", f.label()));
    let mut sent_all = true;
    let mut last_sent = String::new();
    'send: for out in frames {
        if plan.pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(plan.pause_ms)).await;
        }
        last_sent = out.label();
        for message in out.into_messages() {
            if sink.send(message).await.is_err() {
                sent_all = false;
                break 'send;
            }
        }
    }
    if sent_all {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "fuzz session done".into(),
            })))
            .await;
    }
    let mut reader = reader;
    seen =
        match tokio::time::timeout(Duration::from_secs(15), &mut reader).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => panic!("reader task: {e}"),
            Err(_) => {
                reader.abort();
                let mut s = Seen::default();
                s.violations.push(format!(
                "session {} ({}): the server neither closed nor ended the connection within 15 s",
                plan.index,
                if plan.through_router { "router" } else { "replica" }
            ));
                s
            }
        };
    seen.last_sent = last_sent;
    seen.ending_frame = ending_frame;
    seen.accepted = accepted;
    seen.sent_all = sent_all;
    if let Some(code) = seen.close
        && !CLOSE_CODES.contains(&code)
    {
        seen.violations
            .push(format!("unexpected close code {code}"));
    }
    drop(sink);
    (plan, seen)
}

/// Resident memory of the replica and its worker processes together.
/// Memory of one process: resident (`VmRSS`) and its anonymous part (`RssAnon`: heap and
/// stacks, what a leak grows; the rest is mapped libtorch and GStreamer code).
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss: u64,
    anon: u64,
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} MiB (anon {:.0} MiB)",
            mib(self.rss),
            mib(self.anon)
        )
    }
}

fn mem(pid: u32) -> Option<Mem> {
    Some(Mem {
        rss: rss_bytes(pid)?,
        anon: proc_status_bytes(pid, "RssAnon")?,
    })
}

/// The replica's own process and each worker process, by name.
async fn replica_mem(replica: &ChildGuard, admin: &str) -> BTreeMap<String, Mem> {
    let mut parts = BTreeMap::new();
    parts.insert(
        "replica".to_string(),
        mem(replica.pid()).expect("replica alive"),
    );
    for (gpu, worker) in worker_rows(admin).await {
        if let Some(m) = worker["pid"].as_u64().and_then(|pid| mem(pid as u32)) {
            parts.insert(format!("worker {gpu}"), m);
        }
    }
    parts
}

fn show(parts: &BTreeMap<String, Mem>) -> String {
    parts
        .iter()
        .map(|(name, m)| format!("{name} {m}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn worker_rows(admin: &str) -> Vec<(String, Value)> {
    let status = get_json(&format!("{admin}/status")).await;
    status["gpu_status"]
        .as_object()
        .expect("gpu_status in /status")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A normal session: init and two prompts, at least two media segments, then a clean close
/// from the client answered by the server's close frame.
async fn normal_session(base: &str) {
    let url = format!("{}/v1/stream", base.replace("http", "ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text(
        json!({"type": "session_init_v2"}).to_string(),
    ))
    .await
    .unwrap();
    for prompt in &PROMPTS[..2] {
        ws.send(Message::text(
            json!({"type": "segment_prompt_source", "prompt": prompt}).to_string(),
        ))
        .await
        .unwrap();
    }
    let mut segments = 0;
    let mut binaries = 0;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while segments < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_ne!(v["type"], "error", "normal session got {v}");
                if v["type"] == "media_segment_complete" {
                    segments += 1;
                }
                seen.push(v["type"].as_str().unwrap_or("?").to_string());
            }
            Ok(Some(Ok(Message::Binary(_)))) => binaries += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("normal session ended early ({other:?}); saw {seen:?}"),
        }
    }
    assert!(binaries >= 2, "two segments but {binaries} binary frames");
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    })))
    .await
    .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
                other => panic!("no close frame back: {other:?}"),
            }
        }
    })
    .await
    .expect("the server answers the close within 10 s");
    assert_eq!(closed, Some(1000), "the server echoes a normal close");
}

/// Growth of one process's resident memory that counts as a leak. Per process the replica
/// holds at most 16 sessions, each with one message of at most 1 MiB being read and 64
/// queued outgoing messages (small JSON or a fragment of a few KiB at 128x72), so a few tens
/// of MiB at the peak; the allocator keeps some of that. 256 MiB is ten times the growth seen
/// (under 30 MiB per process) and far below what keeping even a fraction of the ~40 MiB of
/// hostile input (or one 1 MiB buffer per session) would add.
const MAX_GROWTH: u64 = 256 << 20;
/// No process may pass this, whatever its start (debug builds start near 470 MiB, most of it
/// mapped libtorch).
const MAX_RSS: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_never_break_the_protocol_the_processes_or_memory() {
    let seed = std::env::var("FRAMECAST_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let total_frames = std::env::var("FRAMECAST_FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_FRAMES);
    let verbose = std::env::var_os("FRAMECAST_FUZZ_VERBOSE").is_some();
    let strict_close = std::env::var_os("FRAMECAST_FUZZ_STRICT_CLOSE").is_some();
    eprintln!("fuzz seed {seed} (FRAMECAST_FUZZ_SEED), {total_frames} frames");
    let started = Instant::now();

    let logs = tempfile::tempdir().unwrap();
    let workers = WORKERS.to_string();
    let (mut replica, replica_base) = start_mock_replica(&[
        ("FRAMECAST_REPLICA__POOL__MODE", "subprocess"),
        ("FRAMECAST_REPLICA__POOL__NUM_WORKERS", &workers),
        ("FRAMECAST_REPLICA__POOL__ACQUIRE_TIMEOUT_SECONDS", "10"),
        ("FRAMECAST_REPLICA__STREAMING__MAX_SESSIONS", "16"),
        ("FRAMECAST_REPLICA__STREAMING__INIT_TIMEOUT_SECONDS", "3"),
        ("FRAMECAST_REPLICA__STREAMING__MAX_MESSAGE_BYTES", "1048576"),
        (
            "FRAMECAST_REPLICA__STREAMING__MAX_INIT_IMAGE_BYTES",
            "262144",
        ),
        // The replica never ends a session on its own while the fuzzer still sends.
        (
            "FRAMECAST_REPLICA__STREAMING__GENERATION_SEGMENT_CAP",
            "1000",
        ),
        (
            "FRAMECAST_REPLICA__STREAMING__SESSION_LOG_DIR",
            logs.path().to_str().unwrap(),
        ),
    ])
    .await;
    let admin = admin_base(&replica_base);
    let mut router = start_router(std::slice::from_ref(&replica_base), &[]).await;
    let router_base = router.base.clone();

    // A first session, so every lazily made buffer exists before the baseline.
    normal_session(&router_base).await;
    let workers_before = worker_rows(&admin).await;
    assert_eq!(workers_before.len(), WORKERS, "{workers_before:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut before = replica_mem(&replica, &admin).await;
    before.insert("router".into(), mem(router.process.pid()).unwrap());
    eprintln!(
        "memory before: {} (setup {:.1} s)",
        show(&before),
        started.elapsed().as_secs_f64()
    );

    let mut plans = plans(seed, total_frames);
    // FRAMECAST_FUZZ_ONLY=<index>,<index>... replays those sessions of the seed (e.g. one
    // that failed), FRAMECAST_FUZZ_REPEAT=<n> times each.
    if let Ok(only) = std::env::var("FRAMECAST_FUZZ_ONLY") {
        let only: Vec<usize> = only
            .split(',')
            .filter_map(|i| i.trim().parse().ok())
            .collect();
        let repeat: usize = std::env::var("FRAMECAST_FUZZ_REPEAT")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        plans = (0..repeat)
            .flat_map(|_| plans.iter().filter(|p| only.contains(&p.index)))
            .copied()
            .collect();
    }
    let sessions = plans.len();
    let frames: usize = plans.iter().map(|p| p.frames).sum();
    let replica_url = Arc::new(replica_base.clone());
    let router_url = Arc::new(router_base.clone());
    let fuzz_started = Instant::now();
    let mut peak = before.clone();
    let sample = |parts: BTreeMap<String, Mem>, peak: &mut BTreeMap<String, Mem>| {
        for (name, m) in parts {
            let p = peak.entry(name).or_default();
            p.rss = p.rss.max(m.rss);
            p.anon = p.anon.max(m.anon);
        }
    };
    let mut queue: std::collections::VecDeque<Plan> = plans.into();
    let mut running = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    loop {
        while running.len() < CONCURRENCY
            && let Some(plan) = queue.pop_front()
        {
            running.spawn(run_session(plan, replica_url.clone(), router_url.clone()));
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        results.push(done.expect("session task"));
        if results.len() % 10 == 0 {
            assert!(
                replica.try_wait().is_none(),
                "the replica died while fuzzing"
            );
            assert!(
                router.process.try_wait().is_none(),
                "the router died while fuzzing"
            );
            let mut parts = replica_mem(&replica, &admin).await;
            parts.insert("router".into(), mem(router.process.pid()).unwrap());
            sample(parts, &mut peak);
        }
    }
    let fuzz_time = fuzz_started.elapsed();

    // Everything the server sent was well-formed.
    let mut violations = Vec::new();
    let mut unclosed = Vec::new();
    let mut torn_down = 0;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut endings: BTreeMap<String, usize> = BTreeMap::new();
    let (mut texts, mut binaries, mut media) = (0, 0, 0);
    for (plan, seen) in &results {
        let via = if plan.through_router {
            "router"
        } else {
            "replica"
        };
        for v in &seen.violations {
            violations.push(format!(
                "session {} (seed {}, {via}): {v}",
                plan.index, plan.seed
            ));
        }
        for (code, n) in &seen.error_codes {
            *codes.entry(code.clone()).or_default() += n;
        }
        let how = match (seen.close, &seen.ended) {
            (Some(code), _) => format!("close {code}"),
            (None, Some(e)) => format!("no close frame ({e})"),
            (None, None) => "unknown".into(),
        };
        let cause = match (&seen.ending_frame, seen.accepted) {
            (_, false) => "after a refused opening frame",
            (Some(f), true) if f.starts_with("#0 ") => "single-clip stream (the replica ends it)",
            (Some(_), true) => "after an oversized or malformed frame",
            (None, true) => "well-formed frames only",
        };
        *endings.entry(format!("{how}, {via}, {cause}")).or_default() += 1;
        let detail = format!(
            "session {} (seed {}, {via}, {} frames, {} ms apart): {how}; last sent {}, all sent: {}; \
             may end at {:?}; got {} text and {} binary frames, errors {:?}",
            plan.index,
            plan.seed,
            plan.frames,
            plan.pause_ms,
            seen.last_sent,
            seen.sent_all,
            seen.ending_frame,
            seen.texts,
            seen.binaries,
            seen.error_codes
        );
        if verbose && seen.close.unwrap_or(0) == 0 {
            eprintln!("{detail}");
        }
        // pingora #946 (open upstream, in pingora-proxy 0.9.1): now and then the router tears
        // a tunnel down right after the 101, so a client whose opening frame the replica
        // accepts reads nothing at all, then EOF.
        let torn_after_101 = plan.through_router
            && seen.accepted
            && seen.close.is_none()
            && seen.texts == 0
            && seen.binaries == 0;
        if torn_after_101 {
            torn_down += 1;
        }
        // A session the replica had no reason to end must close with a close frame; with
        // FRAMECAST_FUZZ_STRICT_CLOSE=1 every session must.
        if seen.close.is_none()
            && (strict_close || (seen.accepted && seen.ending_frame.is_none() && !torn_after_101))
        {
            let sent: Vec<String> = session_frames(plan).0.iter().map(Out::label).collect();
            unclosed.push(format!("{detail}\n    frames: {}", sent.join(" ")));
        }
        texts += seen.texts;
        binaries += seen.binaries;
        media += seen.media_bytes;
    }
    eprintln!(
        "fuzzed {sessions} sessions, {frames} frames in {:.1} s; the server sent {texts} text and \
         {binaries} binary frames ({:.1} MiB of media); error codes {codes:?}",
        fuzz_time.as_secs_f64(),
        mib(media as u64)
    );
    eprintln!("how sessions ended:");
    for (how, n) in &endings {
        eprintln!("  {n:4}  {how}");
    }
    if torn_down > 0 {
        eprintln!(
            "{torn_down} sessions through the router got nothing but EOF after the 101: pingora \
             #946 (FRAMECAST_FUZZ_STRICT_CLOSE=1 fails on them)"
        );
    }
    assert!(
        violations.is_empty(),
        "{} protocol violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
    if !unclosed.is_empty() {
        eprintln!(
            "{} sessions ended without a close frame:\n{}",
            unclosed.len(),
            unclosed.join("\n")
        );
    }
    // Only sessions the replica had no reason to end count by default: a replica that ends a
    // session while the client still sends (a refusal, an oversized frame, the segment cap)
    // closes its socket with unread bytes, so the kernel resets the connection and the close
    // frame is often lost; and pingora #946 drops a tunnel now and then. Both are known.
    assert!(
        unclosed.is_empty(),
        "{} sessions ended without a close frame",
        unclosed.len()
    );
    assert!(
        codes.get("invalid_message").copied().unwrap_or(0) > 300,
        "the fuzzer reached the message parser: {codes:?}"
    );
    assert!(
        codes.get("session_rejected").copied().unwrap_or(0) > 10,
        "the fuzzer reached admission: {codes:?}"
    );
    assert!(binaries > 50, "fuzz sessions streamed media: {binaries}");
    for code in ["worker_failed", "internal_error"] {
        assert!(!codes.contains_key(code), "{code} while fuzzing: {codes:?}");
    }

    // Both processes live, and every worker is free again (no lease leaked).
    assert!(replica.try_wait().is_none(), "the replica died");
    assert!(router.process.try_wait().is_none(), "the router died");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = get_json(&format!("{admin}/status")).await;
        if status["available_gpus"] == WORKERS && status["queue_size"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "workers still busy 10 s after the last session: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No worker process died or was restarted.
    let workers_after = worker_rows(&admin).await;
    for ((gpu, before), (_, after)) in workers_before.iter().zip(&workers_after) {
        assert_eq!(after["restarts"], 0, "worker {gpu} restarted: {after}");
        assert_eq!(
            before["pid"], after["pid"],
            "worker {gpu} is another process: {before} -> {after}"
        );
        assert_eq!(after["process_alive"], true, "worker {gpu}: {after}");
    }

    // Memory stays bounded, process by process.
    let mut after = replica_mem(&replica, &admin).await;
    after.insert("router".into(), mem(router.process.pid()).unwrap());
    sample(after.clone(), &mut peak);
    eprintln!("memory after: {}", show(&after));
    eprintln!("memory peak (sampled): {}", show(&peak));
    for (name, start) in &before {
        let top = peak[name];
        assert!(
            top.rss < MAX_RSS && top.rss < start.rss + MAX_GROWTH,
            "{name}: resident memory peaked at {top}, from {start} (bounds: under {:.0} MiB and \
             at most {:.0} MiB more)",
            mib(MAX_RSS),
            mib(MAX_GROWTH)
        );
    }

    // And a normal session still streams through the router.
    normal_session(&router_base).await;
    assert!(replica.try_wait().is_none() && router.process.try_wait().is_none());
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}
