//! What a client hears when the replica serving its WebSocket session goes away mid-session.
//!
//! A replica killed mid-session (SIGKILL, OOM, a lost node) closes or resets its socket
//! without a Close frame. Passed through as is, the client sees the connection drop (1006)
//! and cannot tell a crash from a network fault. Instead the router forwards whole frames
//! only ([`WholeFrames`]: a frame still arriving is held back, so a half-sent media fragment
//! never reaches a player), finishes with padding only a frame too large to hold, sends the
//! protocol's `error` frame (`worker_failed`, retryable: reconnect and resume) and closes with
//! 1012 (service restart).
//!
//! [`UpstreamWatch`] follows the replica→client bytes of one tunnel from the `101` on
//! ([`FrameBoundaries`]: headers only) and hands out those last frames once, when the replica
//! is gone and had not closed the session itself.

use bytes::Bytes;
use framecast_common::protocol::{ErrorCode, ServerMessage};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::frame_boundaries::{ClientFrames, ClientViolation, FrameBoundaries, WholeFrames};
use crate::observability::{self, Protocol};

/// The most payload bytes the router sends to finish a frame the replica left unfinished; a
/// larger frame is abandoned (the client then sees the connection drop) rather than padded.
/// Media fragments are far smaller.
pub const PADDING_LIMIT: u64 = 16 << 20;

/// The largest frame held back until complete (see [`WholeFrames`]): media fragments and
/// control messages are far smaller, so a replica's death never leaves one half-sent.
pub const HOLD_LIMIT: usize = 4 << 20;

/// The close code: 1012, service restart (try again, the service is coming back).
const CLOSE_CODE: CloseCode = CloseCode::Restart;
const CLOSE_REASON: &str = "replica lost";

/// `/v1/stream`'s error text: resuming is the way back (its `session_resumable` carried the id
/// and token).
const V1_MESSAGE: &str = "the replica serving this session stopped; reconnect and send session_init_v2 with resume {session_id, token} from session_resumable to continue";
/// The Dreamverse app shows its "replica unavailable" notice for a message containing that.
const DREAMVERSE_MESSAGE: &str =
    "replica unavailable: the replica serving this session stopped; reconnect to continue";

/// Watches one upgraded tunnel's replica→client stream for its end (see the module docs).
#[derive(Debug, Clone)]
pub struct UpstreamWatch {
    whole: WholeFrames,
    /// The client's frames: a replica that dropped the connection over one of them was not
    /// lost, it refused the client.
    client: ClientFrames,
    frames: FrameBoundaries,
    protocol: Protocol,
    /// Set once [`UpstreamWatch::farewell`] has run: the connection's end is decided.
    ended: bool,
}

impl UpstreamWatch {
    /// A watch over a tunnel speaking `protocol`, started when the replica's `101` goes out;
    /// client frames over `client_frame_limit` bytes are ones the replica refuses.
    pub fn new(protocol: Protocol, client_frame_limit: u64) -> Self {
        Self {
            whole: WholeFrames::new(HOLD_LIMIT),
            client: ClientFrames::new(client_frame_limit),
            frames: FrameBoundaries::new(),
            protocol,
            ended: false,
        }
    }

    /// Takes `chunk`, the next bytes from the replica, and returns what to forward to the
    /// client now: whole frames only (a frame still arriving is held back).
    pub fn forward(&mut self, chunk: &[u8]) -> Bytes {
        let out = self.whole.push(chunk);
        self.frames.observe(&out);
        out
    }

    /// Follows `chunk`, the next client bytes forwarded to the replica (headers only).
    pub fn observe_client(&mut self, chunk: &[u8]) {
        self.client.observe(chunk);
    }

