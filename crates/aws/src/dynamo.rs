use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use baton_app::{
    Commit, Created, InfraError, Page, ProjectStatus, TaskQuery, TaskStore, Wake, WakeKind,
};
use baton_domain::{ProjectId, Status, Task, TaskId, Tenant};
use chrono::{DateTime, SecondsFormat, Utc};

type Item = HashMap<String, AttributeValue>;

/// Partitions the wake index is spread over, so the sweeper's writes do not all land on one key.
const WAKE_SHARDS: u8 = 4;
/// BatchGetItem reads at most this many keys per call.
const MAX_BATCH_GET: usize = 100;
/// The index of tasks by project, newest first (keys only).
const PROJECT_INDEX: &str = "by-project";
/// The sparse index of tasks the sweeper must look at, by time (keys only).
const WAKE_INDEX: &str = "by-wake";

/// A transaction that meets another on the project item is tried again this many times.
const TRANSACTION_ATTEMPTS: u32 = 6;

/// Tasks in one DynamoDB table: item `pk = T#{tenant}#{id}`, `sk = TASK`, holding the task, its
/// history, and the keys of the project and wake indexes. Each project has an item
/// `pk = P#{tenant}#{project}`, `sk = PROJECT` whose counters (`n_{STATUS}`) every transition moves
/// in the same transaction as the task's write.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// A store over `table`.
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }
}

fn pk(tenant: &Tenant, id: &TaskId) -> String {
    format!("T#{tenant}#{id}")
}

fn key(tenant: &Tenant, id: &TaskId) -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk(tenant, id))),
        ("sk".to_owned(), AttributeValue::S("TASK".to_owned())),
    ])
}

fn parse_pk(pk: &str) -> Option<(Tenant, TaskId)> {
    let mut parts = pk.strip_prefix("T#")?.splitn(2, '#');
    let tenant = Tenant::parse(parts.next()?).ok()?;
    let id = TaskId::parse(parts.next()?).ok()?;
    Some((tenant, id))
}

/// The tenant and id of every task in `items` (index entries or items carry the table key).
fn task_keys(items: &[Item]) -> impl Iterator<Item = (Tenant, TaskId)> + '_ {
    items
        .iter()
        .filter_map(|item| item.get("pk")?.as_s().ok().and_then(|pk| parse_pk(pk)))
}

fn wake_key(kind: WakeKind, shard: u8) -> AttributeValue {
    let kind = match kind {
        WakeKind::Arm => "ARM",
        WakeKind::Check => "CHECK",
    };
    AttributeValue::S(format!("{kind}#{shard}"))
}

fn wake_attributes(id: &TaskId, wake: Wake) -> [(String, AttributeValue); 2] {
    [
        (
            "wake_key".to_owned(),
            wake_key(wake.kind, id.shard(WAKE_SHARDS)),
        ),
        ("wake_at".to_owned(), AttributeValue::S(sortable(wake.at))),
    ]
}

/// A fixed-width UTC time, so that string order is time order.
fn sortable(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn to_item(task: &Task, wake: Option<Wake>) -> Result<Item, InfraError> {
    let mut item: Item =
        serde_dynamo::to_item(task).map_err(|e| InfraError::new("encode task for DynamoDB", e))?;
    item.extend(key(&task.tenant, &task.id));
    item.insert(
        "project_key".to_owned(),
        AttributeValue::S(format!("{}#{}", task.tenant, task.project)),
    );
    if let Some(wake) = wake {
        item.extend(wake_attributes(&task.id, wake));
    }
    Ok(item)
}

fn from_item(item: Item) -> Result<Task, InfraError> {
    serde_dynamo::from_item(item).map_err(|e| InfraError::new("decode task from DynamoDB", e))
}

fn infra<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> InfraError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |error| InfraError::new(operation, error)
}

fn project_key(tenant: &Tenant, project: &ProjectId) -> Item {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(format!("P#{tenant}#{project}")),
        ),
        ("sk".to_owned(), AttributeValue::S("PROJECT".to_owned())),
    ])
}

fn counter(status: Status) -> String {
    format!("n_{}", status.as_str())
}

/// The update of `task`'s project counters for a move from `from` (none: a new task) to `to`.
fn count(table: &str, task: &Task, from: Option<Status>, to: Status) -> Result<Update, InfraError> {
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(project_key(&task.tenant, &task.project)))
        .expression_attribute_names("#to", counter(to));
    let update = match from {
        Some(from) => update
            .update_expression("ADD #to :one, #from :minus")
            .expression_attribute_names("#from", counter(from))
            .expression_attribute_values(":minus", AttributeValue::N("-1".to_owned())),
        None => update.update_expression("ADD #to :one"),
    };
    update
        .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
        .build()
        .map_err(|e| InfraError::new("build counter update", e))
}

