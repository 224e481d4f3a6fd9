//! A project's status counters, kept from the task table's stream: no transition writes them.
//!
//! Each stream batch adds up how its task records move the counters (a status entered up, the
//! one left down) and writes the sums per project, in transactions of at most
//! [`PROJECTS_PER_WRITE`] projects. `n_RUNNING` is not among them: it is the slot counter, which
//! a move into or out of a slot changes with the task's own write. A record written by an item
//! layout before [`CURRENT_LAYOUT`] is not counted either: that version counted its moves itself.
//!
//! Exactly once, though a stream batch may come again (a failed or timed-out invocation is
//! retried from the same record): every write carries a mark keyed by its first record's event
//! id, holding the sequence number of its last. A write whose mark exists was made before; the
//! records up to the mark's last are skipped and the next write starts after them, where the
//! earlier run's next write started too. A shard's records come in sequence order, one batch at a
//! time, so a batch starts where an earlier one started or where one stopped.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{Put, ReturnValuesOnConditionCheckFailure, Update};
use baton_app::InfraError;
use baton_domain::{ProjectId, Status, Tenant};
use chrono::Utc;
use serde::Serialize;

use crate::dynamo::{
    CURRENT_LAYOUT, DynamoStore, Item, Part, Write, counter, item_key, n, project_key, s,
};
use crate::stream::TaskWrite;

/// A transaction holds at most 100 items: one is the mark.
const PROJECTS_PER_WRITE: usize = 99;
/// How long a mark is kept: longer than the stream keeps a record (24 hours).
const MARK_RETENTION: chrono::Duration = chrono::Duration::hours(48);

/// How one stream record moves a project's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The record's event id.
    pub event_id: String,
    /// Its sequence number in its shard.
    pub sequence: String,
    /// The task's tenant.
    pub tenant: Tenant,
    /// The project whose counters it moves.
    pub project: ProjectId,
    /// The counters it moves and by how much (never `n_RUNNING`).
    pub deltas: Vec<(Status, i64)>,
}

/// How a task's write (a record of the table's stream) moves its project's counters: `None`
/// when it moves none (a write that kept the status, a write counted by its writer).
pub fn move_of(write: TaskWrite) -> Option<Move> {
    // A put or update is counted when this layout wrote it; a delete always (whichever version
    // wrote the task counted its status).
    if write
        .after
        .is_some_and(|after| after.layout < CURRENT_LAYOUT)
    {
        return None;
    }
    let mut deltas = BTreeMap::<Status, i64>::new();
    if let Some(after) = write.after {
        *deltas.entry(after.status).or_default() += 1;
    }
    if let Some(before) = write.before {
        *deltas.entry(before.status).or_default() -= 1;
    }
    let deltas: Vec<(Status, i64)> = deltas
        .into_iter()
        .filter(|(status, delta)| *status != Status::Running && *delta != 0)
        .collect();
    (!deltas.is_empty()).then_some(Move {
        event_id: write.event_id,
        sequence: write.sequence,
        tenant: write.tenant,
        project: write.project,
        deltas,
    })
}

/// Whether sequence number `a` comes after `b` (decimal digits, compared as numbers).
fn after(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

/// What counting a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counted {
    /// Counter writes made now.
    pub written: usize,
    /// Moves found counted by an earlier delivery of the same records.
    pub already: usize,
}

impl DynamoStore {
    /// Adds `moves` (one stream batch's, in sequence order) to their projects' counters, each
    /// exactly once however often the batch comes.
    pub async fn count(&self, moves: &[Move]) -> Result<Counted, InfraError> {
        let mut counted = Counted::default();
        let mut start = 0;
        while start < moves.len() {
            let mut sums = BTreeMap::<(&Tenant, &ProjectId), BTreeMap<Status, i64>>::new();
            let mut end = start;
            while end < moves.len() {
                let next = &moves[end];
                let key = (&next.tenant, &next.project);
                if !sums.contains_key(&key) && sums.len() == PROJECTS_PER_WRITE {
                    break;
                }
                let sum = sums.entry(key).or_default();
                for (status, delta) in &next.deltas {
                    *sum.entry(*status).or_default() += delta;
                }
                end += 1;
            }
            let (first, last) = (&moves[start], &moves[end - 1]);
            let mut writes = vec![(Part::Mark, self.mark(first, last)?)];
            for ((tenant, project), sum) in &sums {
                if let Some(update) = self.add(tenant, project, sum)? {
                    writes.push((Part::Project, update));
                }
            }
            match self.transact(writes).await? {
                Ok(()) => {
                    counted.written += 1;
                    start = end;
                }
                Err(mut cancelled) if cancelled.failed(Part::Mark) => {
                    let seen = cancelled
                        .item(Part::Mark)
                        .and_then(|mark| mark.get("last")?.as_s().ok().cloned())
                        .ok_or_else(|| {
                            InfraError::new("count stream batch", "a mark without its last record")
                        })?;
                    let skipped = moves[start..]
                        .iter()
                        .take_while(|m| !after(&m.sequence, &seen))
                        .count()
                        .max(1);
                    counted.already += skipped;
                    start += skipped;
                }
                Err(_) => {
                    return Err(InfraError::new(
                        "count stream batch",
                        "a counter write's condition failed",
                    ));
                }
            }
        }
        Ok(counted)
    }

