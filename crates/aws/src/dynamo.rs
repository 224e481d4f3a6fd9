use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValuesOnConditionCheckFailure,
};
use baton_app::{Commit, Created, InfraError, Page, TaskQuery, TaskStore, Wake, WakeKind};
use baton_domain::{Task, TaskId, Tenant};
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

/// Tasks in one DynamoDB table: item `pk = T#{tenant}#{id}`, `sk = TASK`, holding the task, its
/// history, and the keys of the project and wake indexes.
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

impl DynamoStore {
    /// A conditional put that answers the stored item when the condition fails.
    async fn put_if(
        &self,
        item: Item,
        condition: &str,
        names: &[(&str, &str)],
        values: Item,
    ) -> Result<Result<(), Option<Item>>, InfraError> {
        let mut put = self
            .client
            .put_item()
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
        match put.send().await {
            Ok(_) => Ok(Ok(())),
            Err(error) => match error.as_service_error() {
                Some(e) if e.is_conditional_check_failed_exception() => {
                    let failed = error.into_service_error();
                    let old = match failed {
                        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(e) => e.item,
                        _ => None,
                    };
                    Ok(Err(old))
                }
                _ => Err(InfraError::new("DynamoDB PutItem", error)),
            },
        }
    }

    async fn get_many(&self, ids: &[(Tenant, TaskId)]) -> Result<Vec<Task>, InfraError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys = ids.iter().map(|(tenant, id)| key(tenant, id)).collect();
        let mut request = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| InfraError::new("build BatchGetItem", e))?,
        );
        let mut tasks = Vec::with_capacity(ids.len());
        while let Some(keys) = request.take() {
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, keys)
                .send()
                .await
                .map_err(infra("DynamoDB BatchGetItem"))?;
            if let Some(mut items) = output.responses
                && let Some(items) = items.remove(&self.table)
            {
                for item in items {
                    tasks.push(from_item(item)?);
                }
            }
            request = output
                .unprocessed_keys
                .and_then(|mut unprocessed| unprocessed.remove(&self.table));
        }
        Ok(tasks)
    }
}

#[async_trait]
impl TaskStore for DynamoStore {
    async fn create(&self, task: &Task, wake: Option<Wake>) -> Result<Created, InfraError> {
        let put = self
            .put_if(
                to_item(task, wake)?,
                "attribute_not_exists(pk)",
                &[],
                Item::new(),
            )
            .await?;
        match put {
            Ok(()) => Ok(Created::Created),
            Err(Some(existing)) => Ok(Created::Exists(Box::new(from_item(existing)?))),
            Err(None) => Err(InfraError::new(
                "DynamoDB PutItem",
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
        let put = self
            .put_if(
                to_item(next, wake)?,
                "#status = :status AND #version = :version",
                &[("#status", "status"), ("#version", "version")],
                values,
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
        let mut tasks = Vec::new();
        // One more than asked, to know whether another page follows.
        while tasks.len() <= query.first {
            // Without a status filter every key read is a task returned, so read no more keys
            // than needed; with one, read in BatchGetItem-sized steps.
            let batch = match query.status {
                None => (query.first + 1 - tasks.len()).min(MAX_BATCH_GET),
                Some(_) => MAX_BATCH_GET,
            } as i32;
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(PROJECT_INDEX)
                .key_condition_expression("project_key = :project")
                .expression_attribute_values(":project", AttributeValue::S(project_key.clone()))
                .scan_index_forward(false)
                .limit(batch)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(infra("DynamoDB Query"))?;
            let ids: Vec<(Tenant, TaskId)> = task_keys(output.items()).collect();
            let mut page = self.get_many(&ids).await?;
            page.retain(|task| query.status.is_none_or(|status| task.status == status));
            page.sort_by_key(|task| std::cmp::Reverse(task.id));
            tasks.extend(page);
            start = output.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(Page::of_first(tasks, query.first))
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
