//! `notifier`: every lifecycle event Baton publishes (through its own queue). Pushes the task's
//! new state to the WebSocket subscriptions watching the task or its project.

use aws_lambda_events::sqs::SqsEvent;
use baton_aws::inbound::{body, status_change};
use baton_aws::lambda::{Batch, for_each_message};
use baton_graphql::live::Live;
use tracing::{Instrument, info, info_span};

/// Handles a batch of lifecycle events. One read per tenant tells whether anybody watches any
/// of the batch's tasks or projects: when nobody does, the events are done; should that read
/// fail, each event reads for itself.
pub async fn handle(live: &Live, event: SqsEvent) -> Batch {
    let moved: Vec<_> = event
        .records
        .iter()
        .filter_map(|message| status_change(body(message).ok()?).ok())
        .map(|change| {
            (
                change.detail.tenant,
                change.detail.task_id,
                change.detail.project,
            )
        })
        .collect();
    let unwatched = matches!(live.watched(&moved).await, Ok(false));
    for_each_message(event, |message| async move {
        let change = status_change(body(&message)?)?.detail;
        if unwatched {
            return Ok(());
        }
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
