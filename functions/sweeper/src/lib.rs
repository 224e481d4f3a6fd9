//! `sweeper`: run every minute by a schedule. Arms timers for tasks entering the timer window,
//! re-arms timers that were lost, times out attempts past their deadline (giving back their
//! slots), and drains projects whose parked tasks no released slot has admitted.

use baton_app::{Baton, InfraError, SweepReport};

/// Runs one sweep. An error fails the invocation; the next minute's sweep picks up the rest.
pub async fn handle(baton: &Baton) -> Result<SweepReport, InfraError> {
    baton.sweep().await
}
