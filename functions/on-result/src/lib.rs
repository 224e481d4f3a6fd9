//! `on-result`: a worker's `TaskResult`. Running → Succeeded (with the result's provenance, in
//! the same write), or Scheduled again after backoff while attempts remain, else Failed. A result
//! for an old attempt is rejected as stale, one without its attempt's lease (`INVALID_LEASE`)
//! moves nothing, whoever put it on the bus. A success releases the dependents whose dependencies
//! have all succeeded; a failure sends a cancel to each dependent.

use aws_lambda_events::sqs::SqsEvent;
use baton_app::{Baton, Gates};
use baton_aws::inbound::{TaskResult, body, envelope};
use baton_aws::lambda::{Batch, execute_batch};

/// Handles a batch of `TaskResult` events.
pub async fn handle(baton: &Baton, event: SqsEvent) -> Batch {
    execute_batch(baton, &Gates::default(), event, |message| {
        let result = envelope::<TaskResult>(body(message)?, "TaskResult")?;
        Ok(result.detail.command()?)
    })
    .await
}
