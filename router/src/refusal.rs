//! Refusing a WebSocket session when no replica can take it.
//!
//! A browser cannot read the body of a failed upgrade (an HTTP 503), so the router completes
//! the handshake itself, sends the protocol's `error {code: gpu_unavailable, retryable: true}`
//! frame and closes with 1013 (try again later): the client sees why and when to retry.

use bytes::Bytes;
use framecast_common::protocol::{ErrorCode, ServerMessage};
use pingora::http::ResponseHeader;
use pingora::prelude::Session;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

/// The refusal's frames: the error message, then a close frame with 1013.
pub fn refusal_frames(message: &str) -> Vec<u8> {
    let error = ServerMessage::error(ErrorCode::GpuUnavailable, message, true).to_json();
    error_and_close(&error, CloseCode::Again, "no replica available")
}

/// A refusal of one client's session over a per-address limit: `session_rejected` with
/// `error_code: "ip_session_limit"` (what the Dreamverse web app looks for), then 1013.
pub fn client_limit_frames(message: &str) -> Vec<u8> {
    let mut error = serde_json::to_value(ServerMessage::error(
        ErrorCode::SessionRejected,
        message,
        true,
    ))
    .expect("a server message serializes");
    error["reason"] = "ip_session_limit".into();
    error["error_code"] = "ip_session_limit".into();
    error_and_close(&error.to_string(), CloseCode::Again, "client session limit")
}

/// The router's last words on a WebSocket: the `error` text frame, then a close frame with
/// `code` and `reason`, both unmasked (server to client).
pub fn error_and_close(error: &str, code: CloseCode, reason: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    Frame::message(error.to_owned(), OpCode::Data(Data::Text), true)
        .format(&mut bytes)
        .expect("writing to a Vec cannot fail");
    Frame::close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
    .format(&mut bytes)
    .expect("writing to a Vec cannot fail");
    bytes
}

/// Completes the upgrade and refuses the session for want of a replica; a request without a
/// WebSocket key gets a plain 503 instead.
pub async fn refuse_websocket(session: &mut Session, message: &str) -> pingora::Result<()> {
    refuse_with(session, ErrorCode::GpuUnavailable, refusal_frames(message)).await
}

/// Completes the upgrade and refuses the session over a per-client limit (429 without a
/// WebSocket key).
pub async fn refuse_client(session: &mut Session, message: &str) -> pingora::Result<()> {
    refuse_with(
        session,
        ErrorCode::SessionRejected,
        client_limit_frames(message),
    )
    .await
}

/// Answers an upgrade that failed the auth policy with a plain 401 (with a
/// `WWW-Authenticate: Bearer` challenge) or 403, and a JSON body saying why. No WebSocket is
/// opened: nothing reaches a replica.
pub async fn refuse_unauthorized(
    session: &mut Session,
    refusal: &framecast_common::auth::AuthError,
) -> pingora::Result<()> {
    let body = Bytes::from(
        serde_json::json!({
            "error": {"code": refusal.reason(), "message": refusal.to_string()}
        })
        .to_string(),
    );
    let mut header = ResponseHeader::build(refusal.status(), Some(4))?;
    if refusal.status() == 401 {
        header.insert_header("www-authenticate", "Bearer realm=\"framecast\"")?;
    }
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("connection", "close")?;
    session.set_keepalive(None);
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(Some(body), true).await
}

async fn refuse_with(
    session: &mut Session,
    code: ErrorCode,
    frames: Vec<u8>,
) -> pingora::Result<()> {
    let key = session
        .req_header()
        .headers
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    let Some(accept) = key else {
        let status = if code == ErrorCode::SessionRejected {
            429
        } else {
            503
        };
        return session.respond_error(status).await;
    };
    let mut header = ResponseHeader::build(101, Some(3))?;
    header.insert_header("upgrade", "websocket")?;
    header.insert_header("connection", "Upgrade")?;
    header.insert_header("sec-websocket-accept", accept)?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    crate::observability::error_sent(code);
    session
        .write_response_body(Some(Bytes::from(frames)), true)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_an_unmasked_text_frame_then_a_1013_close() {
        let bytes = refusal_frames("busy");
        assert_eq!(bytes[0], 0x81, "FIN + text");
        let len = usize::from(bytes[1]);
        assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
        let text: serde_json::Value = serde_json::from_slice(&bytes[2..2 + len]).unwrap();
        assert_eq!(text["type"], "error");
        assert_eq!(text["code"], "gpu_unavailable");
        assert_eq!(text["retryable"], true);
        let close = &bytes[2 + len..];
        assert_eq!(close[0], 0x88, "FIN + close");
        assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1013);
    }
}
