//! `notifier`: every lifecycle event Baton publishes (through its own queue). Pushes the task's
//! new state to the WebSocket subscriptions watching the task or its project.

use aws_lambda_events::sqs::SqsEvent;
use baton_aws::inbound::{body, status_change};
use baton_aws::lambda::{Batch, for_each_message};
use baton_graphql::live::Live;
use tracing::{Instrument, info, info_span};

/// Handles a batch of lifecycle events.
pub async fn handle(live: &Live, event: SqsEvent) -> Batch {
    for_each_message(event, |message| async move {
        let change = status_change(body(&message)?)?.detail;
        let span = info_span!("notify", task_id = %change.task_id, tenant = %change.tenant,
            project = %change.project, version = change.version);
        let sent = live
            .notify(&change.tenant, &change.task_id, &change.project)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| info!(sent, "subscribers notified"));
        Ok(())
    })
    .await
}
