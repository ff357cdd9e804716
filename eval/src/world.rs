//! The shapes world's ground truth, as the trainer wrote it (`training/world.py`): the named
//! colours (`world.json`) and the held-out prompt set (`eval-prompts.json`), both beside the
//! model. Reading them instead of restating them keeps the eval and the training data from
//! drifting apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::analyze::{Motion, Palette};

/// Why the world or prompt files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not what the trainer writes.
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
}

#[derive(Debug, Deserialize)]
struct WorldFile {
    format: String,
    object_colours: BTreeMap<String, [u8; 3]>,
    background_colours: BTreeMap<String, [u8; 3]>,
}

/// Reads `world.json`'s named colours.
pub fn load_palette(path: &Path) -> Result<Palette, WorldError> {
    let file: WorldFile = read_json(path)?;
    if file.format != "framecast.world.v1" {
        return Err(WorldError::Invalid {
            path: path.to_owned(),
            problem: format!("format `{}`, expected framecast.world.v1", file.format),
        });
    }
    Ok(Palette {
        objects: file.object_colours.into_iter().collect(),
        backgrounds: file.background_colours.into_iter().collect(),
    })
}

/// What a caption asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scene {
    /// The prompt sent to the server.
    pub caption: String,
    /// Named object colour.
    pub colour: String,
    /// circle, square or triangle (not measured; shown in the report).
    pub shape: String,
    /// left, right, up, down or still.
    pub motion: String,
    /// Named background colour.
    pub background: String,
}

impl Scene {
    /// The caption's motion.
    pub fn motion(&self) -> Option<Motion> {
        self.motion.parse().ok()
    }
}

/// One stream of the eval: a prompt, then a switch to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalPrompt {
    /// Position in the prompt set.
    pub id: u32,
    /// The stream's noise seed.
    pub seed: u64,
    /// The first prompt.
    pub prompt: Scene,
    /// The prompt the stream switches to.
    pub switch_to: Scene,
}

/// Reads `eval-prompts.json`: a non-empty list of [`EvalPrompt`]s whose colours and motions
/// the palette knows.
pub fn load_prompts(path: &Path, palette: &Palette) -> Result<Vec<EvalPrompt>, WorldError> {
    let prompts: Vec<EvalPrompt> = read_json(path)?;
    let invalid = |problem: String| WorldError::Invalid {
        path: path.to_owned(),
        problem,
    };
    if prompts.is_empty() {
        return Err(invalid("no prompts".into()));
    }
    for p in &prompts {
        for s in [&p.prompt, &p.switch_to] {
            if s.motion().is_none() {
                return Err(invalid(format!(
                    "prompt {}: unknown motion `{}`",
                    p.id, s.motion
                )));
            }
            if !palette.objects.iter().any(|(n, _)| *n == s.colour) {
                return Err(invalid(format!(
                    "prompt {}: unknown colour `{}`",
                    p.id, s.colour
                )));
            }
            if !palette.backgrounds.iter().any(|(n, _)| *n == s.background) {
                return Err(invalid(format!(
                    "prompt {}: unknown background `{}`",
                    p.id, s.background
                )));
            }
        }
    }
    Ok(prompts)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, WorldError> {
    let text = std::fs::read_to_string(path).map_err(|source| WorldError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| WorldError::Invalid {
        path: path.to_owned(),
        problem: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const WORLD: &str = r#"{"format":"framecast.world.v1",
        "object_colours":{"red":[220,30,30],"blue":[40,70,230]},
        "background_colours":{"black":[15,15,15]}}"#;

    #[test]
    fn palette_and_prompts_load_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let palette = load_palette(&write(dir.path(), "w.json", WORLD)).unwrap();
        assert_eq!(palette.objects.len(), 2);
        let scene = |c: &str, m: &str| {
            format!(
                r#"{{"caption":"a {c} circle","colour":"{c}","shape":"circle","motion":"{m}","background":"black"}}"#
            )
        };
        let good = format!(
            r#"[{{"id":0,"seed":1,"prompt":{},"switch_to":{}}}]"#,
            scene("red", "left"),
            scene("blue", "up")
        );
        let prompts = load_prompts(&write(dir.path(), "p.json", &good), &palette).unwrap();
        assert_eq!(prompts[0].switch_to.motion(), Some(Motion::Up));
        let bad = good.replace("\"up\"", "\"sideways\"");
        let err = load_prompts(&write(dir.path(), "b.json", &bad), &palette).unwrap_err();
        assert!(err.to_string().contains("sideways"), "{err}");
        let err = load_prompts(&write(dir.path(), "e.json", "[]"), &palette).unwrap_err();
        assert!(err.to_string().contains("no prompts"), "{err}");
        let err = load_palette(&write(dir.path(), "x.json", "{}")).unwrap_err();
        assert!(err.to_string().contains("x.json"), "{err}");
    }
}
