//! `GET /v1/broadcast/{id}/…`: a broadcast's playlists and CMAF segments, read from
//! `broadcast.dir` where its encoder workers write them, with the content types HLS players
//! expect and cache headers that let HTTP caches and CDNs carry the load: segments and init
//! segments never change (immutable for a year), live playlists change every segment (a
//! second). Any origin may read them: a broadcast is public once started.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use framecast_common::protocol::valid_broadcast_id;

use super::AppState;
use crate::broadcast::playlist::{
    ENDED_PLAYLIST_CACHE_CONTROL, IMMUTABLE_CACHE_CONTROL, INIT_CONTENT_TYPE,
    LIVE_PLAYLIST_CACHE_CONTROL, PLAYLIST_CONTENT_TYPE, SEGMENT_CONTENT_TYPE,
};

/// What a path under a broadcast may name.
#[derive(Debug, PartialEq, Eq)]
enum Resource {
    Master,
    Playlist,
    Init,
    Segment,
}

/// Classifies `rest` (the path after the id) against the configured rung names; `None` for
/// anything else, so nothing outside the broadcast's files can be named.
fn classify(rest: &str, rungs: &[&str]) -> Option<Resource> {
    if rest == "master.m3u8" {
        return Some(Resource::Master);
    }
    let (rung, file) = rest.split_once('/')?;
    if !rungs.contains(&rung) {
        return None;
    }
    match file {
        "index.m3u8" => Some(Resource::Playlist),
        "init.mp4" => Some(Resource::Init),
        _ => {
            let digits = file.strip_prefix("seg")?.strip_suffix(".m4s")?;
            (digits.len() == 5 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then_some(Resource::Segment)
        }
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such broadcast file\n").into_response()
}

pub(super) async fn file(
    State(state): State<AppState>,
    Path((id, rest)): Path<(String, String)>,
) -> Response {
    let settings = &state.inner.sessions.config.broadcast;
    if !settings.enabled || !valid_broadcast_id(&id) {
        return not_found();
    }
    let rungs: Vec<&str> = settings.ladder.iter().map(|r| r.name.as_str()).collect();
    let Some(kind) = classify(&rest, &rungs) else {
        return not_found();
    };
    let path = settings.dir.join(&id).join(&rest);
    let Ok(bytes) = tokio::fs::read(&path).await else {
        return not_found();
    };
    let (content_type, cache) = match kind {
        // An ended playlist no longer changes.
        Resource::Playlist if bytes.ends_with(b"#EXT-X-ENDLIST\n") => {
            (PLAYLIST_CONTENT_TYPE, ENDED_PLAYLIST_CACHE_CONTROL)
        }
        Resource::Master | Resource::Playlist => {
            (PLAYLIST_CONTENT_TYPE, LIVE_PLAYLIST_CACHE_CONTROL)
        }
        Resource::Init => (INIT_CONTENT_TYPE, IMMUTABLE_CACHE_CONTROL),
        Resource::Segment => (SEGMENT_CONTENT_TYPE, IMMUTABLE_CACHE_CONTROL),
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_broadcasts_own_files_can_be_named() {
        let rungs = ["full", "half"];
        assert_eq!(classify("master.m3u8", &rungs), Some(Resource::Master));
        assert_eq!(
            classify("half/index.m3u8", &rungs),
            Some(Resource::Playlist)
        );
        assert_eq!(classify("full/init.mp4", &rungs), Some(Resource::Init));
        assert_eq!(
            classify("full/seg00042.m4s", &rungs),
            Some(Resource::Segment)
        );
        for bad in [
            "",
            "../etc/passwd",
            "full/../../x",
            "other/index.m3u8",
            "full/seg42.m4s",
            "full/seg0004a.m4s",
            "full/index.m3u8.tmp",
            "full/sub/init.mp4",
            "master.m3u8/x",
        ] {
            assert_eq!(classify(bad, &rungs), None, "{bad}");
        }
    }
}
