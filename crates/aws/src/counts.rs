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
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dynamo::{
    CURRENT_LAYOUT, DynamoStore, Item, Part, Write, counter, item_key, n, project_key, s,
};

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

/// A stream record as Lambda and the Streams API deliver it; only what counting reads.
#[derive(Deserialize)]
struct Record {
    #[serde(rename = "eventID")]
    event_id: String,
    dynamodb: Change,
}

#[derive(Deserialize)]
struct Change {
    #[serde(rename = "SequenceNumber")]
    sequence: String,
    #[serde(rename = "NewImage")]
    new: Option<Image>,
    #[serde(rename = "OldImage")]
    old: Option<Image>,
}

#[derive(Deserialize)]
struct Image {
    sk: Option<Text>,
    tenant: Option<Text>,
    project: Option<Text>,
    status: Option<Text>,
    layout: Option<Number>,
}

#[derive(Deserialize)]
struct Text {
    #[serde(rename = "S")]
    s: String,
}

#[derive(Deserialize)]
struct Number {
    #[serde(rename = "N")]
    n: String,
}

/// A task image's project and status; `None` for any other item.
fn task_of(image: &Image) -> Option<Result<(Tenant, ProjectId, Status), String>> {
    if image.sk.as_ref()?.s != "TASK" {
        return None;
    }
    let field = |value: &Option<Text>, name: &str| {
        value
            .as_ref()
            .map(|text| text.s.clone())
            .ok_or_else(|| format!("a task image without `{name}`"))
    };
    let parsed = || -> Result<_, String> {
        let tenant = Tenant::parse(&field(&image.tenant, "tenant")?).map_err(|e| e.to_string())?;
        let project =
            ProjectId::parse(&field(&image.project, "project")?).map_err(|e| e.to_string())?;
        let status = field(&image.status, "status")?;
        let status = Status::ALL
            .into_iter()
            .find(|s| s.as_str() == status)
            .ok_or_else(|| format!("unknown status {status:?}"))?;
        Ok((tenant, project, status))
    };
    Some(parsed())
}

/// How `record` (one element of a stream batch's `Records`) moves the counters: `Ok(None)` when
/// it moves none (another item, a write that kept the status, a write counted by its writer), an
/// error naming why it cannot be read.
pub fn move_of(record: &Value) -> Result<Option<Move>, String> {
    let record = Record::deserialize(record).map_err(|e| format!("not a stream record: {e}"))?;
    let Change { sequence, new, old } = record.dynamodb;
    let layout = |image: &Image| {
        image
            .layout
            .as_ref()
            .and_then(|l| l.n.parse::<u32>().ok())
            .unwrap_or(1)
    };
    // A put or update is counted when this layout wrote it; a delete always (no version deletes
    // tasks but this one).
    if let Some(new) = &new
        && layout(new) < CURRENT_LAYOUT
    {
        return Ok(None);
    }
    let after = new.as_ref().and_then(task_of).transpose()?;
    let before = old.as_ref().and_then(task_of).transpose()?;
    let mut deltas = BTreeMap::<Status, i64>::new();
    let mut project = None;
    if let Some((tenant, id, status)) = after {
        *deltas.entry(status).or_default() += 1;
        project = Some((tenant, id));
    }
    if let Some((tenant, id, status)) = before {
        *deltas.entry(status).or_default() -= 1;
        project.get_or_insert((tenant, id));
    }
    let deltas: Vec<(Status, i64)> = deltas
        .into_iter()
        .filter(|(status, delta)| *status != Status::Running && *delta != 0)
        .collect();
    Ok(match (project, deltas.is_empty()) {
        (Some((tenant, project)), false) => Some(Move {
            event_id: record.event_id,
            sequence,
            tenant,
            project,
            deltas,
        }),
        _ => None,
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
    use serde_json::json;

    use super::*;

    fn image(status: &str, layout: Option<u32>) -> Value {
        let mut image = json!({"pk": {"S": "T#acme#x"}, "sk": {"S": "TASK"},
            "tenant": {"S": "acme"}, "project": {"S": "reports"}, "status": {"S": status}});
        if let Some(layout) = layout {
            image["layout"] = json!({"N": layout.to_string()});
        }
        image
    }

    fn record(old: Option<Value>, new: Option<Value>) -> Value {
        let mut change = json!({"SequenceNumber": "100", "Keys": {}});
        if let Some(old) = old {
            change["OldImage"] = old;
        }
        if let Some(new) = new {
            change["NewImage"] = new;
        }
        json!({"eventID": "e1", "eventName": "MODIFY", "dynamodb": change})
    }

    #[test]
    fn a_record_moves_the_status_it_leaves_down_and_the_one_it_enters_up() {
        let moved = move_of(&record(
            Some(image("PENDING", Some(2))),
            Some(image("SCHEDULED", Some(2))),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            moved.deltas,
            [(Status::Pending, -1), (Status::Scheduled, 1)]
        );
        assert_eq!(moved.project.as_str(), "reports");
        let created = move_of(&record(None, Some(image("SCHEDULED", Some(2))))).unwrap();
        assert_eq!(created.unwrap().deltas, [(Status::Scheduled, 1)]);
    }

    #[test]
    fn slots_kept_statuses_other_items_and_older_writers_move_nothing() {
        // Running is the slot counter, moved with the task's own write.
        let started = move_of(&record(
            Some(image("SCHEDULED", Some(2))),
            Some(image("RUNNING", Some(2))),
        ))
        .unwrap();
        assert_eq!(started.unwrap().deltas, [(Status::Scheduled, -1)]);
        let noted = move_of(&record(
            Some(image("RUNNING", Some(2))),
            Some(image("RUNNING", Some(2))),
        ));
        assert_eq!(noted, Ok(None));
        // A version that counted its own moves wrote no layout.
        let counted_by_writer = move_of(&record(
            Some(image("SCHEDULED", None)),
            Some(image("CANCELLED", None)),
        ));
        assert_eq!(counted_by_writer, Ok(None));
        // Moving an item of that version on is counted: its old status was counted by its writer.
        let upgraded = move_of(&record(
            Some(image("SCHEDULED", None)),
            Some(image("CANCELLED", Some(2))),
        ));
        assert_eq!(
            upgraded.unwrap().unwrap().deltas,
            [(Status::Scheduled, -1), (Status::Cancelled, 1)]
        );
        let project = json!({"pk": {"S": "P#acme#reports"}, "sk": {"S": "PROJECT"}});
        assert_eq!(move_of(&record(None, Some(project))), Ok(None));
    }

    #[test]
    fn a_record_that_cannot_be_read_says_why() {
        assert!(move_of(&json!({"eventID": 3})).is_err());
        let mut bad = image("DONE", Some(2));
        assert!(
            move_of(&record(None, Some(bad.clone())))
                .unwrap_err()
                .contains("DONE")
        );
        bad["status"] = json!({"S": "SCHEDULED"});
        bad["tenant"] = json!({"S": "not a tenant!"});
        assert!(move_of(&record(None, Some(bad))).is_err());
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(after("100", "99"));
        assert!(after("00000000000000000002", "00000000000000000001"));
        assert!(!after("99", "99"));
        assert!(!after("98", "100"));
    }
}
