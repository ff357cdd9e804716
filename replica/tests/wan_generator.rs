//! The Wan generator end to end on the tiny model (CPU, fp32): diffusers' whole WanPipeline
//! reproduced, segments of the configured format, per-step progress, cancellation, and a
//! stream continued from its stored state by a fresh generator identically.

mod support;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use framecast_replica::generate::wan::generator::WanGenerator;
use framecast_replica::generate::wan::stream_state::WAN_STATE_KIND;
use framecast_replica::generate::{GenerateError, Generator, SegmentRequest, StreamFormat};
use framecast_replica::store::BlobStore;
use framecast_replica::store::memory::MemoryBlobStore;
use support::wan::{FORMAT, model_dir, request};
use tch::{Device, Tensor};

fn blobs() -> Arc<dyn BlobStore> {
    Arc::new(MemoryBlobStore::new(64 << 20, Duration::from_secs(600)))
}

fn generator(blobs: Arc<dyn BlobStore>) -> WanGenerator {
    WanGenerator::load(&model_dir(), FORMAT, Device::Cpu, blobs).unwrap()
}

#[test]
fn reproduces_diffusers_wan_pipeline_with_guidance() {
    let _no_grad = tch::no_grad_guard();
    let dir = model_dir();
    let r: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("reference/pipeline.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let prompts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference/prompts.json")).unwrap())
            .unwrap();
    let mut g = generator(blobs());
    let cond = g.embed(prompts["short"].as_str().unwrap()).unwrap();
    let uncond = g.embed("low quality, blurry").unwrap();
    let schedule = g.schedule(2);
    let latents = g
        .sample(
            &r["start"],
            &cond,
            Some(&uncond),
            2.0,
            &schedule,
            None,
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap();
    let diff = (&latents - &r["latents"]).abs().max().double_value(&[]);
    eprintln!("pipeline latents: max abs diff {diff:e}");
    assert!(
        diff <= 1e-4,
        "latents differ from WanPipeline's by {diff:e}"
    );

    // Decoded and post-processed as WanPipeline's output_type="pt": (B, F, C, H, W) in [0, 1].
    let video = ((g.decode(&latents) + 1.0) / 2.0)
        .clamp(0.0, 1.0)
        .permute([0, 2, 1, 3, 4]);
    let diff = (&video - &r["video"]).abs().max().double_value(&[]);
    eprintln!("pipeline video: max abs diff {diff:e}");
    assert!(diff <= 1e-4, "video differs from WanPipeline's by {diff:e}");
}

