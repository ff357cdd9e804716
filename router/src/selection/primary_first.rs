//! `primary_first`: the first primary with room; when none has room, the replica with the
//! most room (unknown capacity counts as one free worker).

use super::{Candidate, rank};

/// The chosen [`Candidate::index`]; `None` when there are no candidates.
pub fn select(candidates: &[Candidate<'_>]) -> Option<usize> {
    let primary_with_room = candidates
        .iter()
        .find(|c| c.primary && c.free_workers.is_none_or(|free| free > 0));
    if let Some(primary) = primary_with_room {
        return Some(primary.index);
    }
    let free_workers = |c: &Candidate<'_>| c.free_workers.unwrap_or(1);
    candidates
        .iter()
        .max_by(|a, b| {
            free_workers(a)
                .cmp(&free_workers(b))
                .then(rank(b).cmp(&rank(a)))
        })
        .map(|c| c.index)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::candidates;
    use super::*;

    #[test]
    fn a_primary_with_room_or_unknown_capacity_wins() {
        let mut credits = [0; 3];
        let c = candidates(
            &[
                (false, 1, 0, Some(5)),
                (true, 1, 0, Some(0)),
                (true, 1, 0, None),
            ],
            &mut credits,
        );
        assert_eq!(select(&c), Some(2));
    }

    #[test]
    fn without_a_primary_with_room_the_most_room_wins_ties_to_the_primary() {
        let mut credits = [0; 3];
        let c = candidates(
            &[
                (false, 1, 0, Some(-1)),
                (false, 1, 0, Some(0)),
                (true, 1, 0, Some(0)),
            ],
            &mut credits,
        );
        assert_eq!(select(&c), Some(2));
        assert_eq!(select(&[]), None);
    }
}
