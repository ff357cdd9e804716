//! A real fastText safety classifier for session tests, trained by
//! `fixtures/train_safety_classifier.py` with the fastText wheel in the repository's `.venv`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use framecast_replica::config::SafetySettings;
use framecast_replica::prompt::SafetyFilter;

/// A prompt the trained classifier blocks.
pub const UNSAFE: &str = "a brutal murder with blood everywhere, cinematic";
/// A prompt it allows.
pub const BENIGN: &str = "a sailboat drifting slowly at golden hour";

/// The trained softmax model; its directory goes with it.
pub struct Classifier {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// Trains the classifiers into `dir` and returns the script's report: the model paths and
/// fastText's own top-1 prediction of each model for each of `probes`.
pub fn train_into(dir: &Path, probes: &[&str]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup (it installs fasttext-wheel into .venv)",
        python.display()
    );
    let mut child = Command::new(&python)
        .arg(root.join("tests/fixtures/train_safety_classifier.py"))
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    serde_json::to_writer(child.stdin.take().unwrap(), probes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "training the classifiers failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

impl Classifier {
    pub fn train() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let report = train_into(dir.path(), &[]);
        let path = report["models"]["softmax"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.path().join("safety.bin"));
        Self { _dir: dir, path }
    }

    /// A filter blocking `__label__unsafe` at 0.5 or more.
    pub fn filter(&self) -> SafetyFilter {
        let filter = SafetyFilter::from_settings(&SafetySettings {
            enabled: true,
            model_path: Some(self.path.clone()),
            block_threshold: 0.5,
            unsafe_label: "__label__unsafe".into(),
        });
        assert_eq!(filter.unavailable_cause(), None, "the classifier loads");
        filter
    }
}
