//! Every metric the replica exports, declared in one place with its help text (names as in
//! DESIGN.md), plus the small recording helpers the rest of the crate calls.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::status::PoolStatus;

/// Sessions past their opening frame.
pub const SESSIONS_ACTIVE: &str = "framecast_sessions_active";
/// Ended sessions by outcome (complete, error, timeout, rejected).
pub const SESSIONS_TOTAL: &str = "framecast_sessions_total";
/// Sessions waiting for a worker.
pub const QUEUE_DEPTH: &str = "framecast_queue_depth";
/// Wall time to generate one segment.
pub const SEGMENT_GENERATION_SECONDS: &str = "framecast_segment_generation_seconds";
/// Wall time of one denoising step.
pub const DENOISE_STEP_SECONDS: &str = "framecast_denoise_step_seconds";
/// From a session becoming active to its first media byte queued.
pub const TIME_TO_FIRST_MEDIA_SECONDS: &str = "framecast_time_to_first_media_seconds";
/// Wall time to encode and queue one segment.
pub const ENCODE_SECONDS: &str = "framecast_encode_seconds";
/// fMP4 bytes queued for clients.
pub const MEDIA_BYTES_TOTAL: &str = "framecast_media_bytes_total";
/// Video seconds produced per wall second, for the most recent segment of any session.
pub const REALTIME_FACTOR: &str = "framecast_realtime_factor";
/// 1 when a worker is ready, per worker.
pub const WORKER_UP: &str = "framecast_worker_up";
/// Error frames sent, by code.
pub const ERRORS_TOTAL: &str = "framecast_errors_total";

/// Prompt-provider requests, by provider, operation and outcome (ok, error).
pub const PROMPT_REQUESTS_TOTAL: &str = "framecast_prompt_requests_total";
/// Failed prompt-provider requests, by provider, operation and error class.
pub const PROMPT_ERRORS_TOTAL: &str = "framecast_prompt_errors_total";
/// Wall time of one prompt-provider request, by provider and operation.
pub const PROMPT_REQUEST_SECONDS: &str = "framecast_prompt_request_seconds";
/// Prompt operations answered by a fallback provider, by operation.
pub const PROMPT_FALLBACKS_TOTAL: &str = "framecast_prompt_fallbacks_total";
/// Prompt operations that failed as a whole (every provider, or the time budget), by
/// operation and reason.
pub const PROMPT_OPERATION_FAILURES_TOTAL: &str = "framecast_prompt_operation_failures_total";
/// Prompts the safety filter kept from generation, by where they came from.
pub const PROMPTS_BLOCKED_TOTAL: &str = "framecast_prompts_blocked_total";

/// Failed session- and blob-store operations (the Redis backend), by store (session, blob)
/// and operation (save, load, remove, put, get, drop_owner).
pub const STORE_ERRORS_TOTAL: &str = "framecast_store_errors_total";

/// Attempts to resume a lost session, by outcome (resumed, or why it was refused).
pub const SESSION_RESUMES_TOTAL: &str = "framecast_session_resumes_total";
/// Every outcome of a resume attempt (`ResumeRefused::reason`), for zero series up front.
pub const RESUME_OUTCOMES: [&str; 9] = [
    "resumed",
    "malformed",
    "no_record",
    "bad_token",
    "out_of_window",
    "not_resume_point",
    "format_mismatch",
    "store_error",
    "corrupt",
];

/// Registers help texts; call once after installing the recorder.
pub fn describe() {
    describe_gauge!(SESSIONS_ACTIVE, "Sessions past their opening frame.");
    describe_counter!(SESSIONS_TOTAL, "Ended sessions by outcome.");
    describe_gauge!(QUEUE_DEPTH, "Sessions waiting for a worker.");
    describe_histogram!(
        SEGMENT_GENERATION_SECONDS,
        metrics::Unit::Seconds,
        "Wall time to generate one segment."
    );
    describe_histogram!(
        DENOISE_STEP_SECONDS,
        metrics::Unit::Seconds,
        "Wall time of one denoising step."
    );
    describe_histogram!(
        TIME_TO_FIRST_MEDIA_SECONDS,
        metrics::Unit::Seconds,
        "From a session becoming active to its first media byte queued."
    );
    describe_histogram!(
        ENCODE_SECONDS,
        metrics::Unit::Seconds,
        "Wall time to encode and queue one segment."
    );
    describe_counter!(
        MEDIA_BYTES_TOTAL,
        metrics::Unit::Bytes,
        "fMP4 bytes queued for clients."
    );
    describe_gauge!(
        REALTIME_FACTOR,
        "Video seconds produced per wall second (latest segment)."
    );
    describe_gauge!(WORKER_UP, "1 when the worker is warm and able to serve.");
    describe_counter!(ERRORS_TOTAL, "Error frames sent to clients, by code.");
    describe_counter!(
        PROMPT_REQUESTS_TOTAL,
        "Prompt-provider requests by provider, operation and outcome."
    );
    describe_counter!(
        PROMPT_ERRORS_TOTAL,
        "Failed prompt-provider requests by provider, operation and error class."
    );
    describe_histogram!(
        PROMPT_REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Wall time of one prompt-provider request."
    );
    describe_counter!(
        PROMPT_FALLBACKS_TOTAL,
        "Prompt operations answered by a fallback provider."
    );
    describe_counter!(
        PROMPT_OPERATION_FAILURES_TOTAL,
        "Prompt operations that failed as a whole, by operation and reason."
    );
    describe_counter!(
        PROMPTS_BLOCKED_TOTAL,
        "Prompts the safety filter kept from generation, by stage."
    );
    describe_counter!(
        STORE_ERRORS_TOTAL,
        "Failed store operations (state or blob not stored or not read), by store and operation."
    );
    describe_counter!(
        SESSION_RESUMES_TOTAL,
        "Attempts to resume a lost session, by outcome (resumed, or why it was refused)."
    );
    for outcome in RESUME_OUTCOMES {
        counter!(SESSION_RESUMES_TOTAL, "outcome" => outcome).absolute(0);
    }
    crate::prompt::safety::describe_metrics();
    // Zero series from the start, so alerts and rate() see them before the first error.
    for code in framecast_common::protocol::ErrorCode::ALL {
        counter!(ERRORS_TOTAL, "code" => code.as_str()).absolute(0);
    }
}

