//! Every metric the router exports, declared in one place with its help text (names as in
//! DESIGN.md).

use std::time::Duration;

use framecast_common::protocol::ErrorCode;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// 1 when the replica is healthy, per replica.
pub const REPLICA_UP: &str = "framecast_router_replica_up";
/// Round trip of health probes, per replica.
pub const HEALTH_PROBE_SECONDS: &str = "framecast_router_health_probe_seconds";
/// Open WebSocket sessions, per replica.
pub const SESSIONS_ACTIVE: &str = "framecast_router_sessions_active";
/// Ended sessions, per replica and outcome.
pub const SESSIONS_TOTAL: &str = "framecast_router_sessions_total";
/// WebSocket sessions routed to a replica, by protocol (`v1_stream` for `/v1/stream`,
/// `dreamverse` for the Dreamverse app's `/ws`, `other` for any other path).
pub const SESSIONS_BY_PROTOCOL_TOTAL: &str = "framecast_router_sessions_by_protocol_total";
/// The protocols [`SESSIONS_BY_PROTOCOL_TOTAL`] tells apart.
pub const PROTOCOLS: [&str; 3] = ["v1_stream", "dreamverse", "other"];
/// WebSocket sessions whose replica went away (connection closed or reset) without sending
/// a Close frame, by protocol as in [`SESSIONS_BY_PROTOCOL_TOTAL`].
pub const UPSTREAM_LOST_TOTAL: &str = "framecast_router_upstream_lost_total";
/// Bytes proxied, by direction (`downstream` to clients, `upstream` to replicas).
pub const BYTES_TOTAL: &str = "framecast_router_bytes_total";
/// Connections to a replica that failed before the WebSocket handshake, per replica.
pub const CONNECT_FAILURES_TOTAL: &str = "framecast_router_connect_failures_total";
/// Sessions a replica dropped over a client's protocol violation, answered by the router with
/// the replica's refusal, by violation (frame_too_large, malformed_frame).
pub const CLIENT_VIOLATIONS_TOTAL: &str = "framecast_router_client_violations_total";
/// Connection attempts whose replica name did not resolve, per replica.
pub const RESOLVE_FAILURES_TOTAL: &str = "framecast_router_resolve_failures_total";
/// DNS discovery lookups that failed (the known replicas were kept).
pub const DISCOVERY_FAILURES_TOTAL: &str = "framecast_router_discovery_failures_total";
/// Replicas the router knows, retired ones included.
pub const REPLICAS_KNOWN: &str = "framecast_router_replicas_known";
/// Sessions refused because no replica was routable.
pub const NO_REPLICA_TOTAL: &str = "framecast_router_no_replica_total";
/// Error frames the router itself sent to clients, by code (the replica exports the same
/// series for its own, so one alert covers both).
pub const ERRORS_TOTAL: &str = "framecast_errors_total";

/// Registers help texts; call once after installing the recorder.
pub fn describe() {
    describe_gauge!(
        REPLICA_UP,
        "1 when the replica is healthy and takes sessions."
    );
    describe_histogram!(
        HEALTH_PROBE_SECONDS,
        metrics::Unit::Seconds,
        "Round trip of health probes."
    );
    describe_gauge!(
        SESSIONS_ACTIVE,
        "Open WebSocket sessions through this router."
    );
    describe_counter!(SESSIONS_TOTAL, "Ended sessions by replica and outcome.");
    describe_counter!(
        SESSIONS_BY_PROTOCOL_TOTAL,
        "WebSocket sessions routed to a replica, by protocol (v1_stream, dreamverse, other)."
    );
    describe_counter!(
        UPSTREAM_LOST_TOTAL,
        "WebSocket sessions whose replica went away mid-session without a Close frame (the client got worker_failed and 1012), by protocol."
    );
    describe_counter!(
        BYTES_TOTAL,
        metrics::Unit::Bytes,
        "Bytes proxied, by direction."
    );
    describe_counter!(
        CONNECT_FAILURES_TOTAL,
        "Connections to a replica that failed before the handshake (the session is retried elsewhere when it can be)."
    );
    describe_counter!(
        NO_REPLICA_TOTAL,
        "Sessions refused because no replica was routable."
    );
    describe_counter!(
        CLIENT_VIOLATIONS_TOTAL,
        "Sessions a replica dropped over a client's oversized or malformed frame (the router gave the client the refusal), by violation."
    );
    describe_counter!(
        DISCOVERY_FAILURES_TOTAL,
        "DNS discovery lookups that failed (the known replicas were kept)."
    );
    describe_gauge!(
        REPLICAS_KNOWN,
        "Replicas the router knows (configured and discovered, retired ones included)."
    );
    describe_counter!(
        RESOLVE_FAILURES_TOTAL,
        "Connection attempts whose replica name did not resolve (the next replica is tried)."
    );
    describe_counter!(ERRORS_TOTAL, "Error frames sent to clients, by code.");
}

