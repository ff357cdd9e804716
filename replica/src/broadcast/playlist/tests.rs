use super::*;

/// Checks the line structure every playlist must have and returns its lines: `#EXTM3U`
/// first, then only tags, URIs and empty lines.
fn lines(playlist: &str) -> Vec<&str> {
    assert!(playlist.ends_with('\n'), "{playlist}");
    let lines: Vec<&str> = playlist.lines().collect();
    assert_eq!(lines.first(), Some(&"#EXTM3U"), "{playlist}");
    for line in &lines {
        let is_tag = line.starts_with("#EXT");
        let is_uri = !line.starts_with('#') && !line.contains(char::is_whitespace);
        assert!(is_tag || is_uri, "line {line:?} of\n{playlist}");
    }
    // Every EXT-X-STREAM-INF and EXTINF is followed by its URI.
    for pair in lines.windows(2) {
        if pair[0].starts_with("#EXT-X-STREAM-INF:") || pair[0].starts_with("#EXTINF:") {
            assert!(
                !pair[1].starts_with('#') && !pair[1].is_empty(),
                "{playlist}"
            );
        }
    }
    lines
}

/// The value of the first `#TAG:` line.
fn tag<'a>(lines: &[&'a str], name: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
}

fn rung(name: &str, width: u32, height: u32, bandwidth_bps: u64) -> RungInfo {
    RungInfo {
        name: name.to_string(),
        width,
        height,
        bandwidth_bps,
        average_bandwidth_bps: None,
        codecs: "avc1.42c01e".to_string(),
    }
}

fn segment(sequence: u64, duration_s: f64) -> MediaSegment {
    MediaSegment {
        sequence,
        duration_s,
        uri: format!("seg-{sequence}.m4s"),
    }
}

#[test]
fn master_lists_every_rung_in_order() {
    let rungs = [
        RungInfo {
            average_bandwidth_bps: Some(2_000_000),
            codecs: "avc1.64001f".to_string(),
            ..rung("720p", 1280, 720, 3_000_000)
        },
        rung("360p", 640, 360, 800_000),
    ];
    let text = master_playlist(&rungs, 24.0).unwrap();
    let lines = lines(&text);
    assert_eq!(tag(&lines, "#EXT-X-VERSION"), Some("7"));
    assert!(lines.contains(&"#EXT-X-INDEPENDENT-SEGMENTS"));
    let variants: Vec<(&str, &str)> = lines
        .windows(2)
        .filter_map(|w| Some((w[0].strip_prefix("#EXT-X-STREAM-INF:")?, w[1])))
        .collect();
    assert_eq!(
        variants,
        [
            (
                "BANDWIDTH=3000000,AVERAGE-BANDWIDTH=2000000,RESOLUTION=1280x720,\
                 FRAME-RATE=24.000,CODECS=\"avc1.64001f\"",
                "720p/index.m3u8"
            ),
            (
                "BANDWIDTH=800000,RESOLUTION=640x360,FRAME-RATE=24.000,CODECS=\"avc1.42c01e\"",
                "360p/index.m3u8"
            ),
        ]
    );
}

#[test]
fn master_rejects_what_would_break_the_playlist() {
    let good = rung("r0", 320, 180, 400_000);
    let reject = |rung: RungInfo| master_playlist(&[good.clone(), rung], 12.0);
    for name in ["", ".", "..", "a/b", "a b", "x\n#EXT-X-ENDLIST", "é"] {
        assert!(
            matches!(
                reject(rung(name, 320, 180, 1)),
                Err(PlaylistError::InvalidRung { .. })
            ),
            "{name:?}"
        );
    }
    assert!(reject(rung("r1", 0, 180, 1)).is_err());
    assert!(reject(rung("r1", 320, 180, 0)).is_err());
    for codecs in ["", "avc1\"", "avc1.42c01e, mp4a.40.2"] {
        let bad = RungInfo {
            codecs: codecs.to_string(),
            ..good.clone()
        };
        assert!(reject(bad).is_err(), "{codecs:?}");
    }
    assert_eq!(master_playlist(&[], 12.0), Err(PlaylistError::NoRungs));
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(master_playlist(std::slice::from_ref(&good), rate).is_err());
    }
    // A multi-codec value without spaces is fine.
    let both = RungInfo {
        codecs: "avc1.42c01e,mp4a.40.2".to_string(),
        ..good.clone()
    };
    assert!(
        master_playlist(&[both], 12.5)
            .unwrap()
            .contains("FRAME-RATE=12.500,")
    );
}

