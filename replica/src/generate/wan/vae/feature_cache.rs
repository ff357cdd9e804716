//! The Wan VAE's causal feature cache: what lets video be decoded (or encoded) a few frames
//! at a time exactly as if it were processed whole, and what a stream carries from segment to
//! segment (serialised through [`FeatureCache::markers`] and [`FeatureCache::tensors`]).
//!
//! Every causal convolution looks two frames into the past. The [`FeatureCache`] keeps, per
//! convolution, the last two frames of its input from the previous call; diffusers keeps the
//! same list (`feat_cache`) and visits the convolutions in the same order, so slot `i` here is
//! slot `i` there.

use tch::Tensor;

/// Frames of past input each causal convolution keeps.
pub(super) const CACHE_FRAMES: i64 = 2;

/// What one cache slot holds.
#[derive(Debug)]
pub(super) enum Slot {
    /// Never visited.
    Empty,
    /// A temporal upsampler that has seen its first chunk (diffusers' `"Rep"`).
    Rep,
    /// The last frames of the convolution's input.
    Frames(Tensor),
}

/// The causal caches of every convolution of one encoder or decoder, carried from call to
/// call (and from segment to segment while streaming).
#[derive(Debug, Default)]
pub struct FeatureCache {
    slots: Vec<Slot>,
    next: usize,
}

impl FeatureCache {
    /// Starts a new pass over the network (slot 0 again).
    pub fn rewind(&mut self) {
        self.next = 0;
    }

    /// The slot of the next convolution in visiting order (created empty on the first pass).
    pub(super) fn next_slot(&mut self) -> &mut Slot {
        let i = self.next;
        self.next += 1;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || Slot::Empty);
        }
        &mut self.slots[i]
    }

    /// The cached tensors in slot order (`None` for empty or `Rep` slots, told apart by
    /// [`Self::markers`]), for serialising a stream's state.
    pub fn tensors(&self) -> Vec<Option<&Tensor>> {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Frames(t) => Some(t),
                _ => None,
            })
            .collect()
    }

    /// One byte per slot: 0 empty, 1 `Rep`, 2 frames.
    pub fn markers(&self) -> Vec<u8> {
        self.slots
            .iter()
            .map(|s| match s {
                Slot::Empty => 0,
                Slot::Rep => 1,
                Slot::Frames(_) => 2,
            })
            .collect()
    }

    /// Rebuilds a cache from [`Self::markers`] and the tensors of the `2` slots, in order.
    pub fn restore(markers: &[u8], mut tensors: impl Iterator<Item = Tensor>) -> Option<Self> {
        let slots = markers
            .iter()
            .map(|m| match m {
                0 => Some(Slot::Empty),
                1 => Some(Slot::Rep),
                2 => tensors.next().map(Slot::Frames),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self { slots, next: 0 })
    }
}
