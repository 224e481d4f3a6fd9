//! The `counter` function: a project's status counters from the task table's stream
//! ([`baton_aws::counts`]). A batch is counted whole or failed whole: Lambda delivers a failed
//! batch again, and its marks make the second delivery add nothing the first one added.

use baton_app::InfraError;
use baton_aws::DynamoStore;
use baton_aws::counts::{Counted, move_of};
use baton_aws::stream::task_write;
use serde_json::Value;

/// Counts one stream batch (`{"Records": [...]}`). A record that cannot be read is logged with
/// its reason and left out: a stream record cannot be parked apart from its shard, and one the
/// table wrote is read the same way on every delivery.
pub async fn handle(store: &DynamoStore, event: &Value) -> Result<Counted, InfraError> {
    let records = event["Records"].as_array().map_or(&[][..], Vec::as_slice);
    let mut moves = Vec::with_capacity(records.len());
    for record in records {
        match task_write(record) {
            Ok(Some(write)) => moves.extend(move_of(write)),
            Ok(None) => {}
            Err(reason) => tracing::error!(
                code = "UNREADABLE_STREAM_RECORD",
                event_id = record["eventID"].as_str().unwrap_or_default(),
                %reason,
                "stream record left uncounted"
            ),
        }
    }
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