#[test]
fn media_playlist_window_slides() {
    let mut playlist = MediaPlaylist::new(4, 2, "init.mp4").unwrap();
    for sequence in 0..10 {
        playlist.push(segment(sequence, 2.0)).unwrap();
    }
    let text = playlist.render();
    let lines = lines(&text);
    assert_eq!(tag(&lines, "#EXT-X-VERSION"), Some("7"));
    assert_eq!(tag(&lines, "#EXT-X-TARGETDURATION"), Some("2"));
    assert_eq!(tag(&lines, "#EXT-X-MEDIA-SEQUENCE"), Some("6"));
    assert_eq!(tag(&lines, "#EXT-X-MAP"), Some("URI=\"init.mp4\""));
    let uris: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(uris, ["seg-6.m4s", "seg-7.m4s", "seg-8.m4s", "seg-9.m4s"]);
    assert_eq!(lines.iter().filter(|l| **l == "#EXTINF:2.000,").count(), 4);
    assert!(!text.contains("#EXT-X-ENDLIST"));
    assert_eq!(playlist.cache_control(), LIVE_PLAYLIST_CACHE_CONTROL);
}

#[test]
fn empty_media_playlist_renders() {
    let playlist = MediaPlaylist::new(3, 2, "init.mp4").unwrap();
    let text = playlist.render();
    let lines = lines(&text);
    assert_eq!(tag(&lines, "#EXT-X-MEDIA-SEQUENCE"), Some("0"));
    assert!(!lines.iter().any(|l| l.starts_with("#EXTINF")));
}

#[test]
fn target_duration_is_the_ceiling_and_never_shrinks() {
    let mut playlist = MediaPlaylist::new(2, 2, "init.mp4").unwrap();
    playlist.push(segment(5, 2.0)).unwrap();
    // Rendered as 2.000: no reason to raise the target.
    playlist.push(segment(6, 2.000_000_1)).unwrap();
    assert_eq!(playlist.target_duration(), 2);
    playlist.push(segment(7, 2.2)).unwrap();
    assert_eq!(playlist.target_duration(), 3);
    // The long segment slides out; the target stays.
    playlist.push(segment(8, 1.0)).unwrap();
    playlist.push(segment(9, 1.0)).unwrap();
    let text = playlist.render();
    let lines = lines(&text);
    assert_eq!(tag(&lines, "#EXT-X-TARGETDURATION"), Some("3"));
    assert_eq!(tag(&lines, "#EXTINF"), Some("1.000,"));
}

#[test]
fn endlist_only_after_end() {
    let mut playlist = MediaPlaylist::new(4, 1, "init.mp4").unwrap();
    playlist.push(segment(0, 0.5)).unwrap();
    assert!(!playlist.render().contains("#EXT-X-ENDLIST"));
    playlist.end();
    assert!(playlist.is_ended());
    let text = playlist.render();
    assert_eq!(lines(&text).last(), Some(&"#EXT-X-ENDLIST"));
    assert_eq!(playlist.cache_control(), ENDED_PLAYLIST_CACHE_CONTROL);
    assert_eq!(playlist.push(segment(1, 0.5)), Err(PlaylistError::Ended));
}

#[test]
fn pushes_out_of_order_or_invalid_are_errors() {
    let mut playlist = MediaPlaylist::new(4, 2, "init.mp4").unwrap();
    playlist.push(segment(3, 2.0)).unwrap();
    let out_of_order = |expected, got| Err(PlaylistError::OutOfOrder { expected, got });
    assert_eq!(playlist.push(segment(3, 2.0)), out_of_order(4, 3));
    assert_eq!(playlist.push(segment(2, 2.0)), out_of_order(4, 2));
    assert_eq!(playlist.push(segment(5, 2.0)), out_of_order(4, 5));
    for duration in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            playlist.push(segment(4, duration)),
            Err(PlaylistError::InvalidDuration(_))
        ));
    }
    for uri in ["", "#seg", "seg 4.m4s", "seg\n4.m4s", "seg\"4"] {
        let bad = MediaSegment {
            uri: uri.to_string(),
            ..segment(4, 2.0)
        };
        assert!(
            matches!(playlist.push(bad), Err(PlaylistError::InvalidUri(_))),
            "{uri:?}"
        );
    }
    // Nothing refused changed the playlist.
    playlist.push(segment(4, 2.0)).unwrap();
    let text = playlist.render();
    assert_eq!(
        lines(&text)
            .iter()
            .filter(|l| l.starts_with("#EXTINF"))
            .count(),
        2
    );
}

