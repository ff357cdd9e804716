//! One JSONL file per session (`<dir>/<session id>.jsonl`): a line per event with a
//! timestamp, so an operator can replay what a user saw without trawling the server log.
//!
//! Logging must never break a session: if the file cannot be written the session goes on
//! and a warning is logged once. Nor may it fill the disk: one file stops at
//! [`LogLimits::max_file_bytes`] (its last line says so), and opening a log deletes the
//! oldest logs of the directory until all of them fit in [`LogLimits::max_total_bytes`].
//! Lines are buffered (written to the file in 8 KiB blocks, at each state change and when
//! the session ends), so a client message costs the session's task a memory copy, not a
//! system call.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Size bounds of the session logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// One session's file stops growing here.
    pub max_file_bytes: u64,
    /// All `*.jsonl` files of the directory together; the oldest go first.
    pub max_total_bytes: u64,
}

/// An open session log (or a disabled one).
#[derive(Debug)]
pub struct SessionLog {
    file: Option<BufWriter<File>>,
    path: Option<PathBuf>,
    written: u64,
    max_file_bytes: u64,
}

impl SessionLog {
    /// Opens `<dir>/<session_id>.jsonl` within `limits`; `None` disables logging.
    pub fn open(dir: Option<&Path>, session_id: &str, limits: LogLimits) -> Self {
        let disabled = Self {
            file: None,
            path: None,
            written: 0,
            max_file_bytes: limits.max_file_bytes,
        };
        let Some(dir) = dir else {
            return disabled;
        };
        let path = dir.join(format!("{session_id}.jsonl"));
        let file = std::fs::create_dir_all(dir).and_then(|()| {
            // Room for this log's whole allowance among the others.
            let keep = limits.max_total_bytes.saturating_sub(limits.max_file_bytes);
            prune_oldest(dir, keep)?;
            OpenOptions::new().create(true).append(true).open(&path)
        });
        match file {
            Ok(f) => Self {
                file: Some(BufWriter::new(f)),
                path: Some(path),
                ..disabled
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "session log disabled");
                disabled
            }
        }
    }

    /// Where the log is written, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends `{"ts_ms": …, "event": event, …fields}`; once the file is full, one
    /// `log_truncated` line instead and nothing more.
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
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        let mut last = false;
        if self.written + bytes.len() as u64 > self.max_file_bytes {
            bytes = json!({"ts_ms": ts_ms, "event": "log_truncated", "limit_bytes": self.max_file_bytes})
                .to_string()
                .into_bytes();
            bytes.push(b'\n');
            last = true;
        }
        // Lifecycle changes reach the file at once, so an operator tailing it sees them.
        let flush = last || event == "state";
        let written = file
            .write_all(&bytes)
            .and_then(|()| if flush { file.flush() } else { Ok(()) });
        self.written += bytes.len() as u64;
        if last {
            self.file = None;
        }
        if let Err(e) = written {
            tracing::warn!(error = %e, "session log write failed; disabling it");
            self.file = None;
        }
    }
}

/// Deletes the oldest `*.jsonl` files of `dir` until the rest take at most `keep` bytes.
fn prune_oldest(dir: &Path, keep: u64) -> std::io::Result<()> {
    let mut logs: Vec<(SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = logs.iter().map(|(_, len, _)| len).sum();
    logs.sort();
    for (_, len, path) in logs {
        if total <= keep {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: LogLimits = LogLimits {
        max_file_bytes: 1 << 20,
        max_total_bytes: 1 << 30,
    };

    #[test]
    fn a_file_stops_at_its_cap_with_a_last_line_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            max_file_bytes: 400,
            max_total_bytes: 1 << 20,
        };
        let mut log = SessionLog::open(Some(dir.path()), "big", limits);
        for i in 0..100 {
            log.event("client_message", json!({"i": i, "text": "x".repeat(40)}));
        }
        drop(log);
        let text = std::fs::read_to_string(dir.path().join("big.jsonl")).unwrap();
        assert!(text.len() < 500, "{} bytes", text.len());
        let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "log_truncated");
        assert_eq!(last["limit_bytes"], 400);
    }

    #[test]
    fn opening_a_log_deletes_the_oldest_until_all_fit() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        for (i, name) in ["old", "middle", "new"].iter().enumerate() {
            let path = dir.path().join(format!("{name}.jsonl"));
            std::fs::write(&path, vec![b'x'; 1000]).unwrap();
            let age = std::time::Duration::from_secs(300 - 100 * i as u64);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(now - age)
                .unwrap();
        }
        std::fs::write(dir.path().join("keep.txt"), vec![b'y'; 5000]).unwrap();
        let limits = LogLimits {
            max_file_bytes: 500,
            max_total_bytes: 2600,
        };
        let _log = SessionLog::open(Some(dir.path()), "fresh", limits);
        let exists = |n: &str| dir.path().join(n).exists();
        assert!(!exists("old.jsonl"), "the oldest log goes first");
        assert!(exists("middle.jsonl") && exists("new.jsonl"));
        assert!(exists("keep.txt"), "only session logs are touched");
        assert!(exists("fresh.jsonl"));
    }

    #[test]
    fn writes_one_json_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = SessionLog::open(Some(dir.path()), "abc", ROOMY);
        log.event("state", json!({"state": "queued"}));
        log.event("client_message", json!({"type": "ping"}));
        drop(log);
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
        let mut log = SessionLog::open(Some(Path::new("/proc/framecast-no")), "x", ROOMY);
        assert!(log.path().is_none());
        log.event("state", json!({}));
    }
}
