//! Enhance, auto-extend and rewrite on top of a [`ProviderChain`], with system prompts that
//! can be replaced from a directory and are re-read when their file changes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use parking_lot::Mutex;

use super::chain::{Completion, ProviderChain};
use super::provider::{Message, ProviderError, truncate_chars};

/// Longest user text (a prompt, an instruction, each window entry) sent to a provider.
pub const MAX_INPUT_CHARS: usize = 4_000;
/// Most previous prompts or window entries sent to a provider.
pub const MAX_WINDOW_PROMPTS: usize = 16;
/// Most alternatives a rewrite returns.
pub const MAX_REWRITE_COUNT: usize = 16;
/// Largest override file read; a longer one is cut.
pub const MAX_SYSTEM_PROMPT_CHARS: usize = 16_000;

/// The three operations, each with its own system prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Enhance,
    AutoExtend,
    Rewrite,
}

impl Operation {
    /// The override file's name in the system-prompt directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Enhance => "enhance.txt",
            Self::AutoExtend => "auto_extend.txt",
            Self::Rewrite => "rewrite.txt",
        }
    }

    /// The operation's name in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Self::Enhance => "enhance",
            Self::AutoExtend => "auto_extend",
            Self::Rewrite => "rewrite",
        }
    }

    /// Framecast's built-in system prompt.
    pub fn default_system_prompt(self) -> &'static str {
        match self {
            Self::Enhance => {
                "You turn a viewer's short idea into one prompt for a video generator. Keep \
                 the idea and its subject; add concrete visual detail: setting, lighting, \
                 camera movement, motion and mood. Write one paragraph of plain prose under \
                 80 words, in the present tense. Answer with the prompt only: no title, no \
                 quotes, no commentary."
            }
            Self::AutoExtend => {
                "You continue a video that is generated segment by segment. The user message \
                 lists the prompts of the segments so far, oldest first, one per line. Write \
                 the prompt for the next segment: the same subjects and style, one small \
                 natural step forward in action or camera, no scene cut. One paragraph of \
                 plain prose under 80 words. Answer with the prompt only."
            }
            Self::Rewrite => {
                "You rewrite the prompts of a video that is generated segment by segment. The \
                 user message gives an instruction and the current prompts. Write the \
                 requested number of new prompts that follow the instruction while keeping \
                 the video continuous. One prompt per line, each plain prose under 80 words, \
                 with no numbering, titles or commentary."
            }
        }
    }
}

#[derive(Debug)]
struct Cached {
    modified: Option<SystemTime>,
    text: Option<String>,
}

/// System prompts: built-ins, or `enhance.txt` / `auto_extend.txt` / `rewrite.txt` from a
/// directory, re-read whenever the file's modification time changes (a removed or empty
/// file falls back to the built-in).
#[derive(Debug)]
pub struct SystemPrompts {
    dir: Option<PathBuf>,
    cache: Mutex<HashMap<Operation, Cached>>,
}

impl SystemPrompts {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The directory overrides are read from, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Where `op`'s override file lives, when a directory is configured.
    pub fn path(&self, op: Operation) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(op.file_name()))
    }

    /// Replaces `op`'s override file (written whole, then renamed into place, so a reader
    /// never sees half of it); an empty text removes it and the built-in applies again.
    pub fn write(&self, op: Operation, text: &str) -> Result<(), WriteError> {
        let Some(path) = self.path(op) else {
            return Err(WriteError::NoDirectory);
        };
        let text = text.trim();
        if text.chars().count() > MAX_SYSTEM_PROMPT_CHARS {
            return Err(WriteError::TooLong {
                max: MAX_SYSTEM_PROMPT_CHARS,
            });
        }
        let io = |e: std::io::Error| WriteError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if text.is_empty() {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            }
        } else {
            let tmp = path.with_extension("txt.tmp");
            std::fs::write(&tmp, text).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
        }
        self.cache.lock().remove(&op);
        Ok(())
    }

    /// Forgets every cached file so the next use reads them again.
    pub fn reload(&self) {
        self.cache.lock().clear();
    }

    /// The system prompt for `op` now.
    pub fn get(&self, op: Operation) -> String {
        let Some(dir) = &self.dir else {
            return op.default_system_prompt().to_string();
        };
        let path = dir.join(op.file_name());
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let mut cache = self.cache.lock();
        let fresh = cache
            .get(&op)
            .is_some_and(|c| c.modified == modified && modified.is_some());
        if !fresh {
            let text = modified.and_then(|_| match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let text = truncate_chars(text.trim(), MAX_SYSTEM_PROMPT_CHARS).to_string();
                    (!text.is_empty()).then_some(text)
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot read system prompt: {e}");
                    None
                }
            });
            cache.insert(op, Cached { modified, text });
        }
        cache
            .get(&op)
            .and_then(|c| c.text.clone())
            .unwrap_or_else(|| op.default_system_prompt().to_string())
    }
}

