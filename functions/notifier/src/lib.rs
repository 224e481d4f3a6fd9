//! `notifier`: the task table's stream. Pushes a task's new state to the WebSocket subscriptions
//! watching the task or its project, for every write a subscriber would see (a new task, a new
//! version, a park or an admission).

use baton_app::InfraError;
use baton_aws::stream::{records, task_writes};
use baton_graphql::live::Live;
use serde_json::Value;
use tracing::{Instrument, info, info_span};

/// Handles one stream batch (`{"Records": [...]}`); answers how many messages were sent. One
/// read per tenant tells whether anybody watches any of the batch's tasks or projects: when
/// nobody does, the batch is done. A task that moved several times in the batch is pushed once,
/// its state as read now. A failure fails the batch, which the stream mapping delivers again: a
/// subscriber may get a state twice, never miss the last one.
pub async fn handle(live: &Live, event: &Value) -> Result<usize, InfraError> {
    let mut moved = Vec::new();
    for write in task_writes(records(event), "left unnotified").filter(|w| w.moved()) {
        let key = (write.tenant, write.id, write.project);
        if !moved.contains(&key) {
            moved.push(key);
        }
    }
    if moved.is_empty() || !live.watched(&moved).await? {
        return Ok(0);
    }
    let mut sent = 0;
    for (tenant, id, project) in &moved {
        let span = info_span!("notify", task_id = %id, %tenant, %project);
        let to = live
            .notify(tenant, id, project)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| info!(sent = to, "subscribers notified"));
        sent += to;
    }
    Ok(sent)
}
