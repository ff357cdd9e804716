//! Property tests of the client-message parser: no input panics it, every rejection says
//! why in a machine-readable reason, and every well-formed message survives the wire.
//!
//! The coverage-guided counterpart is `fuzz/fuzz_targets/client_message.rs` (`scripts/fuzz`).

use framecast_common::protocol::{
    CLIENT_MESSAGE_TYPES, ClientMessage, ContinuationState, Empty, InitialImage, PauseToggle,
    PromptSource, ProtocolError, ResumeRequest, SeedPrompts, SegmentPrompt, SessionInit, Toggle,
    parse_client_message,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Field names the message types use, so generated objects reach the field checks.
const FIELD_NAMES: &[&str] = &[
    "type",
    "client_id",
    "preset",
    "preset_label",
    "curated_prompts",
    "initial_image",
    "mime",
    "name",
    "data",
    "enhancement_enabled",
    "auto_extension_enabled",
    "loop_generation_enabled",
    "single_clip_mode",
    "stream_mode",
    "continuation_state",
    "kind",
    "payload",
    "prompt",
    "negative_prompt",
    "source",
    "seed",
    "num_inference_steps",
    "guidance_scale",
    "seed_prompts",
    "enabled",
    "paused",
];

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// A JSON number of any flavour serde_json produces: negative, u64 beyond i64, fractional.
fn json_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        (0u32..4).prop_map(Value::from),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(FIELD_NAMES).prop_map(str::to_string),
        1 => "[a-z_]{0,12}",
        1 => any::<String>(),
    ]
}

fn json_string() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(&CLIENT_MESSAGE_TYPES[..]).prop_map(str::to_string),
        1 => prop::sample::select(&["user", "curated", "enhanced", "auto_extension", "image/png"][..])
            .prop_map(str::to_string),
        3 => any::<String>(),
    ]
}

/// Any JSON value, a few levels deep, biased toward this protocol's names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        json_number(),
        json_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((json_key(), inner), 0..8)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// An object whose `type` is a known message type, with arbitrary known-named fields:
/// mostly invalid messages that get past the type check into the field checks.
fn typed_object() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&CLIENT_MESSAGE_TYPES[..]),
        prop::collection::vec((prop::sample::select(FIELD_NAMES), json_value()), 0..6),
    )
        .prop_map(|(message_type, fields)| {
            let mut map = Map::new();
            for (k, v) in fields {
                map.insert(k.to_string(), v);
            }
            map.insert("type".into(), Value::String(message_type.into()));
            Value::Object(map)
        })
}

/// Checks what every parse result must satisfy, whatever the input.
fn check_result(text: &str, result: &Result<ClientMessage, ProtocolError>) {
    let Err(err) = result else { return };
    assert!(
        !err.reason().is_empty(),
        "empty reason for {text:?}: {err:?}"
    );
    assert!(!err.to_string().is_empty(), "empty message for {text:?}");
    let parsed = serde_json::from_str::<Value>(text);
    match err {
        ProtocolError::NotJson(detail) => {
            assert!(parsed.is_err(), "valid JSON called not JSON: {text:?}");
            assert!(!detail.is_empty());
        }
        ProtocolError::MissingType => {
            let value = parsed.expect("MissingType only for JSON");
            assert!(
                value.get("type").and_then(Value::as_str).is_none(),
                "{text:?}"
            );
        }
        ProtocolError::UnknownType(t) => {
            assert!(!CLIENT_MESSAGE_TYPES.contains(&t.as_str()), "{t}");
        }
        ProtocolError::InvalidField {
            message_type,
            field,
            problem,
        } => {
            assert!(
                CLIENT_MESSAGE_TYPES.contains(&message_type.as_str()),
                "{message_type}"
            );
            assert!(
                !field.is_empty() && field != ".",
                "field error names no field for {text:?}: {err}"
            );
            assert!(!problem.is_empty(), "{text:?}");
        }
    }
}

fn opt_string() -> impl Strategy<Value = Option<String>> {
    prop::option::of(any::<String>())
}

fn continuation_state() -> impl Strategy<Value = ContinuationState> {
    // Payload numbers stay integral: serde_json's default float parser is not guaranteed
    // to give back every f64 bit for bit, which is no property of ours.
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    let payload = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    (any::<String>(), payload, opt_string()).prop_map(|(kind, payload, signature)| {
        ContinuationState {
            kind,
            payload,
            signature,
        }
    })
}

fn session_init() -> impl Strategy<Value = SessionInit> {
    let image = (any::<String>(), opt_string(), any::<String>())
        .prop_map(|(mime, name, data)| InitialImage { mime, name, data });
    (
        (opt_string(), opt_string(), opt_string()),
        prop::collection::vec(any::<String>(), 0..4),
        prop::option::of(image),
        any::<[bool; 5]>(),
        opt_string(),
        prop::option::of(continuation_state()),
        prop::option::of((any::<String>(), any::<String>(), any::<u32>())),
    )
        .prop_map(
            |(
                (client_id, preset, preset_label),
                curated_prompts,
                initial_image,
                [
                    enhancement,
                    auto_extension,
                    loop_generation,
                    single_clip,
                    broadcast,
                ],
                stream_mode,
                continuation_state,
                resume,
            )| SessionInit {
                client_id,
                preset,
                preset_label,
                curated_prompts,
                initial_image,
                enhancement_enabled: enhancement,
                auto_extension_enabled: auto_extension,
                loop_generation_enabled: loop_generation,
                single_clip_mode: single_clip,
                stream_mode,
                continuation_state,
                resume: resume.map(|(session_id, token, next_segment_idx)| {
                    Box::new(ResumeRequest {
                        session_id,
                        token,
                        next_segment_idx,
                    })
                }),
                broadcast,
            },
        )
}

