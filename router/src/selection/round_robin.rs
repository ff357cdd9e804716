//! `round_robin`: smooth weighted round robin (as in nginx). Every selection adds each
//! candidate's weight to its credit, picks the highest credit and takes the total weight
//! back from it, so a replica of weight `w` gets `w` of every `total` sessions, interleaved
//! with the others rather than in a burst.

use super::{Candidate, rank};

/// The chosen [`Candidate::index`], after updating every candidate's credit; `None` when
/// there are no candidates.
pub fn select(candidates: &mut [Candidate<'_>]) -> Option<usize> {
    let total: i64 = candidates.iter().map(|c| i64::from(c.weight)).sum();
    for c in candidates.iter_mut() {
        *c.round_robin_credit += i64::from(c.weight);
    }
    let chosen = candidates.iter_mut().max_by(|a, b| {
        a.round_robin_credit
            .cmp(&b.round_robin_credit)
            .then(rank(b).cmp(&rank(a)))
    })?;
    *chosen.round_robin_credit -= total;
    Some(chosen.index)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::candidates;
    use super::*;

    #[test]
    fn spreads_by_weight_without_bursts() {
        let mut credits = [0; 3];
        let picks: Vec<usize> = (0..8)
            .map(|_| {
                let mut c = candidates(
                    &[
                        (false, 1, 0, None),
                        (false, 2, 0, None),
                        (false, 1, 0, None),
                    ],
                    &mut credits,
                );
                select(&mut c).unwrap()
            })
            .collect();
        assert_eq!(picks, vec![1, 0, 2, 1, 1, 0, 2, 1]);
        assert_eq!(
            credits,
            [0, 0, 0],
            "a full cycle returns every credit to zero"
        );
    }
}
