//! One JSONL file per session (`<dir>/<session id>.jsonl`): a line per event with a
//! timestamp, so an operator can replay what a user saw without trawling the server log.
//!
//! Logging must never break or slow a session: every file operation (opening, pruning,
//! writing, flushing) happens on one writer thread, off the async runtime; a session only
//! serializes its line and hands it over a bounded channel. If the writer falls behind, lines
//! are dropped (the next line that gets through is preceded by a `log_lines_dropped` line);
//! if the file cannot be written, logging for that session stops with one warning. Nor may it
//! fill the disk: one file stops at [`LogLimits::max_file_bytes`] (its last line says so),
//! and opening a log deletes the oldest logs of the directory until all of them fit in
//! [`LogLimits::max_total_bytes`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Lines waiting for the writer thread, across all sessions; beyond this they are dropped.
const QUEUE_LINES: usize = 8192;

/// Size bounds of the session logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// One session's file stops growing here.
    pub max_file_bytes: u64,
    /// All `*.jsonl` files of the directory together; the oldest go first.
    pub max_total_bytes: u64,
}

/// What the writer thread is asked to do.
enum Command {
    Open {
        id: u64,
        dir: PathBuf,
        path: PathBuf,
        limits: LogLimits,
    },
    Line {
        id: u64,
        bytes: Vec<u8>,
        flush: bool,
    },
    Close {
        id: u64,
        done: Option<std::sync::mpsc::Sender<()>>,
    },
}

fn writer() -> &'static SyncSender<Command> {
    static WRITER: OnceLock<SyncSender<Command>> = OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("session-logs".into())
            .spawn(move || write_logs(rx))
            .expect("spawning the session log writer");
        tx
    })
}

/// The writer thread: owns every open log file.
fn write_logs(commands: Receiver<Command>) {
    let mut files: HashMap<u64, BufWriter<File>> = HashMap::new();
    for command in commands {
        match command {
            Command::Open {
                id,
                dir,
                path,
                limits,
            } => {
                let file = std::fs::create_dir_all(&dir).and_then(|()| {
                    // Room for this log's whole allowance among the others.
                    let keep = limits.max_total_bytes.saturating_sub(limits.max_file_bytes);
                    prune_oldest(&dir, keep)?;
                    OpenOptions::new().create(true).append(true).open(&path)
                });
                match file {
                    Ok(f) => {
                        files.insert(id, BufWriter::new(f));
                    }
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "session log disabled");
                    }
                }
            }
            Command::Line { id, bytes, flush } => {
                let Some(file) = files.get_mut(&id) else {
                    continue;
                };
                let written = file
                    .write_all(&bytes)
                    .and_then(|()| if flush { file.flush() } else { Ok(()) });
                if let Err(e) = written {
                    tracing::warn!(error = %e, "session log write failed; disabling it");
                    files.remove(&id);
                }
            }
            Command::Close { id, done } => {
                if let Some(mut file) = files.remove(&id) {
                    let _ = file.flush();
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }
}

/// An open session log (or a disabled one).
#[derive(Debug)]
pub struct SessionLog {
    id: u64,
    path: Option<PathBuf>,
    written: u64,
    max_file_bytes: u64,
    /// Lines dropped because the writer was behind, not yet reported in the file.
    dropped: u64,
    open: bool,
}

impl SessionLog {
    /// Opens `<dir>/<session_id>.jsonl` within `limits`; `None` disables logging. The file is
    /// created by the writer thread; if that fails, later lines are discarded there.
    pub fn open(dir: Option<&Path>, session_id: &str, limits: LogLimits) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut log = Self {
            id,
            path: None,
            written: 0,
            max_file_bytes: limits.max_file_bytes,
            dropped: 0,
            open: false,
        };
        let Some(dir) = dir else {
            return log;
        };
        let path = dir.join(format!("{session_id}.jsonl"));
        let open = Command::Open {
            id,
            dir: dir.to_path_buf(),
            path: path.clone(),
            limits,
        };
        // Opening waits for room: without it every later line would be discarded.
        if writer().send(open).is_ok() {
            log.path = Some(path);
            log.open = true;
        }
        log
    }

    /// Where the log is written, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends `{"ts_ms": …, "event": event, …fields}`; once the file is full, one
    /// `log_truncated` line instead and nothing more.
    pub fn event(&mut self, event: &str, fields: Value) {
        if !self.open {
            return;
        }
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut line = json!({"ts_ms": ts_ms, "event": event});
        if let (Some(line), Value::Object(extra)) = (line.as_object_mut(), fields) {
            line.extend(extra);
        }
        let mut bytes = Vec::new();
        if self.dropped > 0 {
            bytes = json!({"ts_ms": ts_ms, "event": "log_lines_dropped", "count": self.dropped})
                .to_string()
                .into_bytes();
            bytes.push(b'\n');
        }
        bytes.extend(serde_json::to_vec(&line).unwrap_or_default());
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
        let len = bytes.len() as u64;
        match writer().try_send(Command::Line {
            id: self.id,
            bytes,
            flush,
        }) {
            Ok(()) => {
                self.written += len;
                self.dropped = 0;
                if last {
                    self.close(None);
                }
            }
            Err(TrySendError::Full(_)) => self.dropped += 1,
            Err(TrySendError::Disconnected(_)) => self.open = false,
        }
    }

    /// Closes the file and waits until the writer has flushed it (tests read it right after).
    pub fn close_and_wait(mut self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.close(Some(tx));
        let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
    }

    fn close(&mut self, done: Option<std::sync::mpsc::Sender<()>>) {
        let was_open = std::mem::replace(&mut self.open, false);
        if was_open || done.is_some() {
            // A close must not be lost: it frees the file; waiting for room is brief.
            let _ = writer().send(Command::Close { id: self.id, done });
        }
    }
}

impl Drop for SessionLog {
    fn drop(&mut self) {
        self.close(None);
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
        log.close_and_wait();
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
        SessionLog::open(Some(dir.path()), "fresh", limits).close_and_wait();
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
        log.close_and_wait();
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
        log.event("state", json!({}));
        log.close_and_wait();
        assert!(!Path::new("/proc/framecast-no/x.jsonl").exists());
    }
}
