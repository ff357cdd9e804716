//! A session's lifecycle as an explicit transition table, so an illegal jump (streaming
//! after an error, queueing twice) is a typed error in tests and a logged bug in production
//! instead of silent corruption.
//!
//! ```text
//! initializing ─▶ queued ─▶ gpu_binding ─▶ active ─▶ complete
//!      │            │            │            ├────▶ error
//!      │            │            │            └────▶ timeout
//!      └────────────┴────────────┴─▶ rejected / error / timeout / complete
//! ```

use serde::Serialize;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Connected; waiting for `session_init_v2`.
    Initializing,
    /// Waiting for a free worker.
    Queued,
    /// A worker was granted; the generator is being bound to the session.
    GpuBinding,
    /// Generating and streaming.
    Active,
    /// Ended normally (stop, cap, client left).
    Complete,
    /// Ended by a failure.
    Error,
    /// Ended because the client was idle (or never sent its first frame).
    Timeout,
    /// Refused (capacity, bad first frame, no worker in time).
    Rejected,
}

/// Every state, for exhaustive tests and metrics.
pub const ALL_STATES: [SessionState; 8] = [
    SessionState::Initializing,
    SessionState::Queued,
    SessionState::GpuBinding,
    SessionState::Active,
    SessionState::Complete,
    SessionState::Error,
    SessionState::Timeout,
    SessionState::Rejected,
];

/// A transition the table does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal session transition {from:?} -> {to:?}")]
pub struct InvalidTransition {
    /// The current state.
    pub from: SessionState,
    /// The requested state.
    pub to: SessionState,
}

impl SessionState {
    /// Whether the session has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SessionState::Complete
                | SessionState::Error
                | SessionState::Timeout
                | SessionState::Rejected
        )
    }

    /// The transition table.
    pub fn can_become(self, to: SessionState) -> bool {
        use SessionState::*;
        match self {
            Initializing => matches!(
                to,
                Queued | GpuBinding | Rejected | Error | Timeout | Complete
            ),
            Queued => matches!(to, GpuBinding | Rejected | Error | Timeout | Complete),
            GpuBinding => matches!(to, Active | Error | Complete),
            Active => matches!(to, Complete | Error | Timeout),
            Complete | Error | Timeout | Rejected => false,
        }
    }

    /// Moves to `to` if the table allows it.
    pub fn transition(&mut self, to: SessionState) -> Result<(), InvalidTransition> {
        if self.can_become(to) {
            *self = to;
            Ok(())
        } else {
            Err(InvalidTransition { from: *self, to })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SessionState::*;
    use super::*;

    /// The table written out edge by edge; the test checks all 64 pairs against it.
    const LEGAL: [(SessionState, SessionState); 17] = [
        (Initializing, Queued),
        (Initializing, GpuBinding),
        (Initializing, Rejected),
        (Initializing, Error),
        (Initializing, Timeout),
        (Initializing, Complete),
        (Queued, GpuBinding),
        (Queued, Rejected),
        (Queued, Error),
        (Queued, Timeout),
        (Queued, Complete),
        (GpuBinding, Active),
        (GpuBinding, Error),
        (GpuBinding, Complete),
        (Active, Complete),
        (Active, Error),
        (Active, Timeout),
    ];

    #[test]
    fn every_edge_is_legal_or_illegal_as_specified() {
        for from in ALL_STATES {
            for to in ALL_STATES {
                let expected = LEGAL.contains(&(from, to));
                let mut state = from;
                let result = state.transition(to);
                assert_eq!(result.is_ok(), expected, "{from:?} -> {to:?}");
                if expected {
                    assert_eq!(state, to);
                } else {
                    assert_eq!(result, Err(InvalidTransition { from, to }));
                    assert_eq!(state, from, "a refused transition leaves the state alone");
                }
            }
        }
    }

    #[test]
    fn terminal_states_have_no_way_out() {
        for s in ALL_STATES {
            let outgoing = ALL_STATES.iter().filter(|t| s.can_become(**t)).count();
            assert_eq!(s.is_terminal(), outgoing == 0, "{s:?}");
        }
    }

    #[test]
    fn states_serialize_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&GpuBinding).unwrap(),
            r#""gpu_binding""#
        );
    }
}
