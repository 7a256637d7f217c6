//! The debug log's account of a busy stretch of the loop.

use std::time::{Duration, Instant};

use engine::batch::HostTimes;

/// A stretch of steps without an idle moment, for the debug log: where the
/// host spent it, split between the scheduler's steps and the loop around
/// them (frames read, tokens written).
pub(super) struct Stretch {
    pub(super) started: Instant,
    pub(super) host: HostTimes,
    steps: u64,
    /// When the last step returned.
    last_step_end: Instant,
    /// Time in the loop between steps (from one step's return to the
    /// next one's call)...
    between: Duration,
    /// ...of which writing the steps' tokens and ends.
    pub(super) write: Duration,
    /// The longest step (a stall: a kernel compiled, a long prefill).
    slowest: Duration,
}

impl Stretch {
    /// A stretch whose first step starts at `started`, the scheduler's host
    /// times being `host`.
    pub(super) fn new(started: Instant, host: HostTimes) -> Stretch {
        Stretch {
            started,
            host,
            steps: 0,
            last_step_end: started,
            between: Duration::ZERO,
            write: Duration::ZERO,
            slowest: Duration::ZERO,
        }
    }

    /// Counts a scheduler step that ran from `started` to `ended`.
    pub(super) fn stepped(&mut self, started: Instant, ended: Instant) {
        self.between += started - self.last_step_end;
        self.last_step_end = ended;
        self.slowest = self.slowest.max(ended - started);
        self.steps += 1;
    }

    /// Logs the stretch at debug level, per step, given the scheduler's
    /// host times at its end.
    pub(super) fn log(&self, host: HostTimes) {
        let steps = self.steps.max(1) as f64;
        let decode_steps = (host.steps - self.host.steps).max(1) as f64;
        let per = |d: Duration, n: f64| (d.as_secs_f64() * 1e6 / n).round() as u64;
        tracing::debug!(
            steps = self.steps,
            ms = self.started.elapsed().as_millis() as u64,
            build_us = per(host.build - self.host.build, decode_steps),
            dispatch_us = per(host.dispatch - self.host.dispatch, decode_steps),
            wait_us = per(host.wait - self.host.wait, decode_steps),
            mask_us = per(host.mask - self.host.mask, decode_steps),
            between_steps_us = per(self.between, steps),
            write_us = per(self.write, steps),
            slowest_step_us = self.slowest.as_micros() as u64,
            "busy stretch"
        );
    }
}
