//! Where a Wan stream stands between segments, and how it is persisted: the generator keeps
//! the state it produced last live in memory; on request it exports that state (the last
//! clean latent frame and the VAE decoder's causal cache) as safetensors bytes into the blob
//! store, referenced from a `framecast.wan.v1` continuation state, so another process (or a
//! replica sharing the store) continues the stream identically. Continuation states are
//! validated against the generator's latent grid before use.
//!
//! Stream tokens are 128 random bits, and the exported bytes are stored under the owner the
//! caller names (the session's export owner), so they count against that session's quota.

use std::sync::Arc;

use framecast_common::protocol::ContinuationState;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::tensor_bytes;
use super::vae::DecoderState;
use super::vae::feature_cache::FeatureCache;
use crate::generate::GenerateError;
use crate::store::{BlobStore, StoreError};

/// The `kind` of Wan continuation states.
pub const WAN_STATE_KIND: &str = "framecast.wan.v1";

/// Where a stream stands between segments.
#[derive(Debug)]
pub(super) struct StreamState {
    /// Clean latents (1, z, CONTEXT_FRAMES, h, w) that condition the next segment.
    pub(super) context: Tensor,
    /// The newest clean latent frames the decoder decoded (1, z, ≤ the generator's history
    /// length, h, w): a portable checkpoint carries them so the decoder's causal caches can
    /// be rebuilt by decoding them again.
    pub(super) history: Tensor,
    /// The VAE decoder's causal caches.
    pub(super) decoder: DecoderState,
}

/// What the continuation state's payload holds; the tensors are in the blob store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct WanStatePayload {
    /// The live stream in the generator that made it (continuing there needs no bytes).
    stream: String,
    /// Blob id of the safetensors bytes, once exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blob: Option<String>,
    /// Decoder cache slot markers (see `FeatureCache::markers`).
    cache_slots: Vec<u8>,
    /// Latent frames decoded so far.
    frames_decoded: u64,
    /// Latent grid (height, width) the tensors were made for.
    latent_hw: (i64, i64),
    /// The blob holds the latent context and history only, without the decoder's caches: a
    /// resume checkpoint of a stream whose exact state is over the size limit. Restoring it
    /// rebuilds the caches by decoding the history ([`StreamState::needs_cache_rebuild`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    portable: bool,
}

/// The streams one generator can continue: the one it produced last, held live, and any
/// other whose state was exported to the blob store.
#[derive(Debug)]
pub(super) struct StreamStates {
    blobs: Arc<dyn BlobStore>,
    /// The state this generator produced last, by stream token, with its exported form once
    /// made: continuing one's own stream skips the round trip through bytes, and nothing is
    /// serialized unless someone asks for a portable state.
    latest: Option<(String, StreamState, Option<ContinuationState>)>,
    /// Where restored tensors go.
    device: Device,
    kind: Kind,
    /// The generator's latent (height, width); states made for another grid are refused.
    latent_hw: (i64, i64),
}

impl StreamStates {
    /// None held yet; exported states go to `blobs`, restored ones onto `device` in `kind`.
    pub(super) fn new(
        blobs: Arc<dyn BlobStore>,
        device: Device,
        kind: Kind,
        latent_hw: (i64, i64),
    ) -> Self {
        Self {
            blobs,
            latest: None,
            device,
            kind,
            latent_hw,
        }
    }

    /// Whether `state` is a Wan state this generator could continue.
    pub(super) fn validate(&self, state: &ContinuationState) -> Result<(), GenerateError> {
        self.parse_payload(state).map(|_| ())
    }

