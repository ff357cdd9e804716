//! Synthetic shapes-world clips with known answers: a soft-edged shape on a flat background,
//! moving with wrap-around, plus deterministic noise.

use super::*;

const RED: [u8; 3] = [220, 30, 30];
const GREEN: [u8; 3] = [30, 190, 50];
const BLUE: [u8; 3] = [40, 70, 230];
const YELLOW: [u8; 3] = [245, 220, 30];
const PURPLE: [u8; 3] = [150, 40, 200];
const ORANGE: [u8; 3] = [250, 130, 20];
const BLACK: [u8; 3] = [15, 15, 15];
const WHITE: [u8; 3] = [240, 240, 240];
const GRAY: [u8; 3] = [128, 128, 128];

fn palette() -> Palette {
    let named = |list: &[(&str, [u8; 3])]| list.iter().map(|&(n, c)| (n.to_string(), c)).collect();
    Palette {
        objects: named(&[
            ("red", RED),
            ("green", GREEN),
            ("blue", BLUE),
            ("yellow", YELLOW),
            ("purple", PURPLE),
            ("orange", ORANGE),
        ]),
        backgrounds: named(&[
            ("black", BLACK),
            ("white", WHITE),
            ("gray", GRAY),
            ("blue", BLUE),
            ("green", GREEN),
        ]),
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Disc,
    Square,
    Triangle,
}

/// A deterministic noise source (Knuth's MMIX LCG).
struct Lcg(u64);

impl Lcg {
    /// Uniform in `[-amplitude, amplitude]`.
    fn noise(&mut self, amplitude: i32) -> i32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if amplitude == 0 {
            return 0;
        }
        (self.0 >> 33) as i32 % (2 * amplitude + 1) - amplitude
    }
}

struct Scene {
    width: u32,
    height: u32,
    background: [u8; 3],
    object: [u8; 3],
    shape: Shape,
    /// Half the object's extent, in pixels.
    radius: f32,
    /// How many pixels the edge is blurred over.
    edge: f32,
    noise: i32,
}

impl Scene {
    fn new(object: [u8; 3], background: [u8; 3]) -> Scene {
        Scene {
            width: 64,
            height: 64,
            background,
            object,
            shape: Shape::Disc,
            // About a fifth of the frame across.
            radius: 6.5,
            edge: 2.0,
            noise: 8,
        }
    }

    /// One frame with the object centred at `(cx, cy)`.
    fn frame(&self, cx: f32, cy: f32, rng: &mut Lcg) -> Vec<u8> {
        let (w, h) = (self.width as f32, self.height as f32);
        let mut out = Vec::with_capacity((self.width * self.height * 3) as usize);
        for y in 0..self.height {
            for x in 0..self.width {
                let dx = wrap(x as f32 - cx, w);
                let dy = wrap(y as f32 - cy, h);
                // Signed distance inside the shape's edge (positive inside).
                let inside = match self.shape {
                    Shape::Disc => self.radius - dx.hypot(dy),
                    Shape::Square => self.radius - dx.abs().max(dy.abs()),
                    // Apex up; the base at dy = radius, the sides at slope 2.
                    Shape::Triangle => (self.radius - dy).min((dy + self.radius) / 2.0 - dx.abs()),
                };
                let alpha = (inside / self.edge + 0.5).clamp(0.0, 1.0);
                for c in 0..3 {
                    let mixed = alpha * f32::from(self.object[c])
                        + (1.0 - alpha) * f32::from(self.background[c]);
                    out.push((mixed.round() as i32 + rng.noise(self.noise)).clamp(0, 255) as u8);
                }
            }
        }
        out
    }

    /// `frames` frames moving from `start` by `velocity` a frame.
    fn clip(&self, start: (f32, f32), velocity: (f32, f32), frames: usize) -> Vec<Vec<u8>> {
        let mut rng = Lcg(7);
        (0..frames)
            .map(|t| {
                let t = t as f32;
                self.frame(start.0 + velocity.0 * t, start.1 + velocity.1 * t, &mut rng)
            })
            .collect()
    }

    fn read(&self, clip: &[Vec<u8>]) -> ClipReading {
        let frames: Vec<&[u8]> = clip.iter().map(Vec::as_slice).collect();
        read_clip(&frames, self.width, self.height, &palette())
    }
}