/// Why a system prompt could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("no system-prompt directory is configured (set prompt.system_prompt_dir)")]
    NoDirectory,
    #[error("a system prompt may have at most {max} characters")]
    TooLong { max: usize },
    #[error("cannot write {path}: {message}")]
    Io { path: String, message: String },
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    /// The prompt, instruction or prompt list was blank.
    #[error("nothing to send: {0} is blank")]
    Blank(&'static str),
    /// The answer had no usable line.
    #[error("the provider's answer had no usable prompt")]
    EmptyAnswer,
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// A rewrite's alternatives and who wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// At least one and at most the requested count (bounded by [`MAX_REWRITE_COUNT`]).
    pub alternatives: Vec<String>,
    pub provider: String,
    pub fallback_used: bool,
    /// The answer as the provider gave it (bounded).
    pub raw: String,
}

/// The prompt operations sessions use (through [`super::PromptService`]).
#[derive(Debug)]
pub struct PromptEnhancer {
    chain: ProviderChain,
    prompts: SystemPrompts,
}

fn bounded(text: &str) -> &str {
    truncate_chars(text.trim(), MAX_INPUT_CHARS)
}

fn recent(prompts: &[String]) -> Vec<&str> {
    let kept: Vec<&str> = prompts
        .iter()
        .map(|p| bounded(p))
        .filter(|p| !p.is_empty())
        .collect();
    let skip = kept.len().saturating_sub(MAX_WINDOW_PROMPTS);
    kept[skip..].to_vec()
}

impl PromptEnhancer {
    pub fn new(chain: ProviderChain, prompts: SystemPrompts) -> Self {
        Self { chain, prompts }
    }

    pub fn chain(&self) -> &ProviderChain {
        &self.chain
    }

    pub fn chain_mut(&mut self) -> &mut ProviderChain {
        &mut self.chain
    }

    pub fn system_prompts(&self) -> &SystemPrompts {
        &self.prompts
    }

    async fn ask(&self, op: Operation, user: String) -> Result<Completion, PromptError> {
        let messages = [Message::system(self.prompts.get(op)), Message::user(user)];
        Ok(self.chain.complete(op, &messages).await?)
    }

    /// A richer video prompt from a user's prompt.
    pub async fn enhance(&self, prompt: &str) -> Result<Completion, PromptError> {
        let prompt = bounded(prompt);
        if prompt.is_empty() {
            return Err(PromptError::Blank("prompt"));
        }
        self.ask(Operation::Enhance, prompt.to_string()).await
    }

    /// The next segment's prompt from the previous ones (oldest first; the last
    /// [`MAX_WINDOW_PROMPTS`] are sent, one per line).
    pub async fn auto_extend(&self, previous: &[String]) -> Result<Completion, PromptError> {
        let previous = recent(previous);
        if previous.is_empty() {
            return Err(PromptError::Blank("previous prompts"));
        }
        self.ask(Operation::AutoExtend, previous.join("\n")).await
    }

    /// Up to `count` new prompts (at least one) following `instruction`, given the current
    /// `window` of prompts.
    pub async fn rewrite(
        &self,
        instruction: &str,
        window: &[String],
        count: usize,
    ) -> Result<Rewrite, PromptError> {
        let instruction = bounded(instruction);
        if instruction.is_empty() {
            return Err(PromptError::Blank("instruction"));
        }
        let count = count.clamp(1, MAX_REWRITE_COUNT);
        let mut user = format!("Instruction: {instruction}\nWrite {count} prompts.");
        let window = recent(window);
        if !window.is_empty() {
            user.push_str("\nCurrent prompts:\n");
            user.push_str(&window.join("\n"));
        }
        let completion = self.ask(Operation::Rewrite, user).await?;
        let alternatives = split_alternatives(&completion.text, count);
        if alternatives.is_empty() {
            return Err(PromptError::EmptyAnswer);
        }
        Ok(Rewrite {
            alternatives,
            provider: completion.provider,
            fallback_used: completion.fallback_used,
            raw: completion.text,
        })
    }
}

/// Splits an answer into alternatives: one per non-blank line, with numbering (`1.`, `2)`)
/// and bullets (`-`, `*`, `•`) stripped. At most `limit` (0 counts as 1, and
/// [`MAX_REWRITE_COUNT`] is the most) are returned.
pub fn split_alternatives(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.clamp(1, MAX_REWRITE_COUNT);
    text.lines()
        .map(strip_marker)
        .filter(|line| !line.is_empty())
        .take(limit)
        .map(str::to_string)
        .collect()
}

fn strip_marker(line: &str) -> &str {
    let line = line.trim();
    for bullet in ['-', '*', '•'] {
        if let Some(rest) = line.strip_prefix(bullet) {
            return rest.trim();
        }
    }
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits > 0 {
        let rest = &line[digits..];
        if let Some(rest) = rest.strip_prefix('.').or_else(|| rest.strip_prefix(')')) {
            return rest.trim();
        }
    }
    line
}
