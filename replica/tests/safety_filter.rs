//! The safety filter on real fastText models: `fixtures/train_safety_classifier.py` trains
//! small classifiers with the fastText wheel in the repository's `.venv` on data it makes up,
//! and prints fastText's own predictions, which the Rust reader must reproduce.

mod support;

use std::path::PathBuf;

use framecast_replica::config::SafetySettings;
use framecast_replica::prompt::safety::{MAX_SCORED_CHARS, SAFETY_CHECKS_TOTAL, describe_metrics};
use framecast_replica::prompt::{SafetyDecision, SafetyFilter, Verdict};
use serde_json::Value;

const UNSAFE: &str = "a brutal murder with blood everywhere, cinematic";
const BENIGN: &str = "a sailboat drifting slowly at golden hour";

/// Texts whose scores are compared with fastText's: in- and out-of-vocabulary words,
/// punctuation, non-ASCII, tabs and newlines, a label token, nothing at all.
const PROBES: &[&str] = &[
    UNSAFE,
    BENIGN,
    "a gunman executing hostages\twith severed limbs",
    "café à l’aube, soft rain 🌧 over the Seine",
    "a quiet library\nunder a starry sky",
    "__label__unsafe a field of sunflowers",
    "zzz qqq xyzzy",
    "",
];

/// The trained models, removed with the test.
struct Classifiers {
    _dir: tempfile::TempDir,
    report: Value,
}

impl Classifiers {
    fn train() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let report = support::classifier::train_into(dir.path(), PROBES);
        Self { _dir: dir, report }
    }

    fn path(&self, model: &str) -> PathBuf {
        self.report["models"][model].as_str().unwrap().into()
    }

    fn filter(&self, model: &str, block_threshold: f32) -> SafetyFilter {
        let filter =
            SafetyFilter::from_settings(&settings(Some(self.path(model)), block_threshold));
        assert_eq!(filter.unavailable_cause(), None, "{model} loads");
        filter
    }
}

fn settings(model_path: Option<PathBuf>, block_threshold: f32) -> SafetySettings {
    SafetySettings {
        enabled: true,
        model_path,
        block_threshold,
        ..SafetySettings::default()
    }
}

fn assert_unavailable(decision: SafetyDecision) {
    assert_eq!(
        decision,
        SafetyDecision {
            verdict: Verdict::Unavailable,
            label: None,
            score: None
        }
    );
    assert!(!decision.is_blocked(), "unavailable is treated as allow");
}

#[test]
fn unsafe_prompts_are_blocked_with_the_unsafe_label_and_its_score() {
    let models = Classifiers::train();
    for model in ["softmax", "ova"] {
        let d = models.filter(model, 0.5).check(UNSAFE);
        assert_eq!(d.verdict, Verdict::Block, "{model}: {d:?}");
        assert!(d.is_blocked());
        assert_eq!(d.label.as_deref(), Some("__label__unsafe"));
        assert!(d.score.unwrap() >= 0.5, "{model}: {d:?}");
    }
}

#[test]
fn benign_prompts_are_allowed_with_the_safe_label() {
    let models = Classifiers::train();
    let d = models.filter("softmax", 0.5).check(BENIGN);
    assert_eq!(d.verdict, Verdict::Allow, "{d:?}");
    assert!(!d.is_blocked());
    assert_eq!(d.label.as_deref(), Some("__label__safe"));
    assert!(d.score.unwrap() > 0.5, "{d:?}");
}

#[test]
fn an_unsafe_score_below_the_threshold_is_allowed() {
    let models = Classifiers::train();
    let score = models.filter("softmax", 0.5).check(UNSAFE).score.unwrap();
    assert!(score < 1.0, "the tiny model is not certain: {score}");
    for threshold in [1.0, (score + 1e-3).min(1.0)] {
        let d = models.filter("softmax", threshold).check(UNSAFE);
        assert_eq!(d.verdict, Verdict::Allow, "threshold {threshold}: {d:?}");
        assert_eq!(
            d.label.as_deref(),
            Some("__label__unsafe"),
            "still reported"
        );
        assert_eq!(d.score, Some(score));
    }
    // At exactly the score it blocks (the reference's `score >= threshold`).
    assert!(models.filter("softmax", score).check(UNSAFE).is_blocked());
}

