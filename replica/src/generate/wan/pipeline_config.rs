//! The pipeline settings a diffusers directory cannot carry: `WanPipeline` takes its text length
//! as a call argument (`max_sequence_length`, 512 by default), so a model trained with another
//! length says so in an optional `framecast.json` beside `model_index.json`.

use std::path::Path;

use super::WanError;

/// `WanPipeline`'s default `max_sequence_length`, which Wan2.1 was trained with.
pub const DEFAULT_TEXT_TOKENS: usize = 512;
/// The longest text a model directory may ask for: UMT5's attention is quadratic in it, and
/// no Wan model uses more than 512.
pub const MAX_TEXT_TOKENS: usize = 4096;

/// `framecast.json`: what a model's own pipeline passes to `WanPipeline.__call__`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Text tokens the transformer attends to: the prompt's, then zero embeddings up to this.
    /// Training pads to it, so serving must too.
    pub max_sequence_length: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            max_sequence_length: DEFAULT_TEXT_TOKENS,
        }
    }
}

impl PipelineConfig {
    /// Reads `dir/framecast.json`; a directory without one (any diffusers Wan2.1 model) gets
    /// `WanPipeline`'s defaults.
    pub fn load(dir: &Path) -> Result<Self, WanError> {
        let path = dir.join("framecast.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(WanError::Unreadable {
                    path,
                    message: e.to_string(),
                });
            }
        };
        let invalid = |message: String| WanError::Unreadable {
            path: path.clone(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let fields = value
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object".into()))?;
        if let Some(unknown) = fields.keys().find(|k| *k != "max_sequence_length") {
            return Err(invalid(format!(
                "unknown field `{unknown}`, expected `max_sequence_length`"
            )));
        }
        let config = match fields.get("max_sequence_length") {
            None => Self::default(),
            Some(v) => Self {
                max_sequence_length: v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|n| (1..=MAX_TEXT_TOKENS).contains(n))
                    .ok_or_else(|| {
                        invalid(format!(
                            "max_sequence_length must be a whole number from 1 to {MAX_TEXT_TOKENS}, not {v}"
                        ))
                    })?,
            },
        };
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: Option<&str>) -> Result<PipelineConfig, WanError> {
        let dir = tempfile::tempdir().unwrap();
        if let Some(json) = json {
            std::fs::write(dir.path().join("framecast.json"), json).unwrap();
        }
        PipelineConfig::load(dir.path())
    }

    #[test]
    fn a_plain_diffusers_directory_gets_wan_pipelines_512_tokens() {
        assert_eq!(load(None).unwrap().max_sequence_length, 512);
        assert_eq!(load(Some("{}")).unwrap().max_sequence_length, 512);
    }

    #[test]
    fn the_model_sets_its_text_length() {
        let config = load(Some(r#"{"max_sequence_length": 32}"#)).unwrap();
        assert_eq!(config.max_sequence_length, 32);
    }

    #[test]
    fn bad_files_name_the_file_and_the_field() {
        for bad in [
            r#"{"max_sequence_length": 0}"#,
            r#"{"max_sequence_length": 100000}"#,
            r#"{"max_sequence_length": "32"}"#,
            r#"{"max_sequence_lenght": 32}"#,
        ] {
            let err = load(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("framecast.json"), "{bad}: {err}");
            assert!(err.contains("max_sequence_len"), "{bad}: {err}");
        }
        let err = load(Some("not json")).unwrap_err().to_string();
        assert!(
            err.contains("framecast.json") && err.contains("expected"),
            "{err}"
        );
    }
}