fn assert_near_wrapped(actual: (f32, f32), expected: (f32, f32), size: (f32, f32), tol: f32) {
    let dx = wrap(actual.0 - expected.0, size.0);
    let dy = wrap(actual.1 - expected.1, size.1);
    assert!(
        dx.abs() <= tol && dy.abs() <= tol,
        "{actual:?} is not {expected:?}"
    );
}

#[test]
fn palette_names_the_nearest_colour() {
    let palette = palette();
    assert_eq!(palette.nearest_object([200, 50, 40]), Some("red"));
    assert_eq!(palette.nearest_object([240, 140, 40]), Some("orange"));
    assert_eq!(palette.nearest_background([20, 10, 25]), Some("black"));
    assert_eq!(palette.nearest_background([120, 135, 125]), Some("gray"));
    assert_eq!(Palette::default().nearest_object(RED), None);
}

#[test]
fn palette_reads_from_json() {
    let json = r#"{"objects": [["red", [220, 30, 30]]], "backgrounds": [["black", [15, 15, 15]]]}"#;
    let palette: Palette = serde_json::from_str(json).unwrap();
    assert_eq!(palette.objects, [("red".to_string(), RED)]);
}

#[test]
fn motion_round_trips_through_its_name() {
    for motion in [
        Motion::Left,
        Motion::Right,
        Motion::Up,
        Motion::Down,
        Motion::Still,
    ] {
        assert_eq!(motion.as_str().parse::<Motion>(), Ok(motion));
        assert_eq!(motion.to_string(), motion.as_str());
    }
    assert_eq!(" Left ".parse::<Motion>(), Ok(Motion::Left));
    assert!("sideways".parse::<Motion>().is_err());
}

#[test]
fn frame_reading_finds_background_object_centre_and_area() {
    let scene = Scene::new(RED, GRAY);
    let frame = scene.frame(20.0, 37.0, &mut Lcg(1));
    let reading = read_frame(&frame, 64, 64);
    assert!(
        distance(reading.background, GRAY) < 6.0,
        "{:?}",
        reading.background
    );
    assert!(
        distance(reading.object.unwrap(), RED) < 12.0,
        "{:?}",
        reading.object
    );
    assert_near_wrapped(reading.centroid.unwrap(), (20.0, 37.0), (64.0, 64.0), 0.3);
    let expected = std::f32::consts::PI * 6.5 * 6.5 / 4096.0;
    assert!(
        (reading.area_fraction - expected).abs() < 0.15 * expected,
        "area {} vs {expected}",
        reading.area_fraction
    );
}

#[test]
fn an_object_split_across_the_corner_is_centred_where_it_is() {
    let scene = Scene::new(YELLOW, BLACK);
    // Centred on the corner: a quarter of the disc in each corner of the frame.
    let reading = read_frame(&scene.frame(0.5, 63.0, &mut Lcg(2)), 64, 64);
    assert_near_wrapped(reading.centroid.unwrap(), (0.5, 63.0), (64.0, 64.0), 0.3);
    assert!(distance(reading.object.unwrap(), YELLOW) < 12.0);
}

#[test]
fn squares_and_triangles_are_read_too() {
    for shape in [Shape::Square, Shape::Triangle] {
        let scene = Scene {
            shape,
            ..Scene::new(PURPLE, WHITE)
        };
        let reading = read_frame(&scene.frame(40.0, 10.0, &mut Lcg(3)), 64, 64);
        assert!(distance(reading.object.unwrap(), PURPLE) < 12.0);
        // A triangle's centroid sits below the middle of its box.
        assert_near_wrapped(reading.centroid.unwrap(), (40.0, 10.0), (64.0, 64.0), 2.5);
    }
}

#[test]
fn a_frame_of_only_background_has_no_object() {
    let scene = Scene {
        radius: 0.0,
        noise: 20,
        ..Scene::new(RED, GRAY)
    };
    let reading = read_frame(&scene.frame(10.0, 10.0, &mut Lcg(4)), 64, 64);
    assert_eq!(reading.object, None);
    assert_eq!(reading.centroid, None);
    assert_eq!(reading.area_fraction, 0.0);
    assert!(distance(reading.background, GRAY) < 6.0);
}

