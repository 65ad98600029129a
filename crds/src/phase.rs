//! The phase machines' shared shape: every kind's `status.phase` enum carries its table of
//! legal moves here, beside the enum, so that the lifecycle is part of the API the CRD reference
//! documents. The decisions that pick the next phase live in each controller's `phase.rs`.

use std::fmt;

/// A phase enum with its transition table.
pub trait Phase: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// Every phase, in lifecycle order (for exhaustive tests and the phase metric).
    const ALL: &'static [Self];
    /// The phase of an object no controller has looked at yet.
    const INITIAL: Self;

    /// The phase as written in `status.phase` and in the `phase` metric label.
    fn as_str(self) -> &'static str;

    /// Whether moving from `self` to a *different* phase `next` is legal. Staying in the same
    /// phase is always legal and never asked.
    fn allows(self, next: Self) -> bool;

    /// Moves to `next` if that is legal.
    fn transition(self, next: Self) -> Result<Self, IllegalTransition<Self>> {
        if self == next || self.allows(next) {
            Ok(next)
        } else {
            Err(IllegalTransition {
                from: self,
                to: next,
            })
        }
    }

    /// Looks a phase up by its `status.phase` string.
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|phase| phase.as_str() == s)
    }
}

/// A refused phase change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IllegalTransition<P> {
    /// The phase the object is in.
    pub from: P,
    /// The phase that was asked for.
    pub to: P,
}

impl<P: Phase> fmt::Display for IllegalTransition<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "illegal phase transition from {} to {}",
            self.from.as_str(),
            self.to.as_str()
        )
    }
}

impl<P: Phase> std::error::Error for IllegalTransition<P> {}
