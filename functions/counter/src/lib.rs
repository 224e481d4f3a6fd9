//! The `counter` function: a project's status counters from the task table's stream
//! ([`baton_aws::counts`]). A batch is counted whole or failed whole: Lambda delivers a failed
//! batch again, and its marks make the second delivery add nothing the first one added.

use baton_app::InfraError;
use baton_aws::DynamoStore;
use baton_aws::counts::{Counted, move_of};
use baton_aws::stream::{records, task_writes};
use serde_json::Value;

/// Counts one stream batch (`{"Records": [...]}`). A record that cannot be read is logged with
/// its reason and left out (see [`task_writes`]).
pub async fn handle(store: &DynamoStore, event: &Value) -> Result<Counted, InfraError> {
    let records = records(event);
    let moves: Vec<_> = task_writes(records, "left uncounted")
        .filter_map(move_of)
        .collect();
    let counted = store.count(&moves).await?;
    tracing::info!(
        records = records.len(),
        moves = moves.len(),
        writes = counted.written,
        already = counted.already,
        "stream batch counted"
    );
    Ok(counted)
}
