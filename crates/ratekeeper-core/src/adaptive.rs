//! Adaptive limits: when the upstream a limit protects keeps saying "slow
//! down", the limit lowers its own rate (or slots) and climbs back slowly,
//! as TCP does with its window (AIMD: multiplicative decrease, additive
//! increase).
//!
//! An adaptive limit keeps a *scale* between [`MIN_SCALE`] and 1 that
//! applies to its rate (a rate limit) or its slots (a concurrency limit).
//! Every report of throttling (a pause) multiplies the scale by
//! `decrease_factor`, at most once per [`ADAPT_STEP`] (the workers that saw
//! the same burst of 429s lower it once, not once each). Every
//! [`ADAPT_STEP`] after that the scale grows by `ADAPT_STEP /
//! recovery_seconds` until it is 1 again: from nothing back to the
//! configured value in `recovery_seconds`. The scale changes in steps, so
//! between two steps the limit is an ordinary limit with an exact rate.

use std::time::Duration;

use crate::error::LimitError;

/// How often an adaptive limit climbs back, and the shortest time between
/// two decreases.
pub const ADAPT_STEP: Duration = Duration::from_secs(1);
/// The lowest an adaptive limit goes, as a share of its configured value.
pub const MIN_SCALE: f64 = 0.01;
/// The longest `recovery_seconds` allowed: a day.
pub const MAX_RECOVERY_SECONDS: f64 = 86_400.0;

/// How a limit adapts to throttling reports.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Adaptive {
    /// Each report multiplies the effective value by this: above 0, below 1
    /// (default 0.7).
    pub decrease_factor: f64,
    /// Seconds the effective value takes to climb from nothing back to the
    /// configured value: 1 to 86 400 (default 30).
    pub recovery_seconds: f64,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            decrease_factor: 0.7,
            recovery_seconds: 30.0,
        }
    }
}

impl Adaptive {
    /// Checks both parameters, naming the one at fault.
    pub fn check(&self) -> Result<(), LimitError> {
        let invalid = |reason: String| Err(LimitError::InvalidAdaptive { reason });
        if !(self.decrease_factor > 0.0 && self.decrease_factor < 1.0) {
            return invalid(format!(
                "decrease_factor must be above 0 and below 1, got {}",
                self.decrease_factor
            ));
        }
        if !(1.0..=MAX_RECOVERY_SECONDS).contains(&self.recovery_seconds) {
            return invalid(format!(
                "recovery_seconds must be between 1 and {MAX_RECOVERY_SECONDS}, got {}",
                self.recovery_seconds
            ));
        }
        Ok(())
    }

    /// How much the scale grows in one step.
    pub(crate) fn step_increase(&self) -> f64 {
        ADAPT_STEP.as_secs_f64() / self.recovery_seconds
    }
}

/// An adaptive limit as shown: its parameters and where it stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveView {
    /// Its parameters.
    pub adaptive: Adaptive,
    /// The share of the configured value in force now (1: all of it).
    pub scale: f64,
    /// The value in force now: the rate (slots per second) of a rate
    /// limit, the slots of a concurrency limit.
    pub effective: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_out_of_range_are_refused_naming_the_parameter() {
        for (factor, recovery, field) in [
            (0.0, 30.0, "decrease_factor"),
            (1.0, 30.0, "decrease_factor"),
            (f64::NAN, 30.0, "decrease_factor"),
            (0.5, 0.5, "recovery_seconds"),
            (0.5, 1e6, "recovery_seconds"),
            (0.5, f64::NAN, "recovery_seconds"),
        ] {
            let adaptive = Adaptive {
                decrease_factor: factor,
                recovery_seconds: recovery,
            };
            let err = adaptive.check().unwrap_err();
            assert_eq!(err.code(), "invalid_adaptive");
            assert!(err.to_string().contains(field), "{err}");
        }
        assert!(Adaptive::default().check().is_ok());
    }
}