fn segment_prompt() -> impl Strategy<Value = SegmentPrompt> {
    let source = prop::sample::select(
        &[
            PromptSource::Curated,
            PromptSource::Enhanced,
            PromptSource::User,
            PromptSource::AutoExtension,
        ][..],
    );
    (
        any::<String>(),
        opt_string(),
        prop::option::of(source),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<u32>()),
        prop::option::of(
            any::<f32>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()),
        ),
    )
        .prop_map(
            |(prompt, negative_prompt, source, seed, num_inference_steps, guidance_scale)| {
                SegmentPrompt {
                    prompt,
                    negative_prompt,
                    source,
                    seed,
                    num_inference_steps,
                    guidance_scale,
                }
            },
        )
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        session_init().prop_map(ClientMessage::SessionInitV2),
        segment_prompt().prop_map(ClientMessage::SegmentPromptSource),
        prop::collection::vec(any::<String>(), 0..4).prop_map(|seed_prompts| {
            ClientMessage::SeedPromptsUpdated(SeedPrompts { seed_prompts })
        }),
        any::<bool>().prop_map(|enabled| ClientMessage::EnhancementUpdated(Toggle { enabled })),
        any::<bool>().prop_map(|enabled| ClientMessage::AutoExtensionUpdated(Toggle { enabled })),
        any::<bool>().prop_map(|enabled| ClientMessage::LoopGenerationUpdated(Toggle { enabled })),
        any::<bool>()
            .prop_map(|paused| ClientMessage::GenerationPausedUpdated(PauseToggle { paused })),
        Just(ClientMessage::SnapshotState(Empty {})),
        Just(ClientMessage::Ping(Empty {})),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        let result = parse_client_message(&text);
        check_result(&text, &result);
    }

    #[test]
    fn json_like_strings_never_panic(text in r#"[\[\]{}":,0-9a-z_ .eE+\-\\]{0,64}"#) {
        let result = parse_client_message(&text);
        check_result(&text, &result);
    }

    #[test]
    fn arbitrary_json_values_never_panic(value in json_value()) {
        let text = value.to_string();
        let result = parse_client_message(&text);
        check_result(&text, &result);
    }

    #[test]
    fn typed_objects_are_messages_or_name_the_bad_field(value in typed_object()) {
        let text = value.to_string();
        let result = parse_client_message(&text);
        check_result(&text, &result);
        prop_assert!(
            matches!(result, Ok(_) | Err(ProtocolError::InvalidField { .. })),
            "{text}: {result:?}"
        );
    }

    #[test]
    fn well_formed_messages_round_trip(msg in client_message()) {
        let text = serde_json::to_string(&msg).unwrap();
        prop_assert_eq!(parse_client_message(&text), Ok(msg), "{}", text);
    }

    #[test]
    fn fastvideo_empty_forms_mean_none(msg in client_message()) {
        // `initial_image: {}` is no image; `seed_prompts_updated` without its list is none.
        let mut value = serde_json::to_value(&msg).unwrap();
        let object = value.as_object_mut().unwrap();
        let expected = match msg {
            ClientMessage::SessionInitV2(init) => {
                object.insert("initial_image".into(), Value::Object(Map::new()));
                ClientMessage::SessionInitV2(SessionInit { initial_image: None, ..init })
            }
            ClientMessage::SeedPromptsUpdated(_) => {
                object.remove("seed_prompts");
                ClientMessage::SeedPromptsUpdated(SeedPrompts { seed_prompts: Vec::new() })
            }
            other => other,
        };
        prop_assert_eq!(parse_client_message(&value.to_string()), Ok(expected));
    }

    #[test]
    fn a_non_object_initial_image_is_refused(image in json_value()) {
        // Only null, `{}` and a whole image object are images; everything else names the field.
        prop_assume!(!image.is_null() && !image.is_object());
        let text = serde_json::json!({"type": "session_init_v2", "initial_image": image}).to_string();
        let result = parse_client_message(&text);
        prop_assert!(
            matches!(&result, Err(ProtocolError::InvalidField { field, .. }) if field == "initial_image"),
            "{}: {:?}", text, result
        );
    }

    #[test]
    fn unknown_fields_do_not_change_the_message(
        msg in client_message(),
        extra in prop::collection::btree_map("x_[a-z]{1,8}", json_value(), 0..4),
    ) {
        let mut value = serde_json::to_value(&msg).unwrap();
        value.as_object_mut().unwrap().extend(extra);
        prop_assert_eq!(parse_client_message(&value.to_string()), Ok(msg));
    }
}
