//! When an invocation stops starting new work: Lambda ends an invocation at its deadline,
//! whatever it is doing, so each Lambda checks before every unit of work (an ingest file, a
//! transform batch, a load file) whether the time left is still more than a margin, and
//! otherwise returns what it did with `"complete": false` for the next invocation to go on.

use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};

/// The environment variable every Lambda reads its margin from.
pub const MARGIN_VAR: &str = "DEADLINE_MARGIN_SECONDS";

/// The margin when none is set: more than one unit of work takes at the default file bound
/// (`make bench` measures a 1M-row file in a few seconds at every stage).
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(60);

/// An invocation's deadline and the margin kept before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Option<SystemTime>,
    margin: Duration,
}

impl Deadline {
    /// No deadline: a direct call, a test.
    pub const NONE: Deadline = Deadline {
        at: None,
        margin: Duration::ZERO,
    };

    /// From the invocation context's deadline in milliseconds since the epoch; 0 (what a
    /// context built outside the Lambda runtime holds) is no deadline.
    pub fn from_context_ms(deadline_ms: u64, margin: Duration) -> Self {
        Deadline {
            at: (deadline_ms > 0)
                .then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms)),
            margin,
        }
    }

    pub fn at(at: SystemTime, margin: Duration) -> Self {
        Deadline {
            at: Some(at),
            margin,
        }
    }

    /// The time left before the deadline, if there is one (zero once it has passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.at.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }

    /// True when the time left is no more than the margin: finish the unit in hand, start no
    /// other. Callers still do one unit per invocation whatever the margin, so that a margin
    /// larger than the timeout slows a run down rather than stopping it.
    pub fn reached(&self) -> bool {
        self.remaining().is_some_and(|left| left <= self.margin)
    }
}

/// The margin from [`MARGIN_VAR`] read through `env`, or [`DEFAULT_MARGIN`].
pub fn margin_from(env: impl Fn(&str) -> Option<String>) -> Result<Duration> {
    seconds_setting(&env, MARGIN_VAR, DEFAULT_MARGIN)
}

/// A setting given in seconds (a number >= 0, fractions allowed), or `default` when unset.
pub fn seconds_setting(
    env: impl Fn(&str) -> Option<String>,
    name: &str,
    default: Duration,
) -> Result<Duration> {
    match env(name) {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                Error::Configuration(format!(
                    "{name} is {s:?}: expected a number of seconds >= 0"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lambda::fixed_env;

    #[test]
    fn no_deadline_is_never_reached() {
        assert!(!Deadline::NONE.reached());
        assert!(!Deadline::from_context_ms(0, Duration::from_secs(60)).reached());
        assert_eq!(Deadline::NONE.remaining(), None);
    }

    #[test]
    fn reached_when_the_time_left_is_within_the_margin() {
        let in_a_minute = SystemTime::now() + Duration::from_secs(60);
        assert!(!Deadline::at(in_a_minute, Duration::from_secs(30)).reached());
        assert!(Deadline::at(in_a_minute, Duration::from_secs(90)).reached());
        let past = SystemTime::now() - Duration::from_secs(1);
        assert!(Deadline::at(past, Duration::ZERO).reached());
        assert_eq!(
            Deadline::at(past, Duration::ZERO).remaining(),
            Some(Duration::ZERO)
        );
        let ms = in_a_minute
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let d = Deadline::from_context_ms(ms, Duration::from_secs(30));
        assert!(d.remaining().unwrap() > Duration::from_secs(58));
        assert!(!d.reached());
    }

    #[test]
    fn margin_is_read_and_checked() {
        assert_eq!(margin_from(fixed_env(&[])).unwrap(), DEFAULT_MARGIN);
        assert_eq!(
            margin_from(fixed_env(&[(MARGIN_VAR, "2.5")])).unwrap(),
            Duration::from_millis(2500)
        );
        let e = margin_from(fixed_env(&[(MARGIN_VAR, "soon")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration: DEADLINE_MARGIN_SECONDS is \"soon\": expected a number of seconds >= 0"
        );
    }
}
