//! Signatures on the continuation states handed to clients, so a state only comes back in
//! as this replica (or one sharing its secret) made it.
//!
//! A state's payload names things that live on the server — a blob in the blob store, a
//! stream held live in a worker — so a client that could edit it could resume another
//! session's stream. Every state a session sends (`continuation_state_snapshot`) carries an
//! HMAC-SHA256 over its kind and payload under `store.state_secret`; `session_init_v2`'s
//! `continuation_state` is refused unless its signature checks out. Only the session signs
//! and verifies: what moves between the server and its worker processes stays unsigned, so
//! workers hold no secret.
//!
//! The payload is signed in a canonical form (object keys sorted, no whitespace), so a client
//! that parses and re-serializes the state keeps it valid; any change to a value does not.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use framecast_common::protocol::ContinuationState;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// Separates this use of the key from any other (and versions the signed layout).
const DOMAIN: &[u8] = b"framecast.continuation_state.v1\0";

/// Why a state's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The state carries no signature.
    #[error(
        "the state is not signed: pass back the state exactly as continuation_state_snapshot \
         sent it"
    )]
    Missing,
    /// The signature is not base64url of 32 bytes.
    #[error("the state's signature is malformed")]
    Malformed,
    /// The signature does not match the kind and payload under this replica's secret.
    #[error(
        "the state's signature does not match: it was altered, or signed by a replica with \
         another store.state_secret"
    )]
    Mismatch,
}

/// Where the signing key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// `store.state_secret`.
    Configured,
    /// Random for this process: states resume only on this process.
    Random,
}

/// Signs and verifies continuation states with one secret.
#[derive(Clone)]
pub struct StateSigner {
    key: Hmac<Sha256>,
    source: SecretSource,
}

impl std::fmt::Debug for StateSigner {
    // Not derived: the key stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSigner")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl StateSigner {
    /// A signer keyed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self::keyed(secret, SecretSource::Configured)
    }

    /// A signer with 256 random bits from the operating system as its key.
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .expect("the operating system's random number generator failed");
        Self::keyed(&secret, SecretSource::Random)
    }

    fn keyed(secret: &[u8], source: SecretSource) -> Self {
        Self {
            key: Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length"),
            source,
        }
    }

    /// The signer `store` asks for: `state_secret`, or a random key (logged as such).
    pub fn from_settings(store: &crate::config::StoreSettings) -> Self {
        match &store.state_secret {
            Some(secret) => Self::new(secret.as_bytes()),
            None => {
                tracing::warn!(
                    "store.state_secret is not set: continuation states are signed with a \
                     random key made for this process, so they resume only on this replica \
                     process (set the same secret on every replica behind a router)"
                );
                Self::random()
            }
        }
    }

    /// Where the key came from.
    pub fn source(&self) -> SecretSource {
        self.source
    }

    /// `state` with its signature set (any previous one replaced).
    pub fn sign(&self, mut state: ContinuationState) -> ContinuationState {
        let tag = self.mac(&state).finalize().into_bytes();
        state.signature = Some(URL_SAFE_NO_PAD.encode(tag));
        state
    }

    /// `state` without its signature when the signature is this signer's over its kind and
    /// payload (compared in constant time); the reason otherwise.
    pub fn verify(
        &self,
        mut state: ContinuationState,
    ) -> Result<ContinuationState, SignatureError> {
        let signature = state.signature.take().ok_or(SignatureError::Missing)?;
        let tag = URL_SAFE_NO_PAD
            .decode(signature.as_bytes())
            .map_err(|_| SignatureError::Malformed)?;
        self.mac(&state)
            .verify_slice(&tag)
            .map_err(|_| SignatureError::Mismatch)?;
        Ok(state)
    }

    /// The MAC over the domain, the kind (length-prefixed) and the canonical payload.
    fn mac(&self, state: &ContinuationState) -> Hmac<Sha256> {
        let mut mac = self.key.clone();
        mac.update(DOMAIN);
        mac.update(&(state.kind.len() as u64).to_be_bytes());
        mac.update(state.kind.as_bytes());
        let mut payload = String::new();
        canonical_json(&state.payload, &mut payload);
        mac.update(payload.as_bytes());
        mac
    }
}

