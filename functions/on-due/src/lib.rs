//! `on-due`: a due timer fired. Scheduled → Running with a fresh lease, and `TaskReady` carrying it
//! for the task's tier, unless a kill switch (read once per batch), the project's pause or its
//! limit holds it back (it parks); an early timer is armed again, a duplicate is a no-op.

use aws_lambda_events::sqs::SqsEvent;
use baton_app::{Baton, Gates, draw_lease};
use baton_aws::inbound::{body, timer};
use baton_aws::lambda::{Batch, execute_batch};

/// Handles a batch of due-queue messages. The batch reads each kill switch once, when its first
/// due task needs it (see [`Gates`]).
pub async fn handle(baton: &Baton, event: SqsEvent) -> Batch {
    execute_batch(baton, &Gates::default(), event, |message| {
        Ok(timer(body(message)?, draw_lease()?)?)
    })
    .await
}