    /// The replica named `replica` is gone (`cause`: it closed the connection, or the error).
    /// Returns what to send the client before the connection ends: the rest of the frame in
    /// progress, the `error` frame and the 1012 close. `None` when the replica had sent a
    /// Close frame, when an earlier call already answered, or when the frame in progress is
    /// too large to finish ([`PADDING_LIMIT`]). Counts and logs every loss.
    pub fn farewell(&mut self, replica: &str, cause: &dyn std::fmt::Display) -> Option<Bytes> {
        if std::mem::replace(&mut self.ended, true) || self.frames.close_seen() {
            return None;
        }
        if let Some(violation) = self.client.violation() {
            return self.refusal(replica, violation);
        }
        observability::upstream_lost(self.protocol);
        let mut bytes = match self.frames.completion(PADDING_LIMIT) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(%replica, protocol = self.protocol.label(), %cause, error = %e,
                    "replica went away mid-frame; dropping the client without an error frame");
                return None;
            }
        };
        tracing::warn!(
            %replica,
            protocol = self.protocol.label(),
            %cause,
            padding = bytes.len(),
            held_back = self.whole.held(),
            frame_opcode = ?self.frames.opcode_in_progress(),
            "replica went away mid-session without a close frame; sending worker_failed and 1012"
        );
        bytes.extend(crate::refusal::error_and_close(
            &error_text(self.protocol),
            CLOSE_CODE,
            CLOSE_REASON,
        ));
        observability::error_sent(ErrorCode::WorkerFailed);
        Some(Bytes::from(bytes))
    }
}

impl UpstreamWatch {
    /// What the replica said (and its reset may have swallowed) when it dropped a client over
    /// `violation`: `invalid_message` and 1009 for a frame over the limit, 1002 for a malformed
    /// one; no padding is owed past a refusal the client caused. Not a lost replica.
    fn refusal(&mut self, replica: &str, violation: ClientViolation) -> Option<Bytes> {
        let (message, reason, code, close_reason) = match violation {
            ClientViolation::TooLarge { declared, limit } => (
                format!("message of {declared} bytes is larger than {limit} bytes"),
                "frame_too_large",
                CloseCode::Size,
                "message too big",
            ),
            ClientViolation::Malformed(what) => (
                format!("malformed WebSocket frame: {what}"),
                "malformed_frame",
                CloseCode::Protocol,
                "protocol error",
            ),
        };
        tracing::info!(%replica, protocol = self.protocol.label(), %message,
            "the replica dropped a client that broke the protocol; giving the client its refusal");
        observability::client_violation(reason);
        let mut bytes = self.frames.completion(PADDING_LIMIT).ok()?;
        let text = match self.protocol {
            Protocol::Dreamverse => {
                serde_json::json!({"type": "error", "message": message}).to_string()
            }
            Protocol::V1Stream | Protocol::Other => ServerMessage::Error {
                code: ErrorCode::InvalidMessage,
                message,
                retryable: false,
                reason: Some(reason.into()),
            }
            .to_json(),
        };
        bytes.extend(crate::refusal::error_and_close(&text, code, close_reason));
        observability::error_sent(ErrorCode::InvalidMessage);
        Some(Bytes::from(bytes))
    }
}