/// Exports every series of `replica` at zero from the start, so dashboards and `rate()` see
/// them before the first event (the exporter only renders series that were touched).
pub fn register_replica(replica: &str) {
    gauge!(REPLICA_UP, "replica" => replica.to_string()).set(0.0);
    gauge!(SESSIONS_ACTIVE, "replica" => replica.to_string()).set(0.0);
    counter!(CONNECT_FAILURES_TOTAL, "replica" => replica.to_string()).absolute(0);
    counter!(RESOLVE_FAILURES_TOTAL, "replica" => replica.to_string()).absolute(0);
    for outcome in ["ok", "error"] {
        counter!(SESSIONS_TOTAL, "replica" => replica.to_string(), "outcome" => outcome)
            .absolute(0);
    }
}

/// Exports the router-wide counters at zero from the start.
pub fn register_router() {
    counter!(NO_REPLICA_TOTAL).absolute(0);
    counter!(DISCOVERY_FAILURES_TOTAL).absolute(0);
    for violation in ["frame_too_large", "malformed_frame"] {
        counter!(CLIENT_VIOLATIONS_TOTAL, "violation" => violation).absolute(0);
    }
    for protocol in PROTOCOLS {
        counter!(SESSIONS_BY_PROTOCOL_TOTAL, "protocol" => protocol).absolute(0);
        counter!(UPSTREAM_LOST_TOTAL, "protocol" => protocol).absolute(0);
    }
    for code in [ErrorCode::GpuUnavailable, ErrorCode::WorkerFailed] {
        counter!(ERRORS_TOTAL, "code" => code.as_str()).absolute(0);
    }
    for direction in ["downstream", "upstream"] {
        counter!(BYTES_TOTAL, "direction" => direction).absolute(0);
    }
}

/// Records one probe of `replica`.
pub fn probed(replica: &str, up: bool, latency: Option<Duration>) {
    gauge!(REPLICA_UP, "replica" => replica.to_string()).set(if up { 1.0 } else { 0.0 });
    if let Some(l) = latency {
        histogram!(HEALTH_PROBE_SECONDS, "replica" => replica.to_string()).record(l.as_secs_f64());
    }
}

/// A session was routed to `replica`.
pub fn session_started(replica: &str) {
    gauge!(SESSIONS_ACTIVE, "replica" => replica.to_string()).increment(1.0);
}

/// A session routed to `replica` is over (or its connection attempt failed).
pub fn session_ended(replica: &str) {
    gauge!(SESSIONS_ACTIVE, "replica" => replica.to_string()).decrement(1.0);
}

/// The WebSocket protocol a session speaks, told by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Framecast's own `/v1/stream`.
    V1Stream,
    /// The Dreamverse app's `/ws`.
    Dreamverse,
    /// Any other path.
    Other,
}

impl Protocol {
    /// The protocol of a session opened on `path`.
    pub fn of_path(path: &str) -> Self {
        match path {
            "/v1/stream" => Protocol::V1Stream,
            "/ws" => Protocol::Dreamverse,
            _ => Protocol::Other,
        }
    }

    /// Its `protocol` label value (one of [`PROTOCOLS`]).
    pub fn label(self) -> &'static str {
        match self {
            Protocol::V1Stream => PROTOCOLS[0],
            Protocol::Dreamverse => PROTOCOLS[1],
            Protocol::Other => PROTOCOLS[2],
        }
    }
}

/// A WebSocket session for `path` was routed (counted once, however many replicas it tried).
pub fn session_routed(path: &str) {
    let protocol = Protocol::of_path(path).label();
    counter!(SESSIONS_BY_PROTOCOL_TOTAL, "protocol" => protocol).increment(1);
}

/// The replica of a `protocol` session went away without a Close frame.
pub fn upstream_lost(protocol: Protocol) {
    counter!(UPSTREAM_LOST_TOTAL, "protocol" => protocol.label()).increment(1);
}

/// A session to `replica` ended with `outcome` after moving the given bytes.
pub fn session_closed(replica: &str, outcome: &'static str, to_client: usize, to_replica: usize) {
    counter!(SESSIONS_TOTAL, "replica" => replica.to_string(), "outcome" => outcome).increment(1);
    counter!(BYTES_TOTAL, "direction" => "downstream").increment(to_client as u64);
    counter!(BYTES_TOTAL, "direction" => "upstream").increment(to_replica as u64);
}

/// Connecting to `replica` failed, or it closed the connection before answering the handshake.
pub fn connect_failed(replica: &str) {
    counter!(CONNECT_FAILURES_TOTAL, "replica" => replica.to_string()).increment(1);
}

/// A replica dropped a client over `violation`; the router answered for it.
pub fn client_violation(violation: &'static str) {
    counter!(CLIENT_VIOLATIONS_TOTAL, "violation" => violation).increment(1);
}

/// A discovery lookup failed.
pub fn discovery_failed() {
    counter!(DISCOVERY_FAILURES_TOTAL).increment(1);
}

/// The router knows `n` replicas after a discovery round.
pub fn discovered(n: usize) {
    gauge!(REPLICAS_KNOWN).set(n as f64);
}

/// A replica's name did not resolve when a session was routed to it.
pub fn resolve_failed(replica: &str) {
    counter!(RESOLVE_FAILURES_TOTAL, "replica" => replica.to_string()).increment(1);
}

/// A session found no routable replica.
pub fn no_replica() {
    counter!(NO_REPLICA_TOTAL).increment(1);
}

/// An error frame with `code` went to a client.
pub fn error_sent(code: ErrorCode) {
    counter!(ERRORS_TOTAL, "code" => code.as_str()).increment(1);
}