/// Copies pool state into gauges; called before each scrape so they are never stale.
pub fn record_pool(status: &PoolStatus, active_sessions: u32) {
    gauge!(QUEUE_DEPTH).set(f64::from(status.queue_size));
    gauge!(SESSIONS_ACTIVE).set(f64::from(active_sessions));
    for (gpu, worker) in &status.gpu_status {
        gauge!(WORKER_UP, "gpu" => gpu.clone()).set(if worker.ready { 1.0 } else { 0.0 });
    }
}

/// A session asked to resume a lost one; `outcome` is `resumed` or why it was refused.
pub fn resume_attempt(outcome: &'static str) {
    counter!(SESSION_RESUMES_TOTAL, "outcome" => outcome).increment(1);
}

/// A session ended in `outcome`.
pub fn session_ended(outcome: &'static str) {
    counter!(SESSIONS_TOTAL, "outcome" => outcome).increment(1);
}

/// An error frame with `code` went out.
pub fn error_sent(code: &'static str) {
    counter!(ERRORS_TOTAL, "code" => code).increment(1);
}

/// A segment was generated in `took`.
pub fn segment_generated(took: Duration) {
    histogram!(SEGMENT_GENERATION_SECONDS).record(took.as_secs_f64());
}

/// One denoising step took `took`.
pub fn denoise_step(took: Duration) {
    histogram!(DENOISE_STEP_SECONDS).record(took.as_secs_f64());
}

/// A session's first media byte was queued `after` it became active.
pub fn first_media(after: Duration) {
    histogram!(TIME_TO_FIRST_MEDIA_SECONDS).record(after.as_secs_f64());
}

/// A segment of `media` length was encoded in `took`; `cycle` is the wall time since the
/// previous segment of the session was done (generation and media overlapped).
pub fn segment_encoded(took: Duration, media: Duration, cycle: Duration) {
    histogram!(ENCODE_SECONDS).record(took.as_secs_f64());
    if !cycle.is_zero() {
        gauge!(REALTIME_FACTOR).set(media.as_secs_f64() / cycle.as_secs_f64());
    }
}

/// `bytes` of fMP4 were queued.
pub fn media_bytes(bytes: usize) {
    counter!(MEDIA_BYTES_TOTAL).increment(bytes as u64);
}

/// One prompt-provider request ended; `error_class` is `None` on success.
pub fn prompt_request(
    provider: &str,
    operation: &'static str,
    took: Duration,
    error_class: Option<&'static str>,
) {
    let outcome = if error_class.is_some() { "error" } else { "ok" };
    let provider = provider.to_string();
    counter!(PROMPT_REQUESTS_TOTAL, "provider" => provider.clone(), "operation" => operation, "outcome" => outcome)
        .increment(1);
    histogram!(PROMPT_REQUEST_SECONDS, "provider" => provider.clone(), "operation" => operation)
        .record(took.as_secs_f64());
    if let Some(class) = error_class {
        counter!(PROMPT_ERRORS_TOTAL, "provider" => provider, "operation" => operation, "class" => class)
            .increment(1);
    }
}

/// A prompt operation was answered by a provider after an earlier one failed.
pub fn prompt_fallback(operation: &'static str) {
    counter!(PROMPT_FALLBACKS_TOTAL, "operation" => operation).increment(1);
}

/// A prompt operation failed as a whole for `reason` (an error class, or `timeout`).
pub fn prompt_operation_failed(operation: &'static str, reason: &'static str) {
    counter!(PROMPT_OPERATION_FAILURES_TOTAL, "operation" => operation, "reason" => reason)
        .increment(1);
}

/// The safety filter kept a prompt from `stage` (init, user, enhanced, auto, rewrite) out.
pub fn prompt_blocked(stage: &'static str) {
    counter!(PROMPTS_BLOCKED_TOTAL, "stage" => stage).increment(1);
}
