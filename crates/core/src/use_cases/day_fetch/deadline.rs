//! The Lambda deadline less a margin: when an invocation must have stopped.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// When the invocation must have stopped: the Lambda deadline less a margin, or none.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Option<Instant>,
    pub(crate) margin: Duration,
}

impl Deadline {
    /// No deadline (the command line).
    pub fn none() -> Self {
        Self {
            at: None,
            margin: Duration::ZERO,
        }
    }

    pub fn at(at: Instant, margin: Duration) -> Self {
        Self {
            at: Some(at),
            margin,
        }
    }

    /// From the Lambda context's deadline (milliseconds since the Unix epoch).
    pub fn from_epoch_millis(deadline_ms: u64, margin: Duration) -> Self {
        let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms);
        let left = deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Self::at(Instant::now() + left, margin)
    }

    /// Time left before the stop point (deadline less margin); `None` is unlimited.
    pub fn time_left(&self) -> Option<Duration> {
        self.at.map(|at| {
            at.checked_sub(self.margin).map_or(Duration::ZERO, |stop| {
                stop.saturating_duration_since(Instant::now())
            })
        })
    }

    /// Whether a new page request may start.
    pub fn allows_request(&self) -> bool {
        self.time_left().is_none_or(|left| !left.is_zero())
    }

    /// Time left before the deadline itself; `None` is unlimited.
    pub fn remaining(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// The stop point as an instant, for senders bounded by it.
    pub fn stop_at(&self) -> Option<Instant> {
        self.at.map(|at| at.checked_sub(self.margin).unwrap_or(at))
    }

    /// How long the next request attempt may take: never past the stop point.
    /// `None` when the stop point has passed.
    pub(crate) fn attempt_timeout(&self, configured: Duration) -> Option<Duration> {
        match self.time_left() {
            None => Some(configured),
            Some(left) if left.is_zero() => None,
            Some(left) => Some(configured.min(left)),
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn deadline_stops_requests_inside_the_margin() {
        assert!(Deadline::none().allows_request());
        assert_eq!(Deadline::none().time_left(), None);
        let soon = Deadline::at(
            Instant::now() + Duration::from_secs(30),
            Duration::from_secs(60),
        );
        assert!(!soon.allows_request());
        let later = Deadline::at(
            Instant::now() + Duration::from_secs(120),
            Duration::from_secs(60),
        );
        assert!(later.allows_request());
        assert!(later.time_left().unwrap() <= Duration::from_secs(60));
        // No attempt runs past the stop point (the deadline less the margin).
        assert_eq!(soon.attempt_timeout(Duration::from_secs(120)), None);
        let timeout = later.attempt_timeout(Duration::from_secs(120)).unwrap();
        assert!(timeout <= Duration::from_secs(60) && timeout > Duration::from_secs(59));
        assert_eq!(
            later.attempt_timeout(Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            Deadline::none().attempt_timeout(Duration::from_secs(120)),
            Some(Duration::from_secs(120))
        );
        let past = Deadline::from_epoch_millis(0, Duration::ZERO);
        assert!(!past.allows_request());
    }
}
