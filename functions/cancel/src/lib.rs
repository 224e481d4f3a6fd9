//! `cancel`: a `CancelTask` event, from a client (through a source that may speak for its tenant)
//! or from Baton when a dependency failed or was cancelled. Any unfinished task → Cancelled, and
//! `TaskCancelled` so a worker running it can stop; then one `CancelTask` per dependent, so the
//! cancel reaches everything that waited on it.

use aws_lambda_events::sqs::SqsEvent;
use baton_app::{Baton, Gates};
use baton_aws::inbound::{TaskRequest, body, envelope};
use baton_aws::lambda::{Batch, execute_batch};

/// Handles a batch of `CancelTask` events.
pub async fn handle(baton: &Baton, event: SqsEvent) -> Batch {
    execute_batch(baton, &Gates::default(), event, |message| {
        let request = envelope::<TaskRequest>(body(message)?, "CancelTask")?;
        request.speaks_for(request.detail.tenant.as_str())?;
        Ok(request.detail.cancel()?)
    })
    .await
}
