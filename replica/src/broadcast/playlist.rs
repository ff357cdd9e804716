//! Live HLS playlists for a ladder: the multivariant (master) playlist naming each rung, and
//! one sliding-window media playlist per rung listing its newest CMAF segments.
//!
//! Rendering only; serving and storage are elsewhere. Everything a playlist holds is checked
//! when it enters ([`master_playlist`], [`MediaPlaylist::new`], [`MediaPlaylist::push`]), so a
//! rendered playlist is always well-formed: one tag or URI per line, no name that could break
//! a line or a quoted attribute.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

#[cfg(test)]
mod tests;

/// `Content-Type` of playlists (RFC 8216 4).
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";
/// `Content-Type` of CMAF media segments (`moof` + `mdat`).
pub const SEGMENT_CONTENT_TYPE: &str = "video/iso.segment";
/// `Content-Type` of the init segment (`ftyp` + `moov`).
pub const INIT_CONTENT_TYPE: &str = "video/mp4";

/// `Cache-Control` of segments and init segments: a URI never names other bytes, so caches
/// and CDNs may keep them as long as they like and never revalidate.
pub const IMMUTABLE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of a live media or master playlist. Players reload a live playlist about
/// once per target duration (half of one after an unchanged reload); a cached copy older than
/// that hides new segments and drags every viewer behind the live edge, so a cache may keep
/// it at most about half a target duration: one second for segments of two or more.
pub const LIVE_PLAYLIST_CACHE_CONTROL: &str = "public, max-age=1";
/// `Cache-Control` of an ended playlist: it will never change again.
pub const ENDED_PLAYLIST_CACHE_CONTROL: &str = "public, max-age=3600";

/// `EXT-X-VERSION` 7: fMP4 segments with `EXT-X-MAP` in every playlist (RFC 8216 7).
const VERSION: u32 = 7;

/// A playlist could not be built as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlaylistError {
    /// The ladder has no rungs: a master playlist without variants plays nothing.
    #[error("a master playlist needs at least one rung")]
    NoRungs,
    /// A rung's name, size, bandwidth or codecs cannot appear in a playlist.
    #[error("rung `{name}`: {reason}")]
    InvalidRung {
        /// The rung's name, as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The frame rate is not a positive finite number.
    #[error("frame rate {0} is not positive")]
    InvalidFrameRate(f64),
    /// A segment or init URI is empty, starts with `#` or holds whitespace, a quote or a
    /// control character.
    #[error("URI {0:?} cannot appear in a playlist")]
    InvalidUri(String),
    /// A segment's duration is not a positive finite number.
    #[error("segment duration {0} is not positive")]
    InvalidDuration(f64),
    /// A window of zero segments, or a target duration of zero seconds.
    #[error("a media playlist needs a window and a target duration of at least 1")]
    EmptyWindow,
    /// Segments must arrive in sequence order with no gap: a player numbers them by their
    /// position after `EXT-X-MEDIA-SEQUENCE`.
    #[error("segment {got} pushed where segment {expected} was due")]
    OutOfOrder {
        /// The sequence number the playlist needs next.
        expected: u64,
        /// The one pushed.
        got: u64,
    },
    /// The playlist was ended; no segment can follow `EXT-X-ENDLIST`.
    #[error("the playlist has ended")]
    Ended,
}

/// One rung (variant) of the ladder as the master playlist advertises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RungInfo {
    /// The rung's directory: its media playlist is `{name}/index.m3u8`.
    pub name: String,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// Peak bit rate (`BANDWIDTH`), which players use to pick a rung that will not stall.
    pub bandwidth_bps: u64,
    /// Mean bit rate (`AVERAGE-BANDWIDTH`), when measured.
    pub average_bandwidth_bps: Option<u64>,
    /// RFC 6381 codecs of the real stream, e.g. `avc1.42c01e`
    /// ([`CodecInvariant::codec_string`](super::invariant::CodecInvariant::codec_string)).
    pub codecs: String,
}

