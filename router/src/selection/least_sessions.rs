//! `least_sessions`: the replica with the fewest live sessions per unit of weight.

use super::{Candidate, rank};

/// The chosen [`Candidate::index`]; `None` when there are no candidates.
pub fn select(candidates: &[Candidate<'_>]) -> Option<usize> {
    candidates
        .iter()
        .min_by(|a, b| {
            // sessions_a / weight_a against sessions_b / weight_b, without division.
            let load_a = u128::from(a.active_sessions) * u128::from(b.weight);
            let load_b = u128::from(b.active_sessions) * u128::from(a.weight);
            load_a.cmp(&load_b).then(rank(a).cmp(&rank(b)))
        })
        .map(|c| c.index)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::candidates;
    use super::*;

    #[test]
    fn sessions_are_weighed_and_ties_go_to_configuration_order() {
        let mut credits = [0; 2];
        let c = candidates(&[(false, 1, 2, None), (false, 2, 3, None)], &mut credits);
        assert_eq!(select(&c), Some(1), "3 / 2 < 2 / 1");
        let c = candidates(&[(false, 1, 2, None), (false, 2, 4, None)], &mut credits);
        assert_eq!(select(&c), Some(0), "tie");
    }
}