#[test]
fn empty_or_short_input_reads_as_nothing() {
    assert_eq!(read_frame(&[], 0, 0), FrameReading::default());
    assert_eq!(read_frame(&[1, 2, 3], 64, 64), FrameReading::default());
    assert_eq!(read_clip(&[], 64, 64, &palette()), ClipReading::default());
    assert_eq!(
        read_clip(&[&[]], 0, 0, &Palette::default()),
        ClipReading::default()
    );
    assert_eq!(seam_score(&[], 4, None), None);
}

#[test]
fn clips_name_object_and_background_colours() {
    let palette = palette();
    for (object, object_rgb) in &palette.objects {
        for (background, background_rgb) in &palette.backgrounds {
            if object == background {
                continue;
            }
            let scene = Scene::new(*object_rgb, *background_rgb);
            let reading = scene.read(&scene.clip((30.0, 30.0), (1.3, 0.0), 6));
            assert_eq!(
                reading.object_colour.as_deref(),
                Some(object.as_str()),
                "on {background}"
            );
            assert_eq!(
                reading.background.as_deref(),
                Some(background.as_str()),
                "{object} on"
            );
        }
    }
}

#[test]
fn each_direction_is_detected_across_the_wrap_edge() {
    let scene = Scene::new(ORANGE, BLUE);
    // Each starts a few pixels from the edge it moves towards and crosses it.
    let cases = [
        (Motion::Right, (58.0, 20.0), (1.3, 0.0)),
        (Motion::Left, (5.0, 40.0), (-1.1, 0.0)),
        (Motion::Up, (32.0, 4.0), (0.0, -1.7)),
        (Motion::Down, (12.0, 60.0), (0.0, 1.5)),
        // Mostly right, a little down: the dominant axis wins.
        (Motion::Right, (60.0, 60.0), (1.4, 0.4)),
    ];
    for (motion, start, velocity) in cases {
        let reading = scene.read(&scene.clip(start, velocity, 24));
        assert_eq!(
            reading.motion,
            Some(motion),
            "{start:?} {velocity:?}: {reading:?}"
        );
        assert_near_wrapped(reading.velocity, velocity, (64.0, 64.0), 0.15);
    }
}

#[test]
fn a_still_object_is_still_and_slow_motion_is_not() {
    let scene = Scene {
        noise: 20,
        ..Scene::new(GREEN, BLACK)
    };
    let reading = scene.read(&scene.clip((63.0, 0.0), (0.0, 0.0), 24));
    assert_eq!(reading.motion, Some(Motion::Still), "{reading:?}");
    let reading = scene.read(&scene.clip((63.0, 0.0), (0.0, 1.1), 24));
    assert_eq!(reading.motion, Some(Motion::Down), "{reading:?}");
}

#[test]
fn the_still_threshold_scales_with_frame_size() {
    // 0.5 px a frame moves at 64 px, but is still at 128 px (under 0.006 * 128 = 0.77).
    let small = Scene::new(BLUE, WHITE);
    assert_eq!(
        small.read(&small.clip((10.0, 10.0), (0.5, 0.0), 16)).motion,
        Some(Motion::Right)
    );
    let large = Scene {
        width: 128,
        height: 96,
        radius: 13.0,
        ..Scene::new(BLUE, WHITE)
    };
    assert_eq!(
        large.read(&large.clip((10.0, 10.0), (0.5, 0.0), 16)).motion,
        Some(Motion::Still)
    );
    assert_eq!(
        large
            .read(&large.clip((10.0, 90.0), (0.0, -2.5), 16))
            .motion,
        Some(Motion::Up)
    );
}

#[test]
fn a_misread_frame_does_not_swing_the_motion() {
    let scene = Scene::new(RED, WHITE);
    let mut clip = scene.clip((10.0, 30.0), (-1.2, 0.0), 16);
    // One frame where the object appears far to the right.
    clip[8] = scene.frame(40.0, 30.0, &mut Lcg(5));
    let reading = scene.read(&clip);
    assert_eq!(reading.motion, Some(Motion::Left), "{reading:?}");
}