impl RungInfo {
    fn validate(&self) -> Result<(), PlaylistError> {
        let invalid = |reason| PlaylistError::InvalidRung {
            name: self.name.clone(),
            reason,
        };
        let name_ok = !self.name.is_empty()
            && self.name != "."
            && self.name != ".."
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(invalid("name must be a path segment of [A-Za-z0-9._-]"));
        }
        if self.width == 0 || self.height == 0 {
            return Err(invalid("resolution must not be zero"));
        }
        if self.bandwidth_bps == 0 {
            return Err(invalid("bandwidth must not be zero"));
        }
        let codecs_ok = !self.codecs.is_empty()
            && self
                .codecs
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"');
        if !codecs_ok {
            return Err(invalid("codecs must be printable ASCII without quotes"));
        }
        Ok(())
    }
}

/// Renders the master playlist: one `EXT-X-STREAM-INF` per rung, in the order given.
///
/// The order is the caller's because players start with the first variant listed (Apple's
/// authoring guidance), so the ladder puts first the rung a new viewer should start on.
pub fn master_playlist(rungs: &[RungInfo], frame_rate: f64) -> Result<String, PlaylistError> {
    if rungs.is_empty() {
        return Err(PlaylistError::NoRungs);
    }
    if !(frame_rate.is_finite() && frame_rate > 0.0) {
        return Err(PlaylistError::InvalidFrameRate(frame_rate));
    }
    let mut out = format!("#EXTM3U\n#EXT-X-VERSION:{VERSION}\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for rung in rungs {
        rung.validate()?;
        // Writing to a String cannot fail.
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", rung.bandwidth_bps);
        if let Some(average) = rung.average_bandwidth_bps {
            let _ = write!(out, ",AVERAGE-BANDWIDTH={average}");
        }
        let _ = writeln!(
            out,
            ",RESOLUTION={}x{},FRAME-RATE={frame_rate:.3},CODECS=\"{}\"\n{}/index.m3u8",
            rung.width, rung.height, rung.codecs, rung.name
        );
    }
    Ok(out)
}

/// A finished segment of one rung.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaSegment {
    /// The segment's index in the rung, counting from the stream's first.
    pub sequence: u64,
    /// Its media duration in seconds.
    pub duration_s: f64,
    /// Its URI, relative to the media playlist.
    pub uri: String,
}

/// A rung's live media playlist: the newest `window` segments, then `EXT-X-ENDLIST` once the
/// stream ends.
///
/// The window should span at least three target durations plus one segment: a player starts
/// about three target durations from the live edge, and RFC 8216 6.2.2 forbids removing a
/// segment that would leave less than that.
#[derive(Debug, Clone)]
pub struct MediaPlaylist {
    window: usize,
    target_duration: u32,
    init_uri: String,
    segments: VecDeque<MediaSegment>,
    next_sequence: Option<u64>,
    ended: bool,
}

impl MediaPlaylist {
    /// An empty playlist keeping `window` segments, whose segments last about
    /// `target_duration_s` seconds, decoded with the init segment at `init_uri`.
    pub fn new(
        window: usize,
        target_duration_s: u32,
        init_uri: impl Into<String>,
    ) -> Result<Self, PlaylistError> {
        if window == 0 || target_duration_s == 0 {
            return Err(PlaylistError::EmptyWindow);
        }
        let init_uri = init_uri.into();
        validate_uri(&init_uri)?;
        Ok(Self {
            window,
            target_duration: target_duration_s,
            init_uri,
            segments: VecDeque::with_capacity(window),
            next_sequence: None,
            ended: false,
        })
    }

    /// Appends the next segment, dropping the oldest once the window is full.
    ///
    /// The first push sets the starting sequence; each later one must be the next number.
    /// Workers finish out of order: put their segments through a [`Reorder`] first.
    pub fn push(&mut self, segment: MediaSegment) -> Result<(), PlaylistError> {
        if self.ended {
            return Err(PlaylistError::Ended);
        }
        if let Some(expected) = self.next_sequence
            && segment.sequence != expected
        {
            return Err(PlaylistError::OutOfOrder {
                expected,
                got: segment.sequence,
            });
        }
        if !(segment.duration_s.is_finite() && segment.duration_s > 0.0) {
            return Err(PlaylistError::InvalidDuration(segment.duration_s));
        }
        validate_uri(&segment.uri)?;
        // The target never shrinks (RFC 8216 6.2.1 forbids changing it, and a player holding
        // an older copy must still find it honest). It is the ceiling of the duration as
        // rendered, so a segment of 2.0000001 s written as 2.000 keeps a target of 2.
        // (A float-to-integer `as` saturates.)
        let rendered_duration = (segment.duration_s * 1000.0).round() / 1000.0;
        self.target_duration = self.target_duration.max(rendered_duration.ceil() as u32);
        self.next_sequence = Some(segment.sequence + 1);
        if self.segments.len() == self.window {
            self.segments.pop_front();
        }
        self.segments.push_back(segment);
        Ok(())
    }