impl DynamoStore {
    /// Puts `item` if `condition` holds, moving the project's counters in the same transaction.
    /// When the condition fails, answers the stored item.
    async fn put_counted(
        &self,
        item: Item,
        condition: &str,
        names: &[(&str, &str)],
        values: Item,
        counted: Update,
    ) -> Result<Result<(), Option<Item>>, InfraError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        for (placeholder, name) in names {
            put = put.expression_attribute_names(*placeholder, *name);
        }
        if !values.is_empty() {
            put = put.set_expression_attribute_values(Some(values));
        }
        let put = put
            .build()
            .map_err(|e| InfraError::new("build conditional put", e))?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().update(counted).build(),
        ];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(Ok(())),
                Err(error) => error,
            };
            let reasons = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
                    e.cancellation_reasons().to_vec()
                }
                _ => return Err(InfraError::new("DynamoDB TransactWriteItems", error)),
            };
            let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
            if code(0) == "ConditionalCheckFailed" {
                return Ok(Err(reasons.into_iter().next().and_then(|r| r.item)));
            }
            let conflict = (0..reasons.len()).any(|i| code(i) == "TransactionConflict");
            if !conflict || attempt >= TRANSACTION_ATTEMPTS {
                return Err(InfraError::new("DynamoDB TransactWriteItems", error));
            }
            // Another transition of the same project holds its counters: step aside briefly.
            let pause =
                5 * u64::from(attempt) + u64::from(uuid::Uuid::now_v7().as_bytes()[15] % 10);
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
    }

    async fn get_many(&self, ids: &[(Tenant, TaskId)]) -> Result<Vec<Task>, InfraError> {
        let keys = ids.iter().map(|(tenant, id)| key(tenant, id)).collect();
        batch_get(&self.client, &self.table, keys, true)
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }
}

/// Reads `keys` of `table` with BatchGetItem (at most [`MAX_BATCH_GET`] keys), asking again for
/// any the service left unprocessed. Items come back in no particular order.
pub(crate) async fn batch_get(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    consistent: bool,
) -> Result<Vec<Item>, InfraError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut request = Some(
        KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(consistent)
            .build()
            .map_err(|e| InfraError::new("build BatchGetItem", e))?,
    );
    let mut items = Vec::new();
    while let Some(keys) = request.take() {
        let output = client
            .batch_get_item()
            .request_items(table, keys)
            .send()
            .await
            .map_err(infra("DynamoDB BatchGetItem"))?;
        if let Some(mut responses) = output.responses
            && let Some(found) = responses.remove(table)
        {
            items.extend(found);
        }
        request = output
            .unprocessed_keys
            .and_then(|mut unprocessed| unprocessed.remove(table));
    }
    Ok(items)
}

#[async_trait]
impl TaskStore for DynamoStore {
    async fn create(&self, task: &Task, wake: Option<Wake>) -> Result<Created, InfraError> {
        let counted = count(&self.table, task, None, task.status)?;
        let put = self
            .put_counted(
                to_item(task, wake)?,
                "attribute_not_exists(pk)",
                &[],
                Item::new(),
                counted,
            )
            .await?;
        match put {
            Ok(()) => Ok(Created::Created),
            Err(Some(existing)) => Ok(Created::Exists(Box::new(from_item(existing)?))),
            Err(None) => Err(InfraError::new(
                "DynamoDB TransactWriteItems",
                "condition failed without the existing item",
            )),
        }
    }

    async fn get(&self, tenant: &Tenant, id: &TaskId) -> Result<Option<Task>, InfraError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(tenant, id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(infra("DynamoDB GetItem"))?;
        output.item.map(from_item).transpose()
    }

    async fn commit(
        &self,
        current: &Task,
        next: &Task,
        wake: Option<Wake>,
    ) -> Result<Commit, InfraError> {
        let values = HashMap::from([
            (
                ":status".to_owned(),
                AttributeValue::S(current.status.as_str().to_owned()),
            ),
            (
                ":version".to_owned(),
                AttributeValue::N(current.version.to_string()),
            ),
        ]);
        let counted = count(&self.table, next, Some(current.status), next.status)?;
        let put = self
            .put_counted(
                to_item(next, wake)?,
                "#status = :status AND #version = :version",
                &[("#status", "status"), ("#version", "version")],
                values,
                counted,
            )
            .await?;
        match put {
            Ok(()) => Ok(Commit::Committed),
            Err(stored) => Ok(Commit::Conflict(
                stored.map(from_item).transpose()?.map(Box::new),
            )),
        }
    }

