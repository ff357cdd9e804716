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
    let mut bytes = Vec::new();
    Frame::message(error, OpCode::Data(Data::Text), true)
        .format(&mut bytes)
        .expect("writing to a Vec cannot fail");
    Frame::close(Some(CloseFrame {
        code: CloseCode::Again,
        reason: "no replica available".into(),
    }))
    .format(&mut bytes)
    .expect("writing to a Vec cannot fail");
    bytes
}

/// Completes the upgrade and refuses the session; a request without a WebSocket key gets a
/// plain 503 instead.
pub async fn refuse_websocket(session: &mut Session, message: &str) -> pingora::Result<()> {
    let key = session
        .req_header()
        .headers
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    let Some(accept) = key else {
        return session.respond_error(503).await;
    };
    let mut header = ResponseHeader::build(101, Some(3))?;
    header.insert_header("upgrade", "websocket")?;
    header.insert_header("connection", "Upgrade")?;
    header.insert_header("sec-websocket-accept", accept)?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session
        .write_response_body(Some(Bytes::from(refusal_frames(message))), true)
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