    /// The stream `state` names: the live one when it is this generator's latest (taken
    /// out, so it is not reused), otherwise read back from the blob store.
    pub(super) fn restore(
        &mut self,
        state: &ContinuationState,
    ) -> Result<StreamState, GenerateError> {
        let payload = self.parse_payload(state)?;
        if let Some((token, _, _)) = &self.latest
            && *token == payload.stream
        {
            return Ok(self.latest.take().expect("checked").1);
        }
        let Some(blob) = &payload.blob else {
            return Err(GenerateError::InvalidState(format!(
                "stream `{}` lives only in the worker that generated it; ask for a portable \
                 state with snapshot_state",
                payload.stream
            )));
        };
        let bytes = self
            .blobs
            .get(blob)
            .map_err(|e| GenerateError::InvalidState(e.to_string()))?
            .ok_or_else(|| {
                GenerateError::InvalidState(format!(
                    "blob `{blob}` has expired or was never stored here"
                ))
            })?;
        let tensors = tensor_bytes::from_bytes(&bytes, self.device, self.kind)
            .map_err(GenerateError::InvalidState)?;
        let mut context = None;
        let mut history = None;
        let mut cache = Vec::new();
        for (name, tensor) in tensors {
            if name == "context" {
                context = Some(tensor);
            } else if name == "history" {
                history = Some(tensor);
            } else if let Some(i) = name.strip_prefix("cache.") {
                let i: usize = i.parse().map_err(|_| {
                    GenerateError::InvalidState(format!("bad tensor name `{name}`"))
                })?;
                cache.push((i, tensor));
            }
        }
        cache.sort_by_key(|(i, _)| *i);
        let context =
            context.ok_or_else(|| GenerateError::InvalidState("no `context` tensor".into()))?;
        // Snapshots made before histories existed carry the context alone.
        let history = history.unwrap_or_else(|| context.shallow_clone());
        if payload.portable {
            // No caches: the generator rebuilds them from the history before decoding.
            return Ok(StreamState {
                context,
                history,
                decoder: DecoderState::default(),
            });
        }
        let cache = FeatureCache::restore(&payload.cache_slots, cache.into_iter().map(|(_, t)| t))
            .ok_or_else(|| {
                GenerateError::InvalidState("cache slots do not match the tensors".into())
            })?;
        Ok(StreamState {
            context,
            history,
            decoder: DecoderState {
                cache,
                frames_decoded: payload.frames_decoded,
            },
        })
    }

    fn parse_payload(&self, state: &ContinuationState) -> Result<WanStatePayload, GenerateError> {
        if state.kind != WAN_STATE_KIND {
            return Err(GenerateError::InvalidState(format!(
                "kind `{}` is not `{WAN_STATE_KIND}`",
                state.kind
            )));
        }
        let payload: WanStatePayload = serde_json::from_value(state.payload.clone())
            .map_err(|e| GenerateError::InvalidState(format!("payload: {e}")))?;
        if payload.latent_hw != self.latent_hw {
            return Err(GenerateError::InvalidState(format!(
                "state was made for a {:?} latent grid, this replica generates {:?}",
                payload.latent_hw, self.latent_hw
            )));
        }
        Ok(payload)
    }

    /// Keeps `stream` live as the latest and names it with a fresh, unguessable token.
    pub(super) fn keep(&mut self, stream: StreamState) -> ContinuationState {
        let token = crate::store::random_token();
        let payload = WanStatePayload {
            stream: token.clone(),
            blob: None,
            cache_slots: stream.decoder.cache.markers(),
            frames_decoded: stream.decoder.frames_decoded,
            latent_hw: self.latent_hw,
            portable: false,
        };
        self.latest = Some((token, stream, None));
        ContinuationState::new(
            WAN_STATE_KIND,
            serde_json::to_value(payload).expect("payload serializes"),
        )
    }

    /// A portable form of `state`: the stream it names exported under `owner` when that is
    /// the one held live here, or `state` itself when it already references its bytes. The
    /// live stream is exported only for its own token: after a restored session's state, the
    /// worker may still hold the previous session's stream, which is not this session's to
    /// take.
    pub(super) fn export(
        &mut self,
        state: &ContinuationState,
        owner: &str,
    ) -> Result<ContinuationState, GenerateError> {
        self.held_or_stored(state, |states| states.export_latest(owner))
    }

    /// `state` made portable by `write` when it names the stream held live here, or `state`
    /// itself when it already references its bytes; an error when it is neither (another
    /// worker's live stream, or one this worker has moved on from).
    fn held_or_stored(
        &mut self,
        state: &ContinuationState,
        write: impl FnOnce(&mut Self) -> Result<ContinuationState, GenerateError>,
    ) -> Result<ContinuationState, GenerateError> {
        let payload = self.parse_payload(state)?;
        match &self.latest {
            Some((token, _, _)) if *token == payload.stream => write(self),
            _ if payload.blob.is_some() => Ok(state.clone()),
            _ => Err(GenerateError::InvalidState(format!(
                "stream `{}` is no longer held by this worker",
                payload.stream
            ))),
        }
    }