#[test]
fn segments_have_the_configured_format_and_report_every_step() {
    let mut g = generator(blobs());
    let mut steps = Vec::new();
    let segment = g
        .generate(&request(0), None, &mut |p| {
            steps.push((p.step, p.total_steps));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(steps, vec![(1, 2), (2, 2)]);
    assert_eq!(segment.frames.len(), 8);
    assert!(segment.frames.iter().all(|f| f.len() == 80 * 64 * 3));
    assert_eq!(segment.next_state.kind, WAN_STATE_KIND);
    g.validate_state(&segment.next_state).unwrap();
    // Real pixels, not a constant image.
    let first = &segment.frames[0];
    let (min, max) = first
        .iter()
        .fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert!(max - min > 10, "frame values span only {min}..{max}");

    let next = g
        .generate(&request(1), Some(&segment.next_state), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(next.frames.len(), 8);
    assert_ne!(next.frames, segment.frames);
}

#[test]
fn a_fresh_generator_continues_a_stored_stream_identically() {
    let store = blobs();
    let mut a = generator(store.clone());
    let first = a
        .generate(&request(0), None, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    // Nothing is serialized until a portable state is asked for; asking twice stores once.
    let portable = a.export_state(&first.next_state, "s1.export").unwrap();
    assert_eq!(
        a.export_state(&first.next_state, "s1.export").unwrap(),
        portable
    );
    assert!(portable.payload["blob"].is_string(), "{portable:?}");
    assert!(first.next_state.payload.get("blob").is_none());
    // `a` continues from memory; `b` has never seen the stream and reads the blob store.
    let from_a = a
        .generate(&request(1), Some(&first.next_state), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    let mut b = generator(store.clone());
    let from_b = b
        .generate(&request(1), Some(&portable), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(from_a.frames, from_b.frames, "identical next segment");

    // A live state means nothing to a generator that did not make it.
    let mut c = generator(store);
    let err = c
        .generate(&request(2), Some(&from_a.next_state), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(
        matches!(&err, GenerateError::InvalidState(m) if m.contains("snapshot_state")),
        "{err}"
    );
}

#[test]
fn exported_blobs_belong_to_the_given_owner_and_stream_tokens_are_random() {
    let store = blobs();
    let mut g = generator(store.clone());
    let first = g
        .generate(&request(0), None, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    let token = first.next_state.payload["stream"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 32, "128 random bits: {token}");
    assert!(!token.contains('-'), "not pid-n: {token}");
    let portable = g.export_state(&first.next_state, "s1.export").unwrap();
    let blob = portable.payload["blob"].as_str().unwrap().to_string();
    assert!(store.get(&blob).unwrap().is_some());
    // Another owner's end (the exporting session's own id, say) leaves it alone ...
    store.drop_owner("s1");
    store.drop_owner(WAN_STATE_KIND);
    assert!(store.get(&blob).unwrap().is_some());
    // ... its owner's end drops it.
    store.drop_owner("s1.export");
    assert_eq!(store.get(&blob).unwrap(), None);

    let second = g
        .generate(&request(1), Some(&first.next_state), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    let next = second.next_state.payload["stream"].as_str().unwrap();
    assert_ne!(next, token, "a fresh token per segment");
    assert_eq!(next.len(), 32);
}

#[test]
fn exporting_a_restored_state_never_hands_out_another_streams_tensors() {
    let store = blobs();
    let mut g = generator(store.clone());
    let mine = g
        .generate(&request(0), None, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    let portable = g.export_state(&mine.next_state, "a.export").unwrap();
    // The next session on this worker streams something else; the worker now holds that.
    let mut other = request(0);
    other.prompt = "someone else's stream".into();
    let theirs = g
        .generate(&other, None, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    // A later session restored from `portable` asks for a snapshot before generating: it
    // gets its own state back, not the other session's live stream.
    assert_eq!(g.export_state(&portable, "c.export").unwrap(), portable);
    let err = g.export_state(&mine.next_state, "c.export").unwrap_err();
    assert!(err.to_string().contains("no longer held"), "{err}");
    // The other session's own state still exports its stream.
    let exported = g.export_state(&theirs.next_state, "b.export").unwrap();
    assert_eq!(
        exported.payload["stream"], theirs.next_state.payload["stream"],
        "{exported:?}"
    );
}

/// A blob store in a directory: a test double for a store two processes share (Redis in a
/// multi-replica deployment).
#[derive(Debug)]
struct DirBlobs(PathBuf, std::sync::atomic::AtomicU64);

impl BlobStore for DirBlobs {
    fn put(
        &self,
        owner: &str,
        data: Vec<u8>,
    ) -> Result<String, framecast_replica::store::StoreError> {
        let n = self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("{owner}-{}-{n}", std::process::id());
        std::fs::write(self.0.join(&id), data).unwrap();
        Ok(id)
    }
    fn get(&self, id: &str) -> Result<Option<Arc<Vec<u8>>>, framecast_replica::store::StoreError> {
        Ok(std::fs::read(self.0.join(id)).ok().map(Arc::new))
    }
    fn drop_owner(&self, _owner: &str) {}
}

const CHILD_DIR: &str = "FRAMECAST_TEST_WAN_CHILD_DIR";

#[test]
fn a_stream_continues_identically_in_another_process() {
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        // Child: a fresh process continues the stream from the stored state alone.
        let dir = PathBuf::from(dir);
        let state = serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap())
            .unwrap();
        let mut g = generator(Arc::new(DirBlobs(dir.clone(), Default::default())));
        let next = g
            .generate(
                &request(1),
                Some(&state),
                &mut |_| ControlFlow::Continue(()),
            )
            .unwrap();
        std::fs::write(dir.join("child-frames.bin"), next.frames.concat()).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut g = generator(Arc::new(DirBlobs(
        dir.path().to_path_buf(),
        Default::default(),
    )));
    let first = g
        .generate(&request(0), None, &mut |_| ControlFlow::Continue(()))
        .unwrap();
    let portable = g.export_state(&first.next_state, "s1.export").unwrap();
    std::fs::write(
        dir.path().join("state.json"),
        serde_json::to_string(&portable).unwrap(),
    )
    .unwrap();
    let next = g
        .generate(&request(1), Some(&first.next_state), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_stream_continues_identically_in_another_process",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .status()
        .unwrap();
    assert!(status.success(), "child process failed");
    let child = std::fs::read(dir.path().join("child-frames.bin")).unwrap();
    assert_eq!(child.len(), next.frames.concat().len());
    let ours = next.frames.concat();
    let differing = child.iter().zip(&ours).filter(|(a, b)| a != b).count();
    let worst = child
        .iter()
        .zip(&ours)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    assert!(
        differing == 0,
        "the other process produced other frames: {differing} of {} bytes differ, by up to {worst}",
        ours.len()
    );
}

#[test]
fn cancellation_and_foreign_states_are_errors() {
    let mut g = generator(blobs());
    let err = g
        .generate(&request(0), None, &mut |_| ControlFlow::Break(()))
        .unwrap_err();
    assert_eq!(err, GenerateError::Cancelled);

    let foreign = framecast_common::protocol::ContinuationState::new(
        "framecast.mock.v1",
        serde_json::json!({}),
    );
    assert!(matches!(
        g.validate_state(&foreign),
        Err(GenerateError::InvalidState(_))
    ));
    let expired = framecast_common::protocol::ContinuationState::new(
        WAN_STATE_KIND,
        serde_json::json!({
            "stream": "gone", "blob": "nope", "cache_slots": [], "frames_decoded": 0, "latent_hw": [8, 10]
        }),
    );
    g.validate_state(&expired).unwrap();
    let err = g
        .generate(&request(1), Some(&expired), &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
    let other_size = framecast_common::protocol::ContinuationState::new(
        WAN_STATE_KIND,
        serde_json::json!({
            "stream": "x", "blob": "x", "cache_slots": [], "frames_decoded": 0, "latent_hw": [36, 64]
        }),
    );
    assert!(g.validate_state(&other_size).is_err());
}

#[test]
fn an_initial_image_conditions_the_first_segment() {
    // A 50x20 gradient: another size and aspect ratio than the stream's.
    let rgb: Vec<u8> = (0..20u32)
        .flat_map(|y| (0..50u32).flat_map(move |x| [(x * 5) as u8, (y * 12) as u8, 128]))
        .collect();
    let image = Arc::new(framecast_replica::generate::RgbImage {
        width: 50,
        height: 20,
        rgb,
    });
    let with_image = SegmentRequest {
        initial_image: Some(image.clone()),
        ..request(0)
    };
    let run = |req: &SegmentRequest| {
        generator(blobs())
            .generate(req, None, &mut |_| ControlFlow::Continue(()))
            .unwrap()
    };
    let a = run(&with_image);
    let b = run(&with_image);
    let plain = run(&request(0));
    assert_eq!(a.frames.len(), 8);
    assert_eq!(a.frames, b.frames, "deterministic");
    assert_ne!(a.frames, plain.frames, "the image changes the segment");

    let broken = SegmentRequest {
        fresh_stream: false,
        checkpoint_max_bytes: None,
        initial_image: Some(Arc::new(framecast_replica::generate::RgbImage {
            width: 4,
            height: 4,
            rgb: vec![0; 5],
        })),
        ..request(0)
    };
    let err = generator(blobs())
        .generate(&broken, None, &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(matches!(err, GenerateError::InvalidRequest(_)), "{err}");
}

#[test]
fn formats_the_model_cannot_produce_are_refused_at_load() {
    let odd_frames = StreamFormat {
        frames_per_segment: 10,
        ..FORMAT
    };
    let err = WanGenerator::load(&model_dir(), odd_frames, Device::Cpu, blobs()).unwrap_err();
    assert!(err.to_string().contains("frames_per_segment"), "{err}");
    let odd_size = StreamFormat {
        width: 72,
        ..FORMAT
    };
    let err = WanGenerator::load(&model_dir(), odd_size, Device::Cpu, blobs()).unwrap_err();
    assert!(err.to_string().contains("multiples of 16"), "{err}");
}