/// `value` as compact JSON with every object's keys in byte order, whatever order the map
/// keeps them in.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        // Strings, numbers, booleans and null have one compact form.
        leaf => out.push_str(&leaf.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state() -> ContinuationState {
        ContinuationState::new(
            "framecast.wan.v1",
            json!({
                "stream": "9f0c2b4e1d7a66c3a1b2c3d4e5f60718",
                "blob": "blob-2f1e0d9c8b7a69584736251403f2e1d0",
                "cache_slots": [1, 0, 2],
                "frames_decoded": 7,
                "latent_hw": [8, 10],
            }),
        )
    }

    fn signer() -> StateSigner {
        StateSigner::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn a_signed_state_verifies_and_comes_back_unsigned() {
        let signed = signer().sign(state());
        let signature = signed.signature.clone().unwrap();
        assert_eq!(signature.len(), 43, "32 bytes in base64url: {signature}");
        assert_eq!(signer().verify(signed.clone()), Ok(state()));
        assert_eq!(signer().sign(state()), signed, "signing is deterministic");
        // Through JSON text, as a client sees it, with the keys in another order.
        let mut text = serde_json::to_value(&signed).unwrap();
        let payload = text["payload"].as_object().unwrap().clone();
        let reversed: serde_json::Map<String, Value> = payload.into_iter().rev().collect();
        text["payload"] = Value::Object(reversed);
        let back: ContinuationState = serde_json::from_value(text).unwrap();
        assert_eq!(signer().verify(back), Ok(state()));
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let signed = signer().sign(state());
        for (field, value) in [
            ("blob", json!("blob-00000000000000000000000000000001")),
            ("stream", json!("1234-1")),
            ("frames_decoded", json!(8)),
        ] {
            let mut tampered = signed.clone();
            tampered.payload[field] = value;
            assert_eq!(
                signer().verify(tampered),
                Err(SignatureError::Mismatch),
                "{field}"
            );
        }
        let mut extra = signed.clone();
        extra.payload["extra"] = json!(null);
        assert_eq!(signer().verify(extra), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_tampered_kind_is_refused() {
        let mut tampered = signer().sign(state());
        tampered.kind = "framecast.mock.v1".into();
        assert_eq!(signer().verify(tampered), Err(SignatureError::Mismatch));
        // The kind's length is signed too: moving bytes between kind and payload fails.
        let a = signer().sign(ContinuationState::new("ab", json!("c")));
        let mut b = ContinuationState::new("a", json!("bc"));
        b.signature = a.signature;
        assert_eq!(signer().verify(b), Err(SignatureError::Mismatch));
    }

    #[test]
    fn another_secret_is_refused() {
        let signed = signer().sign(state());
        let other = StateSigner::new(b"another secret, another replica!");
        assert_eq!(other.verify(signed.clone()), Err(SignatureError::Mismatch));
        assert_eq!(
            StateSigner::random().verify(signed),
            Err(SignatureError::Mismatch)
        );
        let (a, b) = (StateSigner::random(), StateSigner::random());
        assert_eq!(b.verify(a.sign(state())), Err(SignatureError::Mismatch));
        assert_eq!(a.source(), SecretSource::Random);
    }

    #[test]
    fn a_missing_or_malformed_signature_is_refused() {
        assert_eq!(signer().verify(state()), Err(SignatureError::Missing));
        let mut malformed = state();
        malformed.signature = Some("not base64!".into());
        assert_eq!(signer().verify(malformed), Err(SignatureError::Malformed));
        let mut short = signer().sign(state());
        short.signature.as_mut().unwrap().truncate(20);
        assert_eq!(signer().verify(short), Err(SignatureError::Mismatch));
    }

    #[test]
    fn the_settings_pick_the_key() {
        let mut store = crate::config::StoreSettings::default();
        assert_eq!(
            StateSigner::from_settings(&store).source(),
            SecretSource::Random
        );
        store.state_secret = Some("0123456789abcdef0123456789abcdef".into());
        let configured = StateSigner::from_settings(&store);
        assert_eq!(configured.source(), SecretSource::Configured);
        // Two replicas with the same secret accept each other's states.
        let signed = configured.sign(state());
        assert_eq!(signer().verify(signed), Ok(state()));
        assert!(!format!("{configured:?}").contains("0123"));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let mut out = String::new();
        canonical_json(
            &json!({"b": {"d": 1, "c": [true, null]}, "a": "x\"y"}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":"x\"y","b":{"c":[true,null],"d":1}}"#);
    }
}