    /// Writes the live stream's tensors to the blob store under `owner` (once per segment at
    /// most).
    fn export_latest(&mut self, owner: &str) -> Result<ContinuationState, GenerateError> {
        let Some((token, stream, exported)) = &self.latest else {
            return Err(GenerateError::InvalidState(
                "no stream to export: nothing generated yet".into(),
            ));
        };
        if let Some(state) = exported {
            return Ok(state.clone());
        }
        // Under the owner the session gave (its export owner, not its id), so the session's
        // end does not drop it and a later session can continue from it; the blob store's
        // time to live, capacity and per-session quota bound it (see the `store` module).
        let state = self.write(token, stream, owner, false)?;
        if let Some((_, _, exported)) = &mut self.latest {
            *exported = Some(state.clone());
        }
        Ok(state)
    }

    /// A resume checkpoint of `state` under `owner` (the session id): the exact stream
    /// when its tensors take at most `max_bytes`, else the portable form (the latent context
    /// alone; the decoder's caches are rebuilt on restore). Not kept as the stream's export:
    /// a snapshot the client asks for is stored under the export owner, which outlives the
    /// session, and a checkpoint must not.
    pub(super) fn checkpoint(
        &mut self,
        state: &ContinuationState,
        owner: &str,
        max_bytes: u64,
    ) -> Result<ContinuationState, GenerateError> {
        self.held_or_stored(state, |states| {
            let (token, stream, _) = states.latest.as_ref().expect("held: checked above");
            let portable = stream.exact_bytes() > max_bytes;
            states.write(token, stream, owner, portable)
        })
    }

    /// Stores `stream`'s tensors (only the context and history when `portable`) as one safetensors blob
    /// under `owner`, and names it in a continuation state.
    fn write(
        &self,
        token: &str,
        stream: &StreamState,
        owner: &str,
        portable: bool,
    ) -> Result<ContinuationState, GenerateError> {
        let tensors = stream.decoder.cache.tensors();
        let mut named: Vec<(String, &Tensor)> = vec![
            ("context".into(), &stream.context),
            ("history".into(), &stream.history),
        ];
        if !portable {
            named.extend(
                tensors
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| t.map(|t| (format!("cache.{i:04}"), t))),
            );
        }
        let bytes = tensor_bytes::to_bytes(&named).map_err(GenerateError::Failed)?;
        let blob = self.blobs.put(owner, bytes).map_err(|e| {
            let hint = match e {
                StoreError::TooLarge { .. } => "; raise store.blob_capacity_bytes",
                StoreError::OverQuota { .. } => "; raise store.max_blob_bytes_per_session",
                StoreError::Backend(_) => "",
            };
            GenerateError::Failed(format!("cannot store the stream state ({e}){hint}"))
        })?;
        let payload = WanStatePayload {
            stream: token.to_owned(),
            blob: Some(blob),
            cache_slots: if portable {
                Vec::new()
            } else {
                stream.decoder.cache.markers()
            },
            frames_decoded: stream.decoder.frames_decoded,
            latent_hw: self.latent_hw,
            portable,
        };
        Ok(ContinuationState::new(
            WAN_STATE_KIND,
            serde_json::to_value(payload).expect("payload serializes"),
        ))
    }
}

impl StreamState {
    /// Bytes of the exact state: the context and every decoder cache tensor.
    pub(super) fn exact_bytes(&self) -> u64 {
        let size = |t: &Tensor| (t.numel() * t.kind().elt_size_in_bytes()) as u64;
        size(&self.context)
            + self
                .decoder
                .cache
                .tensors()
                .into_iter()
                .flatten()
                .map(size)
                .sum::<u64>()
    }

    /// Whether this stream was restored from a portable checkpoint, so its decoder caches
    /// must be rebuilt (by decoding the history) before new frames are decoded.
    pub(super) fn needs_cache_rebuild(&self) -> bool {
        self.decoder.frames_decoded == 0
    }
}
