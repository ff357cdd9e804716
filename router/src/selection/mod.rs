//! Selection policies: which routable replica a new session goes to.
//!
//! The registry locks the replicas, keeps the routable ones and hands them here as
//! [`Candidate`]s in configuration order; each policy lives in its own module and only sees
//! those candidates, never the registry. Under every policy ties go to the primary, then to
//! configuration order.

pub mod least_sessions;
pub mod primary_first;
pub mod round_robin;

use crate::config::SelectionPolicy;

/// One routable replica as a policy sees it.
#[derive(Debug)]
pub struct Candidate<'a> {
    /// The replica's position in the configuration (the registry's index).
    pub index: usize,
    /// Preferred while it has room; wins ties under every policy.
    pub primary: bool,
    /// Relative share of sessions (at least 1) under `least_sessions` and `round_robin`.
    pub weight: u32,
    /// Live sessions this router has open to the replica.
    pub active_sessions: u64,
    /// Free workers after the queue and the sessions sent since the last capacity reading;
    /// `None` when the capacity is unknown.
    pub free_workers: Option<i64>,
    /// Smooth weighted round-robin credit, kept by the registry between selections; only
    /// [`round_robin`] reads or changes it.
    pub round_robin_credit: &'a mut i64,
}

/// The [`Candidate::index`] a new session goes to under `policy`; `None` when there are no
/// candidates.
pub fn select(policy: SelectionPolicy, candidates: &mut [Candidate<'_>]) -> Option<usize> {
    match policy {
        SelectionPolicy::PrimaryFirst => primary_first::select(candidates),
        SelectionPolicy::LeastSessions => least_sessions::select(candidates),
        SelectionPolicy::RoundRobin => round_robin::select(candidates),
    }
}

/// Tie-break key, smallest first: the primary, then configuration order.
fn rank(candidate: &Candidate<'_>) -> (bool, usize) {
    (!candidate.primary, candidate.index)
}

#[cfg(test)]
mod test_support {
    use super::Candidate;

    /// Candidates in configuration order from `(primary, weight, active_sessions,
    /// free_workers)`, borrowing their round-robin credit from `credits`.
    pub fn candidates<'a>(
        replicas: &[(bool, u32, u64, Option<i64>)],
        credits: &'a mut [i64],
    ) -> Vec<Candidate<'a>> {
        replicas
            .iter()
            .zip(credits.iter_mut())
            .enumerate()
            .map(
                |(index, (&(primary, weight, active_sessions, free_workers), credit))| Candidate {
                    index,
                    primary,
                    weight,
                    active_sessions,
                    free_workers,
                    round_robin_credit: credit,
                },
            )
            .collect()
    }
}