    /// Marks the stream finished: players stop reloading and may play to the end.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Whether [`end`](Self::end) was called.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// `EXT-X-TARGETDURATION`: the configured one, or the longest segment's ceiling if longer.
    pub fn target_duration(&self) -> u32 {
        self.target_duration
    }

    /// The `Cache-Control` to serve this playlist with.
    pub fn cache_control(&self) -> &'static str {
        if self.ended {
            ENDED_PLAYLIST_CACHE_CONTROL
        } else {
            LIVE_PLAYLIST_CACHE_CONTROL
        }
    }

    /// Renders the playlist as it stands.
    pub fn render(&self) -> String {
        // Before the first segment there is nothing to play; a player retries such a playlist.
        let media_sequence = self.segments.front().map_or(0, |s| s.sequence);
        let mut out = format!(
            "#EXTM3U\n#EXT-X-VERSION:{VERSION}\n#EXT-X-TARGETDURATION:{}\n\
             #EXT-X-MEDIA-SEQUENCE:{media_sequence}\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"{}\"\n",
            self.target_duration, self.init_uri
        );
        for segment in &self.segments {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "#EXTINF:{:.3},\n{}", segment.duration_s, segment.uri);
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }
}

/// A URI fits on its own line and inside a quoted attribute.
fn validate_uri(uri: &str) -> Result<(), PlaylistError> {
    let ok = !uri.is_empty()
        && !uri.starts_with('#')
        && uri.bytes().all(|b| b.is_ascii_graphic() && b != b'"');
    if ok {
        Ok(())
    } else {
        Err(PlaylistError::InvalidUri(uri.to_owned()))
    }
}

/// A [`Reorder`] refused a completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReorderError {
    /// The sequence was already released.
    #[error("sequence {sequence} was already released (next is {next})")]
    Stale {
        /// The sequence inserted.
        sequence: u64,
        /// The next sequence to release.
        next: u64,
    },
    /// The sequence is already held.
    #[error("sequence {0} is already held")]
    Duplicate(u64),
    /// Holding one more would exceed the bound: the segment due next is stuck, and waiting
    /// longer would only grow memory.
    #[error("{capacity} completions are held waiting for sequence {next}")]
    Full {
        /// How many completions may be held.
        capacity: usize,
        /// The sequence everything waits for.
        next: u64,
    },
}

/// Puts out-of-order completions back in sequence: parallel workers finish segments in any
/// order, while a media playlist takes them only in order.
#[derive(Debug)]
pub struct Reorder<T> {
    next: u64,
    held: BTreeMap<u64, T>,
    capacity: usize,
}

impl<T> Reorder<T> {
    /// Expects `first` next, holding at most `capacity` completions that arrive ahead of it.
    pub fn new(first: u64, capacity: usize) -> Self {
        Self {
            next: first,
            held: BTreeMap::new(),
            capacity,
        }
    }

    /// Takes the completion of `sequence` and releases, in order, the contiguous run that
    /// starts at the next expected sequence (empty while that one is still missing).
    ///
    /// On an error `item` is dropped and nothing changes.
    pub fn insert(&mut self, sequence: u64, item: T) -> Result<Vec<(u64, T)>, ReorderError> {
        if sequence < self.next {
            return Err(ReorderError::Stale {
                sequence,
                next: self.next,
            });
        }
        if self.held.contains_key(&sequence) {
            return Err(ReorderError::Duplicate(sequence));
        }
        if sequence != self.next {
            if self.held.len() >= self.capacity {
                return Err(ReorderError::Full {
                    capacity: self.capacity,
                    next: self.next,
                });
            }
            self.held.insert(sequence, item);
            return Ok(Vec::new());
        }
        let mut released = vec![(sequence, item)];
        self.next += 1;
        while let Some(item) = self.held.remove(&self.next) {
            released.push((self.next, item));
            self.next += 1;
        }
        Ok(released)
    }

    /// The sequence the next release starts with.
    pub fn next_sequence(&self) -> u64 {
        self.next
    }

    /// How many completions wait for an earlier one.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}
