//! `cancel`: a `CancelTask` event, from a client (through a source that may speak for its tenant)
//! or from Baton when a dependency failed or was cancelled. Any unfinished task → Cancelled, and
//! `TaskCancelled` so a worker running it can stop; then one `CancelTask` per dependent, so the
//! cancel reaches everything that waited on it.

use aws_lambda_events::sqs::SqsEvent;
use baton_app::Baton;
use baton_aws::inbound::{TaskRequest, body, envelope};
use baton_aws::lambda::{Batch, execute, for_each_command};

/// Handles a batch of `CancelTask` events.
pub async fn handle(baton: &Baton, event: SqsEvent) -> Batch {
    for_each_command(baton, event, |baton, message| async move {
        let request = envelope::<TaskRequest>(body(&message)?, "CancelTask")?;
        request.speaks_for(request.detail.tenant.as_str())?;
        execute(&baton, request.detail.cancel()?).await
    })
    .await
}