#[test]
fn media_playlist_rejects_bad_settings() {
    assert_eq!(
        MediaPlaylist::new(0, 2, "init.mp4").unwrap_err(),
        PlaylistError::EmptyWindow
    );
    assert_eq!(
        MediaPlaylist::new(4, 0, "init.mp4").unwrap_err(),
        PlaylistError::EmptyWindow
    );
    assert!(matches!(
        MediaPlaylist::new(4, 2, "in\"it.mp4"),
        Err(PlaylistError::InvalidUri(_))
    ));
}

#[test]
fn reorder_releases_contiguous_runs() {
    let mut reorder = Reorder::new(10, 8);
    assert_eq!(reorder.insert(12, 'c'), Ok(vec![]));
    assert_eq!(reorder.insert(11, 'b'), Ok(vec![]));
    assert_eq!(reorder.insert(14, 'e'), Ok(vec![]));
    assert_eq!(reorder.held(), 3);
    assert_eq!(
        reorder.insert(10, 'a'),
        Ok(vec![(10, 'a'), (11, 'b'), (12, 'c')])
    );
    assert_eq!(reorder.next_sequence(), 13);
    assert_eq!(reorder.insert(13, 'd'), Ok(vec![(13, 'd'), (14, 'e')]));
    assert_eq!(reorder.insert(15, 'f'), Ok(vec![(15, 'f')]));
    assert_eq!(reorder.held(), 0);
    assert_eq!(
        reorder.insert(12, 'x'),
        Err(ReorderError::Stale {
            sequence: 12,
            next: 16
        })
    );
    assert_eq!(reorder.insert(17, 'h'), Ok(vec![]));
    assert_eq!(reorder.insert(17, 'h'), Err(ReorderError::Duplicate(17)));
}

#[test]
fn reorder_refuses_beyond_its_bound() {
    let mut reorder = Reorder::new(0, 3);
    for sequence in 1..=3 {
        assert_eq!(reorder.insert(sequence, sequence), Ok(vec![]));
    }
    assert_eq!(
        reorder.insert(4, 4),
        Err(ReorderError::Full {
            capacity: 3,
            next: 0
        })
    );
    assert_eq!(reorder.held(), 3);
    // The one everything waits for is always taken, and frees the held ones.
    let released: Vec<u64> = reorder
        .insert(0, 0)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(released, [0, 1, 2, 3]);
    assert_eq!(reorder.insert(4, 4), Ok(vec![(4, 4)]));
}

#[test]
fn reorder_feeds_a_media_playlist() {
    let mut reorder = Reorder::new(0, 16);
    let mut playlist = MediaPlaylist::new(6, 2, "init.mp4").unwrap();
    // Workers finishing in a scrambled order.
    for sequence in [2, 0, 1, 5, 3, 4, 7, 6] {
        for (_, segment) in reorder.insert(sequence, segment(sequence, 2.0)).unwrap() {
            playlist.push(segment).unwrap();
        }
    }
    let text = playlist.render();
    let lines = lines(&text);
    assert_eq!(tag(&lines, "#EXT-X-MEDIA-SEQUENCE"), Some("2"));
    assert_eq!(lines.last(), Some(&"seg-7.m4s"));
}

#[test]
fn content_types_and_cache_policies() {
    assert_eq!(PLAYLIST_CONTENT_TYPE, "application/vnd.apple.mpegurl");
    assert_eq!(SEGMENT_CONTENT_TYPE, "video/iso.segment");
    assert_eq!(INIT_CONTENT_TYPE, "video/mp4");
    assert!(IMMUTABLE_CACHE_CONTROL.contains("immutable"));
    assert_eq!(LIVE_PLAYLIST_CACHE_CONTROL, "public, max-age=1");
}