#[test]
fn motion_needs_the_object_in_consecutive_frames() {
    let scene = Scene::new(RED, WHITE);
    let mut clip = scene.clip((10.0, 30.0), (1.2, 0.0), 4);
    let blank = Scene {
        radius: 0.0,
        ..Scene::new(RED, WHITE)
    };
    clip[1] = blank.frame(0.0, 0.0, &mut Lcg(6));
    clip[3] = clip[1].clone();
    let reading = scene.read(&clip);
    assert_eq!(reading.motion, None);
    assert_eq!(reading.velocity, (0.0, 0.0));
    assert_eq!(reading.object_colour.as_deref(), Some("red"));
}

#[test]
fn a_continuous_clip_has_smooth_seams() {
    let scene = Scene::new(YELLOW, GRAY);
    let clip = scene.clip((0.0, 20.0), (1.5, 0.3), 32);
    let frames: Vec<&[u8]> = clip.iter().map(Vec::as_slice).collect();
    let score = seam_score(&frames, 8, None).unwrap();
    assert!((0.8..1.25).contains(&score), "score {score}");
}

#[test]
fn a_jump_at_a_segment_boundary_scores_high() {
    // Light noise: independent per-pixel noise adds equally to every step and dilutes the
    // ratio (at +-8 a jump scores about 1.8).
    let scene = Scene {
        noise: 2,
        ..Scene::new(YELLOW, GRAY)
    };
    let mut clip = scene.clip((0.0, 20.0), (1.5, 0.0), 8);
    // The second segment starts somewhere else entirely.
    clip.extend(scene.clip((30.0, 50.0), (1.5, 0.0), 8));
    let frames: Vec<&[u8]> = clip.iter().map(Vec::as_slice).collect();
    let score = seam_score(&frames, 8, None).unwrap();
    assert!(score > 3.0, "score {score}");
}

#[test]
fn the_prompt_switch_boundary_is_not_a_seam() {
    // A smooth segment, then a cut to another scene (a prompt switch) that continues smoothly.
    let before = Scene {
        noise: 2,
        ..Scene::new(YELLOW, GRAY)
    };
    let after = Scene {
        noise: 2,
        ..Scene::new(RED, WHITE)
    };
    let mut clip = before.clip((0.0, 20.0), (1.5, 0.0), 8);
    clip.extend(after.clip((30.0, 50.0), (1.5, 0.0), 16));
    let frames: Vec<&[u8]> = clip.iter().map(Vec::as_slice).collect();
    let counted = seam_score(&frames, 8, None).unwrap();
    assert!(counted > 3.0, "score {counted}");
    let switch_skipped = seam_score(&frames, 8, Some(1)).unwrap();
    assert!(
        (0.5..1.5).contains(&switch_skipped),
        "score {switch_skipped}"
    );
    // Skipping a boundary that is not the cut leaves the cut in.
    assert!(seam_score(&frames, 8, Some(2)).unwrap() > 3.0);
    // With the only boundary skipped there is nothing to score.
    assert_eq!(seam_score(&frames[..16], 8, Some(1)), None);
}

#[test]
fn seam_score_needs_a_boundary_and_change_within_segments() {
    let scene = Scene::new(YELLOW, GRAY);
    let clip = scene.clip((0.0, 20.0), (1.5, 0.0), 8);
    let frames: Vec<&[u8]> = clip.iter().map(Vec::as_slice).collect();
    assert_eq!(
        seam_score(&frames, 8, None),
        None,
        "no boundary inside 8 frames"
    );
    assert_eq!(seam_score(&frames, 0, None), None);
    // Every step is a boundary: nothing within segments to compare with.
    assert_eq!(seam_score(&frames, 1, None), None);
    let frozen = vec![frames[0]; 16];
    assert_eq!(
        seam_score(&frozen, 8, None),
        None,
        "no change within segments"
    );
}

#[test]
fn a_blurry_noisy_clip_still_reads_right() {
    let scene = Scene {
        edge: 6.0,
        noise: 24,
        ..Scene::new(PURPLE, GRAY)
    };
    let reading = scene.read(&scene.clip((50.0, 50.0), (0.0, -1.2), 24));
    assert_eq!(
        reading.object_colour.as_deref(),
        Some("purple"),
        "{reading:?}"
    );
    assert_eq!(reading.background.as_deref(), Some("gray"));
    assert_eq!(reading.motion, Some(Motion::Up));
    assert_near_wrapped(reading.velocity, (0.0, -1.2), (64.0, 64.0), 0.2);
}