/// The `error` frame's JSON for `protocol` (`other` paths get Framecast's own).
fn error_text(protocol: Protocol) -> String {
    match protocol {
        Protocol::Dreamverse => serde_json::json!({
            "type": "error",
            "message": DREAMVERSE_MESSAGE,
            "error_code": ErrorCode::WorkerFailed.as_str(),
        })
        .to_string(),
        Protocol::V1Stream | Protocol::Other => ServerMessage::Error {
            code: ErrorCode::WorkerFailed,
            message: V1_MESSAGE.into(),
            retryable: true,
            reason: Some("upstream_lost".into()),
        }
        .to_json(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames after `padding` bytes: the error's JSON and the close code.
    fn split(bytes: &[u8], padding: usize) -> (serde_json::Value, u16, String) {
        let rest = &bytes[padding..];
        assert_eq!(rest[0], 0x81, "FIN + text");
        assert_eq!(rest[1] & 0x80, 0, "server frames are not masked");
        let (len, start) = match rest[1] {
            126 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
            n => (usize::from(n), 2),
        };
        let error = serde_json::from_slice(&rest[start..start + len]).unwrap();
        let close = &rest[start + len..];
        assert_eq!(close[0], 0x88, "FIN + close");
        assert_eq!(close[1] & 0x80, 0, "server frames are not masked");
        let code = u16::from_be_bytes([close[2], close[3]]);
        let reason = String::from_utf8(close[4..2 + usize::from(close[1])].to_vec()).unwrap();
        assert_eq!(
            close.len(),
            2 + usize::from(close[1]),
            "nothing after the close"
        );
        (error, code, reason)
    }

    #[test]
    fn a_lost_v1_stream_gets_whole_frames_only_then_worker_failed_and_1012() {
        let mut watch = UpstreamWatch::new(Protocol::V1Stream, 1 << 20);
        // A whole text frame goes out; of a binary frame of 10 bytes only 4 arrived: held.
        let out = watch.forward(&[0x81, 2, b'h', b'i', 0x82, 10, 1, 2, 3, 4]);
        assert_eq!(&out[..], &[0x81, 2, b'h', b'i']);
        let bytes = watch.farewell("r0", &"closed").unwrap();
        // Nothing to finish: the client saw whole frames only.
        let (error, code, reason) = split(&bytes, 0);
        assert_eq!(
            error,
            serde_json::json!({"type": "error", "code": "worker_failed", "message": V1_MESSAGE,
                "retryable": true, "reason": "upstream_lost"})
        );
        assert_eq!((code, reason.as_str()), (1012, "replica lost"));
        assert!(
            watch.farewell("r0", &"again").is_none(),
            "the ending is handed out once"
        );
    }

    #[test]
    fn a_lost_dreamverse_session_gets_the_apps_error_shape() {
        let mut watch = UpstreamWatch::new(Protocol::Dreamverse, 1 << 20);
        assert_eq!(&watch.forward(b"\x81\x02hi")[..], b"\x81\x02hi");
        let bytes = watch.farewell("r0", &"reset").unwrap();
        let (error, code, _) = split(&bytes, 0);
        assert_eq!(error["type"], "error");
        assert_eq!(error["error_code"], "worker_failed");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .starts_with("replica unavailable")
        );
        assert_eq!(error.as_object().unwrap().len(), 3, "{error}");
        assert_eq!(code, 1012);
    }

    #[test]
    fn a_replica_that_closed_the_session_gets_nothing_added() {
        let mut watch = UpstreamWatch::new(Protocol::V1Stream, 1 << 20);
        watch.forward(&[0x88, 0x02, 0x03, 0xE8]);
        assert!(watch.farewell("r0", &"closed").is_none());
    }

    #[test]
    fn a_frame_too_large_to_hold_is_passed_on_and_padded_when_cut() {
        let mut watch = UpstreamWatch::new(Protocol::V1Stream, 1 << 20);
        let len = HOLD_LIMIT as u64 + 10;
        let mut cut = vec![0x82, 127];
        cut.extend_from_slice(&len.to_be_bytes());
        cut.extend_from_slice(&[5; 100]);
        assert_eq!(
            watch.forward(&cut).len(),
            cut.len(),
            "passed on as it comes"
        );
        let bytes = watch.farewell("r0", &"closed").unwrap();
        let padding = (len - 100) as usize;
        assert!(bytes[..padding].iter().all(|&b| b == 0));
        let (_, code, _) = split(&bytes, padding);
        assert_eq!(code, 1012);
    }

    #[test]
    fn a_frame_too_large_to_pad_is_abandoned() {
        let mut watch = UpstreamWatch::new(Protocol::V1Stream, 1 << 20);
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&(PADDING_LIMIT + 1).to_be_bytes());
        watch.forward(&header);
        assert!(watch.farewell("r0", &"closed").is_none());
    }
}
