//! What `/status` reports about the workers. The pool writes it, the server shows it and
//! observability exports it as gauges, so it sits below all three.

use serde::Serialize;

/// One worker's row in `/status` (`gpu_status` in FastVideo's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerStatus {
    /// Warmed up and able to serve.
    pub ready: bool,
    /// Ready and not serving a session.
    pub available: bool,
    /// Sessions it serves now (0 or 1).
    pub client_count: u32,
    /// The process running it is alive (always true in-process).
    pub process_alive: bool,
    /// The worker process's id (`None` in-process or while it restarts).
    pub pid: Option<u32>,
    /// Times its process was restarted after dying.
    pub restarts: u32,
    /// The device it runs on (`cpu`, `cuda:0`, ...).
    pub device: String,
    /// Whether warmup succeeded (`None` while it runs or when disabled).
    pub warmup_success: Option<bool>,
    /// Why warmup failed.
    pub warmup_error: Option<String>,
}

/// The pool as `/status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    /// Workers in all.
    pub total_gpus: u32,
    /// Ready workers not serving anyone.
    pub available_gpus: u32,
    /// Sessions waiting.
    pub queue_size: u32,
    /// Whether workers warm up before serving.
    pub warmup_enabled: bool,
    /// Workers whose warmup succeeded.
    pub warmup_successful_gpus: u32,
    /// Workers whose warmup failed.
    pub warmup_failed_gpus: u32,
    /// Per worker, keyed by its index as a string.
    pub gpu_status: std::collections::BTreeMap<String, WorkerStatus>,
}
