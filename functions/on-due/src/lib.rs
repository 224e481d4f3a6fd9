//! `on-due`: a due timer fired. Scheduled → Running with a fresh lease, and `TaskReady` carrying it
//! for the task's tier; an early timer is armed again, a duplicate is a no-op.

use aws_lambda_events::sqs::SqsEvent;
use baton_app::{Baton, draw_lease};
use baton_aws::inbound::{body, timer};
use baton_aws::lambda::{Batch, execute, for_each_message};

/// Handles a batch of due-queue messages.
pub async fn handle(baton: &Baton, event: SqsEvent) -> Batch {
    for_each_message(event, |message| async move {
        execute(baton, timer(body(&message)?, draw_lease()?)?).await
    })
    .await
}
