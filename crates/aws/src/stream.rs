//! The task table's stream as its consumers read it: a record of a task item's write, its state
//! before and after. The counter ([`crate::counts`]) and the notifier read the same records.

use baton_domain::{ProjectId, Status, TaskId, Tenant};
use serde::Deserialize;
use serde_json::Value;

/// What a stream record says of a task item: `None` for any other item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskWrite {
    /// The record's event id.
    pub event_id: String,
    /// Its sequence number in its shard.
    pub sequence: String,
    /// The task's tenant.
    pub tenant: Tenant,
    /// Its project.
    pub project: ProjectId,
    /// Its id.
    pub id: TaskId,
    /// The item before the write (none: created).
    pub before: Option<TaskImage>,
    /// The item after the write (none: deleted).
    pub after: Option<TaskImage>,
}

/// What a consumer reads of a task item's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskImage {
    /// Its status.
    pub status: Status,
    /// Its version (one per transition).
    pub version: u64,
    /// Whether it waits in its project's ready set.
    pub parked: bool,
    /// The item layout that wrote it (1: before the attribute existed).
    pub layout: u32,
}

impl TaskWrite {
    /// Whether a subscriber would see the task changed: created, moved to a new version, or
    /// parked or taken from the ready set.
    pub fn moved(&self) -> bool {
        match (&self.before, &self.after) {
            (Some(before), Some(after)) => {
                before.version != after.version || before.parked != after.parked
            }
            (None, Some(_)) => true,
            _ => false,
        }
    }
}

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

