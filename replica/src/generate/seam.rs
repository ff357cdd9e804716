//! How visible the join between two segments is: the seam score is the frame difference
//! across a segment boundary over the mean difference between consecutive frames inside
//! segments. A continuous stream scores about 1 (the boundary looks like any other pair of
//! frames); a cut to unrelated content scores far higher. Used to compare a stream resumed
//! from a checkpoint against the same stream generated in one go.

/// Mean absolute difference of two RGB frames of one size, in 0..=255.
pub fn frame_difference(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "frames of one size");
    if a.is_empty() {
        return 0.0;
    }
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.len() as f64
}

/// A boundary's frame difference, and that over the within-segment mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seam {
    /// Difference between the last frame before the boundary and the first after it.
    pub boundary: f64,
    /// `boundary` over the mean difference of consecutive frames inside segments.
    pub score: f64,
}

impl Seam {
    /// The mean difference of consecutive frames inside each of `segments`.
    pub fn within(segments: &[&Vec<Vec<u8>>]) -> f64 {
        let pairs: Vec<f64> = segments
            .iter()
            .flat_map(|frames| frames.windows(2).map(|w| frame_difference(&w[0], &w[1])))
            .collect();
        if pairs.is_empty() {
            0.0
        } else {
            pairs.iter().sum::<f64>() / pairs.len() as f64
        }
    }

    /// The seam between the segment `before` and the one `after` it, against `within`.
    pub fn at_boundary(before: &[Vec<u8>], after: &[Vec<u8>], within: f64) -> Self {
        let (Some(last), Some(first)) = (before.last(), after.first()) else {
            return Self {
                boundary: 0.0,
                score: 0.0,
            };
        };
        let boundary = frame_difference(last, first);
        Self {
            boundary,
            score: if within > 0.0 {
                boundary / within
            } else {
                f64::INFINITY
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boundary_like_the_frames_around_it_scores_one_and_a_cut_scores_more() {
        let ramp = |start: u8| -> Vec<Vec<u8>> { (0..4).map(|i| vec![start + 2 * i; 6]).collect() };
        let (a, b) = (ramp(10), ramp(18));
        let within = Seam::within(&[&a, &b]);
        assert_eq!(within, 2.0);
        let smooth = Seam::at_boundary(&a, &b, within);
        assert_eq!(
            smooth,
            Seam {
                boundary: 2.0,
                score: 1.0
            }
        );
        let cut = Seam::at_boundary(&a, &ramp(100), within);
        assert_eq!(cut.boundary, 84.0);
        assert_eq!(cut.score, 42.0);
        assert_eq!(frame_difference(&[0, 255], &[255, 0]), 255.0);
    }
}
