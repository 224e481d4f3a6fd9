//! `rollback`: a `RollbackRequested` event. Succeeded → RolledBack, and `TaskRolledBack` carrying
//! the output so workers can compensate.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use baton_app::Baton;
use baton_aws::inbound::{TaskRequest, body, envelope};
use baton_aws::lambda::{execute, for_each_message};

/// Handles a batch of `RollbackRequested` events.
pub async fn handle(baton: &Baton, event: SqsEvent) -> SqsBatchResponse {
    for_each_message(event, |message| async move {
        let request = envelope::<TaskRequest>(body(&message)?, "RollbackRequested")?;
        execute(baton, request.detail.rollback()).await
    })
    .await
}