/// The attributes read of an image, in DynamoDB JSON.
#[derive(Deserialize)]
struct Image {
    sk: Option<Text>,
    id: Option<Text>,
    tenant: Option<Text>,
    project: Option<Text>,
    status: Option<Text>,
    version: Option<Number>,
    parked: Option<Value>,
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

type Identity = (Tenant, ProjectId, TaskId);

/// A task image's identity and state; `None` for any other item.
fn task_of(image: &Image) -> Option<Result<(Identity, TaskImage), String>> {
    if image.sk.as_ref()?.s != "TASK" {
        return None;
    }
    let text = |value: &Option<Text>, name: &str| {
        value
            .as_ref()
            .map(|text| text.s.clone())
            .ok_or_else(|| format!("a task image without `{name}`"))
    };
    let parsed = || -> Result<_, String> {
        let tenant = Tenant::parse(&text(&image.tenant, "tenant")?).map_err(|e| e.to_string())?;
        let project =
            ProjectId::parse(&text(&image.project, "project")?).map_err(|e| e.to_string())?;
        let id = TaskId::parse(&text(&image.id, "id")?).map_err(|e| e.to_string())?;
        let status = text(&image.status, "status")?;
        let status = Status::ALL
            .into_iter()
            .find(|s| s.as_str() == status)
            .ok_or_else(|| format!("unknown status {status:?}"))?;
        let version = image
            .version
            .as_ref()
            .and_then(|v| v.n.parse().ok())
            .ok_or("a task image without `version`")?;
        let layout = image
            .layout
            .as_ref()
            .map_or(Ok(1), |l| l.n.parse())
            .map_err(|e| format!("layout: {e}"))?;
        let parked = image
            .parked
            .as_ref()
            .is_some_and(|p| p.get("NULL").is_none());
        let state = TaskImage {
            status,
            version,
            parked,
            layout,
        };
        Ok(((tenant, project, id), state))
    };
    Some(parsed())
}

/// Reads `record` (one element of a stream batch's `Records`): `Ok(None)` for an item that is
/// not a task, an error naming why it cannot be read.
pub fn task_write(record: &Value) -> Result<Option<TaskWrite>, String> {
    let record = Record::deserialize(record).map_err(|e| format!("not a stream record: {e}"))?;
    let Change { sequence, new, old } = record.dynamodb;
    let after = new.as_ref().and_then(task_of).transpose()?;
    let before = old.as_ref().and_then(task_of).transpose()?;
    let Some(((tenant, project, id), _)) = after.as_ref().or(before.as_ref()).cloned() else {
        return Ok(None);
    };
    Ok(Some(TaskWrite {
        event_id: record.event_id,
        sequence,
        tenant,
        project,
        id,
        before: before.map(|(_, state)| state),
        after: after.map(|(_, state)| state),
    }))
}

/// A stream batch's (`{"Records": [...]}`) records.
pub fn records(event: &Value) -> &[Value] {
    event["Records"].as_array().map_or(&[][..], Vec::as_slice)
}

/// The task writes among `records`. A record that cannot be read is logged with its reason and
/// what becomes of it (`left`: "left uncounted"), and skipped: a stream record cannot be parked
/// apart from its shard, and one the table wrote reads the same on every delivery.
pub fn task_writes<'a>(
    records: &'a [Value],
    left: &'static str,
) -> impl Iterator<Item = TaskWrite> + 'a {
    records
        .iter()
        .filter_map(move |record| match task_write(record) {
            Ok(write) => write,
            Err(reason) => {
                tracing::error!(
                    code = "UNREADABLE_STREAM_RECORD",
                    event_id = record["eventID"].as_str().unwrap_or_default(),
                    %reason,
                    "stream record {left}"
                );
                None
            }
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    pub(crate) const ID: &str = "0190d1b8-8c2b-7cc1-9b7e-5b7c4c6d2f10";

    /// A task image in DynamoDB JSON.
    pub(crate) fn image(status: &str, version: u64, layout: Option<u32>) -> Value {
        let mut image = json!({"pk": {"S": format!("T#acme#{ID}")}, "sk": {"S": "TASK"},
            "id": {"S": ID}, "tenant": {"S": "acme"}, "project": {"S": "reports"},
            "status": {"S": status}, "version": {"N": version.to_string()},
            "parked": {"NULL": true}});
        if let Some(layout) = layout {
            image["layout"] = json!({"N": layout.to_string()});
        }
        image
    }

    /// A stream record of a write from `old` to `new`.
    pub(crate) fn record(old: Option<Value>, new: Option<Value>) -> Value {
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
    fn a_task_write_reads_its_identity_and_both_states() {
        let write = task_write(&record(
            Some(image("SCHEDULED", 1, None)),
            Some(image("RUNNING", 2, Some(2))),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(write.id.to_string(), ID);
        assert_eq!(write.project.as_str(), "reports");
        let (before, after) = (write.before.unwrap(), write.after.unwrap());
        assert_eq!(
            (before.status, before.version, before.layout),
            (Status::Scheduled, 1, 1)
        );
        assert_eq!(
            (after.status, after.version, after.layout),
            (Status::Running, 2, 2)
        );
        assert!(write.moved());
    }

    #[test]
    fn a_write_moved_the_task_when_its_version_or_its_place_in_the_ready_set_changed() {
        let write = |old: Value, new: Value| task_write(&record(Some(old), Some(new))).unwrap();
        let same = write(
            image("SCHEDULED", 3, Some(2)),
            image("SCHEDULED", 3, Some(2)),
        );
        assert!(
            !same.unwrap().moved(),
            "a wake moved, nothing a subscriber sees"
        );
        let mut parked = image("SCHEDULED", 3, Some(2));
        parked["parked"] = json!({"M": {"gate": {"S": "CAPACITY"}}});
        let parked = write(image("SCHEDULED", 3, Some(2)), parked);
        assert!(parked.unwrap().moved());
        let project = json!({"pk": {"S": "P#acme#reports"}, "sk": {"S": "PROJECT"}});
        assert_eq!(task_write(&record(None, Some(project))), Ok(None));
    }

    #[test]
    fn a_record_that_cannot_be_read_says_why() {
        assert!(task_write(&json!({"eventID": 3})).is_err());
        let bad = image("DONE", 1, Some(2));
        let why = task_write(&record(None, Some(bad))).unwrap_err();
        assert!(why.contains("DONE"), "{why}");
        let mut bad = image("SCHEDULED", 1, Some(2));
        bad["tenant"] = json!({"S": "not a tenant!"});
        assert!(task_write(&record(None, Some(bad))).is_err());
    }
}
