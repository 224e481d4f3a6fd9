//! `rollback`: a `RollbackRequested` event, from a client (through a source that may speak for
//! its tenant) or from Baton walking a graph.
//! Succeeded → RolledBack (tainted), and `TaskRolledBack` carrying the output and provenance so
//! workers can compensate; then one `RollbackRequested` per dependent, so a graph of any size is
//! walked one edge per message. Reaching an unfinished dependent, it cancels it.

use aws_lambda_events::sqs::SqsEvent;
use baton_app::{Baton, Gates};
use baton_aws::inbound::{RollbackRequest, body, envelope};
use baton_aws::lambda::{Batch, execute_batch};

/// Handles a batch of `RollbackRequested` events.
pub async fn handle(baton: &Baton, event: SqsEvent) -> Batch {
    execute_batch(baton, &Gates::default(), event, |message| {
        let request = envelope::<RollbackRequest>(body(message)?, "RollbackRequested")?;
        request.speaks_for(request.detail.tenant.as_str())?;
        Ok(request.detail.command(&request.id)?)
    })
    .await
}
