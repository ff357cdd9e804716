//! One JSONL file per session (`<dir>/<session id>.jsonl`): a line per event with a
//! timestamp, so an operator can replay what a user saw without trawling the server log.
//!
//! Logging must never break a session: if the file cannot be written the session goes on
//! and a warning is logged once.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// An open session log (or a disabled one).
#[derive(Debug)]
pub struct SessionLog {
    file: Option<BufWriter<File>>,
    path: Option<PathBuf>,
}

impl SessionLog {
    /// Opens `<dir>/<session_id>.jsonl`; `None` disables logging.
    pub fn open(dir: Option<&Path>, session_id: &str) -> Self {
        let Some(dir) = dir else {
            return Self {
                file: None,
                path: None,
            };
        };
        let path = dir.join(format!("{session_id}.jsonl"));
        let file = std::fs::create_dir_all(dir)
            .and_then(|()| OpenOptions::new().create(true).append(true).open(&path));
        match file {
            Ok(f) => Self {
                file: Some(BufWriter::new(f)),
                path: Some(path),
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "session log disabled");
                Self {
                    file: None,
                    path: None,
                }
            }
        }
    }

    /// Where the log is written, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends `{"ts_ms": …, "event": event, …fields}` and flushes.
    pub fn event(&mut self, event: &str, fields: Value) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut line = json!({"ts_ms": ts_ms, "event": event});
        if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), fields) {
            line.extend(extra);
        }
        let written = serde_json::to_writer(&mut *file, &line)
            .map_err(std::io::Error::other)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.flush());
        if let Err(e) = written {
            tracing::warn!(error = %e, "session log write failed; disabling it");
            self.file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SessionLog::open(Some(dir.path()), "abc");
        log.event("state", json!({"state": "queued"}));
        log.event("client_message", json!({"type": "ping"}));
        let text = std::fs::read_to_string(dir.path().join("abc.jsonl")).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "state");
        assert_eq!(lines[0]["state"], "queued");
        assert!(lines[1]["ts_ms"].as_u64().unwrap() >= lines[0]["ts_ms"].as_u64().unwrap());
    }

    #[test]
    fn an_unwritable_directory_disables_logging_quietly() {
        let mut log = SessionLog::open(Some(Path::new("/proc/framecast-no")), "x");
        assert!(log.path().is_none());
        log.event("state", json!({}));
    }
}
