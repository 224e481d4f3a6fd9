//! `sweeper`: run every minute by a schedule. Arms timers for tasks entering the timer window,
//! re-arms timers that were lost, times out attempts past their deadline (giving back their
//! slots), and drains projects whose parked tasks no released slot has admitted: at most
//! [`baton_app::SWEEP_LIMIT`] of each, and only while its invocation has time.

use std::time::{Instant, SystemTime};

use baton_app::{Baton, InfraError, SweepReport};
use baton_aws::lambda::time_left;

/// Runs one sweep, stopping [`baton_aws::lambda::FINISH_MARGIN`] before `deadline` (the
/// invocation's): a sweep cut short leaves the rest to the next one, instead of being killed
/// between a commit and its timer. An error fails the invocation; the next minute's sweep picks up the rest.
pub async fn handle(baton: &Baton, deadline: SystemTime) -> Result<SweepReport, InfraError> {
    baton
        .sweep_until(Some(Instant::now() + time_left(deadline)))
        .await
}