    async fn list(&self, query: &TaskQuery) -> Result<Page, InfraError> {
        let project_key = format!("{}#{}", query.tenant, query.project);
        let mut start = query.after.map(|after| {
            let mut start = key(&query.tenant, &after);
            start.insert(
                "project_key".to_owned(),
                AttributeValue::S(project_key.clone()),
            );
            start.insert("id".to_owned(), AttributeValue::S(after.to_string()));
            start
        });
        // Ids are UUIDv7s, so a submission time range is a range of the index's sort key.
        let lowest = query
            .submitted_after
            .map_or_else(|| "0".to_owned(), |at| TaskId::bounds_at(at).0.to_string());
        let highest = query.submitted_before.map_or_else(
            || "~".to_owned(),
            |at| {
                TaskId::bounds_at(at - chrono::Duration::milliseconds(1))
                    .1
                    .to_string()
            },
        );
        let mut tasks = Vec::new();
        // One more than asked, to know whether another page follows.
        while tasks.len() <= query.first {
            // When only the key filters, every key read is a task returned, so read no more keys
            // than needed; otherwise read in BatchGetItem-sized steps.
            let batch = if query.filters_by_key_only() {
                (query.first + 1 - tasks.len()).min(MAX_BATCH_GET)
            } else {
                MAX_BATCH_GET
            } as i32;
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(PROJECT_INDEX)
                .key_condition_expression(
                    "project_key = :project AND id BETWEEN :lowest AND :highest",
                )
                .expression_attribute_values(":project", AttributeValue::S(project_key.clone()))
                .expression_attribute_values(":lowest", AttributeValue::S(lowest.clone()))
                .expression_attribute_values(":highest", AttributeValue::S(highest.clone()))
                .scan_index_forward(false)
                .limit(batch)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(infra("DynamoDB Query"))?;
            let ids: Vec<(Tenant, TaskId)> = task_keys(output.items()).collect();
            let mut page = self.get_many(&ids).await?;
            page.retain(|task| query.matches(task));
            page.sort_by_key(|task| std::cmp::Reverse(task.id));
            tasks.extend(page);
            start = output.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(Page::of_first(tasks, query.first))
    }

    async fn project_status(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<ProjectStatus, InfraError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(project_key(tenant, project)))
            .consistent_read(true)
            .send()
            .await
            .map_err(infra("DynamoDB GetItem"))?;
        let item = output.item.unwrap_or_default();
        Ok(ProjectStatus::from_counts(|status| {
            item.get(&counter(status))
                .and_then(|n| n.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok())
                .map_or(0, |n| u64::try_from(n).unwrap_or(0))
        }))
    }

    async fn wakes(
        &self,
        kind: WakeKind,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Tenant, TaskId)>, InfraError> {
        let mut found = Vec::new();
        for shard in 0..WAKE_SHARDS {
            let mut start = None;
            loop {
                let output = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(WAKE_INDEX)
                    .key_condition_expression("wake_key = :key AND wake_at <= :until")
                    .expression_attribute_values(":key", wake_key(kind, shard))
                    .expression_attribute_values(":until", AttributeValue::S(sortable(until)))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(infra("DynamoDB Query"))?;
                found.extend(task_keys(output.items()));
                start = output.last_evaluated_key;
                if start.is_none() || found.len() >= limit {
                    break;
                }
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    async fn set_wake(&self, task: &Task, wake: Option<Wake>) -> Result<bool, InfraError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&task.tenant, &task.id)))
            .condition_expression("#version = :version")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":version", AttributeValue::N(task.version.to_string()));
        update = match wake {
            Some(wake) => {
                let [(_, key), (_, at)] = wake_attributes(&task.id, wake);
                update
                    .update_expression("SET wake_key = :key, wake_at = :at")
                    .expression_attribute_values(":key", key)
                    .expression_attribute_values(":at", at)
            }
            None => update.update_expression("REMOVE wake_key, wake_at"),
        };
        match update.send().await {
            Ok(_) => Ok(true),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(error) => Err(InfraError::new("DynamoDB UpdateItem", error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_key_round_trips_through_its_partition_key() {
        let tenant = Tenant::parse("acme").unwrap();
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        assert_eq!(parse_pk(&pk(&tenant, &id)), Some((tenant, id)));
        assert_eq!(parse_pk("X#acme#1"), None);
    }

    #[test]
    fn wake_times_sort_as_strings_in_time_order() {
        let early: DateTime<Utc> = "2026-01-01T09:59:59.5Z".parse().unwrap();
        let late: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        assert!(sortable(early) < sortable(late));
        assert_eq!(sortable(late), "2026-01-01T10:00:00.000Z");
    }
}