#[test]
fn a_missing_model_file_is_unavailable_and_not_a_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere.bin");
    let filter = SafetyFilter::from_settings(&settings(Some(path.clone()), 0.5));
    let cause = filter.unavailable_cause().unwrap();
    assert!(cause.contains(path.to_str().unwrap()), "{cause}");
    assert_unavailable(filter.check(UNSAFE));
    assert_unavailable(SafetyFilter::from_settings(&settings(None, 0.5)).check(UNSAFE));
    assert_unavailable(SafetyFilter::disabled().check(UNSAFE));
}

#[test]
fn unusable_model_files_are_unavailable_with_their_cause() {
    let models = Classifiers::train();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(
        &garbage,
        b"this is not a fastText model, just text\n".repeat(50),
    )
    .unwrap();
    let real = std::fs::read(models.path("softmax")).unwrap();
    let truncated = dir.path().join("truncated.bin");
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    let other_labels = dir.path().join("other_labels.bin");
    std::fs::copy(models.path("softmax"), &other_labels).unwrap();
    for (path, cause) in [
        (garbage, "not a fastText model"),
        (truncated, "truncated"),
        (models.path("quantized"), "quantized"),
        (models.path("hs"), "hierarchical softmax"),
    ] {
        let filter = SafetyFilter::from_settings(&settings(Some(path.clone()), 0.5));
        let why = filter.unavailable_cause().unwrap_or_default();
        assert!(
            why.contains(cause) && why.contains(path.to_str().unwrap()),
            "{}: {why}",
            path.display()
        );
        assert_unavailable(filter.check(UNSAFE));
    }
    let filter = SafetyFilter::from_settings(&SafetySettings {
        unsafe_label: "__label__nsfw".to_string(),
        ..settings(Some(other_labels), 0.5)
    });
    let why = filter.unavailable_cause().unwrap();
    assert!(
        why.contains("__label__nsfw") && why.contains("__label__unsafe"),
        "{why}"
    );
    assert_unavailable(filter.check(UNSAFE));
}

#[test]
fn scores_match_fasttext_predict() {
    let models = Classifiers::train();
    for model in ["softmax", "ova"] {
        let filter = models.filter(model, 0.5);
        let expected = models.report["predictions"][model].as_array().unwrap();
        assert_eq!(expected.len(), PROBES.len());
        for (text, want) in PROBES.iter().zip(expected) {
            let d = filter.check(text);
            let (label, score) = (want[0].as_str().unwrap(), want[1].as_f64().unwrap());
            println!("{model} {text:?}: fastText {label} {score:.6}, ours {d:?}");
            assert_eq!(d.label.as_deref(), Some(label), "{model} {text:?}");
            let ours = f64::from(d.score.unwrap());
            assert!(
                (ours - score).abs() < 1e-4,
                "{model} {text:?}: {ours} vs {score}"
            );
            // All of the difference is fastText's smoothing: it reports p + 1e-5.
            assert!(
                (ours + 1e-5 - score).abs() < 2e-6,
                "{model} {text:?}: {ours} vs {score}"
            );
        }
    }
    assert_eq!(
        models.report["labels"]["softmax"],
        serde_json::json!(["__label__safe", "__label__unsafe"])
    );
}

#[test]
fn only_the_first_characters_are_scored() {
    let models = Classifiers::train();
    let filter = models.filter("softmax", 0.5);
    let padding = format!("{BENIGN} ").repeat(MAX_SCORED_CHARS / BENIGN.len() + 1);
    let prefix: String = padding.chars().take(MAX_SCORED_CHARS).collect();
    let long = format!("{padding}{}", format!("{UNSAFE} ").repeat(1000));
    assert_eq!(filter.check(&long), filter.check(&prefix));
    assert_eq!(filter.check(&long).verdict, Verdict::Allow);
}

#[test]
fn checks_are_counted_by_verdict() {
    let models = Classifiers::train();
    let filter = models.filter("softmax", 0.5);
    let recorder = framecast_common::metrics::standalone_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe_metrics();
        filter.check(UNSAFE);
        filter.check(UNSAFE);
        filter.check(BENIGN);
        SafetyFilter::disabled().check(BENIGN);
    });
    let text = handle.render();
    for (verdict, n) in [("block", 2), ("allow", 1), ("unavailable", 1)] {
        let series = format!("{SAFETY_CHECKS_TOTAL}{{verdict=\"{verdict}\"}} {n}");
        assert!(text.lines().any(|l| l == series), "{series} in\n{text}");
    }
    assert!(
        text.contains(&format!("# HELP {SAFETY_CHECKS_TOTAL} ")),
        "{text}"
    );
}