    /// The mark of a counter write from `first` to `last`: put unless it exists.
    fn mark(&self, first: &Move, last: &Move) -> Result<Write, InfraError> {
        let mut item: Item = item_key(format!("STREAM#{}", first.event_id), "MARK");
        item.insert("last".to_owned(), s(&last.sequence));
        let expires = Utc::now() + MARK_RETENTION;
        item.insert("expires_at".to_owned(), n(expires.timestamp()));
        Ok(Write::Put(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(|e| InfraError::new("build stream mark", e))?,
        ))
    }

    /// The update adding `sum` to a project's counters; `None` when the moves cancel out.
    fn add(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        sum: &BTreeMap<Status, i64>,
    ) -> Result<Option<Write>, InfraError> {
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(project_key(tenant, project)));
        let mut adds = Vec::new();
        for (i, (status, delta)) in sum.iter().filter(|(_, d)| **d != 0).enumerate() {
            update = update
                .expression_attribute_names(format!("#c{i}"), counter(*status))
                .expression_attribute_values(format!(":d{i}"), n(delta));
            adds.push(format!("#c{i} :d{i}"));
        }
        if adds.is_empty() {
            return Ok(None);
        }
        Ok(Some(Write::Update(
            update
                .update_expression(format!("ADD {}", adds.join(", ")))
                .build()
                .map_err(|e| InfraError::new("build counter update", e))?,
        )))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::stream::task_write;
    use crate::stream::tests::{image, record};

    fn moved(old: Option<Value>, new: Option<Value>) -> Option<Move> {
        move_of(task_write(&record(old, new)).unwrap().unwrap())
    }

    #[test]
    fn a_record_moves_the_status_it_leaves_down_and_the_one_it_enters_up() {
        let released = moved(
            Some(image("PENDING", 1, Some(2))),
            Some(image("SCHEDULED", 2, Some(2))),
        );
        assert_eq!(
            released.unwrap().deltas,
            [(Status::Pending, -1), (Status::Scheduled, 1)]
        );
        let created = moved(None, Some(image("SCHEDULED", 1, Some(2))));
        assert_eq!(created.unwrap().deltas, [(Status::Scheduled, 1)]);
    }

    #[test]
    fn slots_kept_statuses_and_older_writers_move_nothing() {
        // Running is the slot counter, moved with the task's own write.
        let started = moved(
            Some(image("SCHEDULED", 1, Some(2))),
            Some(image("RUNNING", 2, Some(2))),
        );
        assert_eq!(started.unwrap().deltas, [(Status::Scheduled, -1)]);
        let noted = moved(
            Some(image("RUNNING", 2, Some(2))),
            Some(image("RUNNING", 3, Some(2))),
        );
        assert_eq!(noted, None);
        // A version that counted its own moves wrote no layout.
        let counted_by_writer = moved(
            Some(image("SCHEDULED", 1, None)),
            Some(image("CANCELLED", 2, None)),
        );
        assert_eq!(counted_by_writer, None);
        // Moving an item of that version on is counted: its old status was counted by its writer.
        let upgraded = moved(
            Some(image("SCHEDULED", 1, None)),
            Some(image("CANCELLED", 2, Some(2))),
        );
        assert_eq!(
            upgraded.unwrap().deltas,
            [(Status::Scheduled, -1), (Status::Cancelled, 1)]
        );
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(after("100", "99"));
        assert!(after("00000000000000000002", "00000000000000000001"));
        assert!(!after("99", "99"));
        assert!(!after("98", "100"));
    }
}
