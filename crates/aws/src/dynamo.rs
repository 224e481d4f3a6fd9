use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, KeysAndAttributes, Put,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use baton_app::{
    Commit, Created, Hold, InfraError, ModelQuery, Page, TaskQuery, TaskStore, Wake, WakeKind,
};
use baton_domain::{
    Change, Controls, DEFAULT_CONCURRENCY_LIMIT, Gate, Idempotency, ProjectId, Scope, Status, Task,
    TaskId, Tenant, lanes_for,
};
use chrono::{DateTime, SecondsFormat, Utc};

pub(crate) type Item = HashMap<String, AttributeValue>;

/// Partitions the wake index is spread over, so the sweeper's writes do not all land on one key.
pub(crate) const WAKE_SHARDS: u8 = 4;
/// BatchGetItem reads at most this many keys per call.
pub(crate) const MAX_BATCH_GET: usize = 100;
/// The index of tasks by project, newest first (keys only).
const PROJECT_INDEX: &str = "by-project";
/// The sparse index of tasks the sweeper must look at, by time (keys only).
const WAKE_INDEX: &str = "by-wake";
/// The sparse index of results by the model that produced them, newest first (keys only).
const MODEL_INDEX: &str = "by-model";

/// The attribute naming the layout a task item was written in. Layout 2 leaves the status
/// counters to the stream; an item without it was written by a version that counted its moves
/// in the same transaction, which the stream therefore does not count again.
pub(crate) const LAYOUT: &str = "layout";
/// The layout this version writes.
pub(crate) const CURRENT_LAYOUT: u32 = 2;
/// The project counter of slots held for admitted tasks that have not started.
pub(crate) const RESERVED: &str = "n_RESERVED";
/// A transaction that meets another on the project item is tried again this many times.
const TRANSACTION_ATTEMPTS: u32 = 6;
/// How long an idempotency key is kept: a repeat within this window returns the first task.
const IDEMPOTENCY_RETENTION: chrono::Duration = chrono::Duration::hours(24);

/// Tasks in one DynamoDB table: item `pk = T#{tenant}#{id}`, `sk = TASK`, holding the task, its
/// history, the keys of the project, wake and ready indexes, and its layout ([`LAYOUT`]). Each
/// project has an item `pk = P#{tenant}#{project}`, `sk = PROJECT` holding the project's limit
/// (`slot_limit`), the lanes its slots were ever spread over (`lanes`), pause and drain, and its
/// counters (`n_{STATUS}`, following the table's stream, [`crate::counts`]). Its slots are
/// spread over lane items `pk = L#{tenant}#{project}#{lane}`, `sk = LANE`: a move into or out of
/// a slot changes its lane's `n_RUNNING` in the same transaction as the task's write (the task
/// names its lane), so a move that needs no slot is one conditional write and no one item takes
/// every slot move of a project. A lane's `n_RUNNING` counts the slots held for admitted tasks
/// (`n_RESERVED`, and `reserved` on the task) as well as the running ones, so that one attribute
/// is what a dispatch's condition compares with the lane's share of the limit. The project's own
/// `n_RUNNING` and `n_RESERVED` held every slot before lanes: a task an earlier version started
/// or admitted (no lane) gives its slot back there, and what they still hold is taken from the
/// limit before it is shared. Kill switches are items
/// `pk = KILL#global` and `KILL#{tenant}#{project}`, `sk = SWITCH`, with their history beside
/// them (`sk = EV#...`); idempotency keys are items `pk = I#{tenant}#{key}`, `sk = KEY`, expiring
/// after [`IDEMPOTENCY_RETENTION`]. A task lists its dependencies and its dependents on its own
/// item, so a graph is walked with GetItem and BatchGetItem alone; a result's model files it in
/// the `by-model` index.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    pub(crate) client: Client,
    pub(crate) table: String,
    /// Projects this process has seen exist (projects are never deleted, so a task of one needs
    /// no check of it), with the `by-project` partitions each spreads its entries over and when
    /// that was read.
    known: Arc<Mutex<HashMap<String, (u16, Instant)>>>,
}

/// How many projects a process remembers before it starts over.
const KNOWN_PROJECTS: usize = 10_000;
/// How long a process trusts what it read of a project's `by-project` partitions.
const KNOWN_FOR: Duration = Duration::from_secs(60);
/// The most `by-project` partitions one project's entries are spread over.
pub(crate) const MAX_LISTING_SHARDS: u16 = 16;

impl DynamoStore {
    /// A store over `table`.
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
            known: Arc::default(),
        }
    }

    /// The `by-project` partitions new entries of `task`'s project are spread over
    /// ([`listing_shards`]), `None` while the project does not exist: known to this process
    /// within [`KNOWN_FOR`], or read. A process that knows fewer than the project has now only
    /// spreads its entries less; a listing reads every partition the project's lanes give.
    async fn listing(&self, task: &Task) -> Result<Option<u16>, InfraError> {
        let path = project_path(&task.tenant, &task.project);
        if let Some((shards, at)) = self.known.lock().unwrap().get(&path)
            && at.elapsed() < KNOWN_FOR
        {
            return Ok(Some(*shards));
        }
        let read = self
            .project_item(&task.tenant, &task.project, "created_at, slot_limit, lanes")
            .await?
            .filter(|item| item.contains_key("created_at"));
        let Some(item) = read else {
            return Ok(None);
        };
        let shards = listing_shards(&item);
        self.remember_project(task, shards);
        Ok(Some(shards))
    }

    /// The attributes `projection` names of a project's item, strongly consistent.
    pub(crate) async fn project_item(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        projection: &str,
    ) -> Result<Option<Item>, InfraError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(project_key(tenant, project)))
            .projection_expression(projection)
            .consistent_read(true)
            .send()
            .await
            .map_err(infra("DynamoDB GetItem"))?
            .item)
    }

    fn remember_project(&self, task: &Task, shards: u16) {
        let mut known = self.known.lock().unwrap();
        if known.len() >= KNOWN_PROJECTS {
            known.clear();
        }
        let path = project_path(&task.tenant, &task.project);
        known.insert(path, (shards, Instant::now()));
    }
}

/// How many `by-project` partitions a project's entries are spread over: one per lane of its
/// slots, at most [`MAX_LISTING_SHARDS`], so a project whose limit allows many starts a second
/// puts its new entries in as many partitions. One (the project's path alone, where entries
/// were before partitions) for every project of one lane.
fn listing_shards(project: &Item) -> u16 {
    let lanes = number(project, "lanes").and_then(|n| u16::try_from(n).ok());
    let limit = number(project, "slot_limit").and_then(|n| u32::try_from(n).ok());
    let lanes = lanes
        .unwrap_or(1)
        .max(lanes_for(limit.unwrap_or(DEFAULT_CONCURRENCY_LIMIT)));
    lanes.min(MAX_LISTING_SHARDS)
}

/// The `by-project` partition of entry shard `shard` of a project.
fn listing_key(tenant: &Tenant, project: &ProjectId, shard: u16) -> String {
    match shard {
        0 => project_path(tenant, project),
        shard => format!("{}#{shard}", project_path(tenant, project)),
    }
}

/// The shard of `id`'s `by-project` entry among `shards`: from its random bits, so a task
/// written again by a process that knows as many shards keeps its entry where it was.
fn listing_shard(id: &TaskId, shards: u16) -> u16 {
    let bits = id.as_uuid().as_u128() as u64;
    u16::try_from(bits % u64::from(shards.max(1))).unwrap_or(0)
}

fn pk(tenant: &Tenant, id: &TaskId) -> String {
    format!("T#{tenant}#{id}")
}

/// The key `pk`, `sk` of an item.
pub(crate) fn item_key(pk: String, sk: &str) -> Item {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk)),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

pub(crate) fn key(tenant: &Tenant, id: &TaskId) -> Item {
    item_key(pk(tenant, id), "TASK")
}

pub(crate) fn parse_pk(pk: &str) -> Option<(Tenant, TaskId)> {
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

pub(crate) fn wake_key(kind: WakeKind, shard: u8) -> AttributeValue {
    let kind = match kind {
        WakeKind::Arm => "ARM",
        WakeKind::Check => "CHECK",
    };
    AttributeValue::S(format!("{kind}#{shard}"))
}

pub(crate) fn wake_attributes(id: &TaskId, wake: Wake) -> [(String, AttributeValue); 2] {
    [
        (
            "wake_key".to_owned(),
            wake_key(wake.kind, id.shard(WAKE_SHARDS)),
        ),
        ("wake_at".to_owned(), AttributeValue::S(sortable(wake.at))),
    ]
}

/// A fixed-width UTC time, so that string order is time order.
pub(crate) fn sortable(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `task`'s item, its `by-project` entry in one of `shards` partitions.
fn to_item(task: &Task, wake: Option<Wake>, shards: u16) -> Result<Item, InfraError> {
    let mut item: Item =
        serde_dynamo::to_item(task).map_err(|e| InfraError::new("encode task for DynamoDB", e))?;
    item.extend(key(&task.tenant, &task.id));
    item.insert(LAYOUT.to_owned(), n(CURRENT_LAYOUT));
    let shard = listing_shard(&task.id, shards);
    item.insert(
        "project_key".to_owned(),
        s(listing_key(&task.tenant, &task.project, shard)),
    );
    if let Some(wake) = wake {
        item.extend(wake_attributes(&task.id, wake));
    }
    let model = task.provenance.as_ref().and_then(|p| p.model.as_deref());
    if let (Some(model), Some(at)) = (model, task.produced_at()) {
        item.insert("model_key".to_owned(), s(model_key(&task.tenant, model)));
        item.insert("model_at".to_owned(), s(model_at(at, &task.id)));
    }
    Ok(item)
}

/// `{tenant}#{project}`: a project as the `by-project` and `by-ready` indexes key it, and as a
/// process remembers it.
pub(crate) fn project_path(tenant: &Tenant, project: &ProjectId) -> String {
    format!("{tenant}#{project}")
}

fn model_key(tenant: &Tenant, model: &str) -> String {
    format!("{tenant}#{model}")
}

/// The `by-model` sort key: the result's time, then the id, so equal times keep an order.
fn model_at(at: DateTime<Utc>, id: &TaskId) -> String {
    format!("{}#{id}", sortable(at))
}

fn from_item(item: Item) -> Result<Task, InfraError> {
    serde_dynamo::from_item(item).map_err(|e| InfraError::new("decode task from DynamoDB", e))
}

pub(crate) fn infra<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> InfraError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |error| classified(operation, error)
}

/// A failed DynamoDB call as an infrastructure error: permanent when DynamoDB refused the
/// request as invalid (`ValidationException`: an item too large or too deep, a number out of
/// range), since sending it again gets the same answer; retryable otherwise.
pub(crate) fn classified<E, R>(operation: &'static str, error: SdkError<E, R>) -> InfraError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match error.as_service_error().and_then(|e| e.code()) {
        Some("ValidationException") => InfraError::permanent(operation, error),
        _ => InfraError::new(operation, error),
    }
}

pub(crate) fn project_key(tenant: &Tenant, project: &ProjectId) -> Item {
    item_key(format!("P#{tenant}#{project}"), "PROJECT")
}

/// The key of one lane of a project's slots.
pub(crate) fn lane_key(tenant: &Tenant, project: &ProjectId, lane: u16) -> Item {
    item_key(format!("L#{tenant}#{project}#{lane}"), "LANE")
}

/// The key of the item that holds `task`'s slot: its lane's, or for a task an earlier version
/// started (no lane) its project's.
pub(crate) fn slot_key(task: &Task) -> Item {
    match task.lane {
        Some(lane) => lane_key(&task.tenant, &task.project, lane),
        None => project_key(&task.tenant, &task.project),
    }
}

/// The partition of a kill switch: the switch itself and its history.
pub(crate) fn switch_pk(scope: &Scope) -> String {
    match scope {
        Scope::Global => "KILL#global".to_owned(),
        Scope::Project { tenant, project } => format!("KILL#{tenant}#{project}"),
    }
}

/// The key of a kill switch, or with `sk` another item of its partition.
pub(crate) fn switch_key(scope: &Scope, sk: &str) -> Item {
    item_key(switch_pk(scope), sk)
}

pub(crate) fn counter(status: Status) -> String {
    format!("n_{}", status.as_str())
}

/// Whether a conditional write was applied: `Ok(false)` when its condition failed, an
/// infrastructure error for anything else.
pub(crate) fn written<O, E, R>(
    operation: &'static str,
    result: Result<O, SdkError<E, R>>,
) -> Result<bool, InfraError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(error)
            if error.as_service_error().and_then(|e| e.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(error) => Err(classified(operation, error)),
    }
}

pub(crate) fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

pub(crate) fn n(number: impl ToString) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

/// A transaction item from a built Put or Update.
pub(crate) enum Write {
    Put(Put),
    Update(Update),
}

fn transaction_item(write: Write) -> TransactWriteItem {
    match write {
        Write::Put(put) => TransactWriteItem::builder().put(put).build(),
        Write::Update(update) => TransactWriteItem::builder().update(update).build(),
    }
}

fn built<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> InfraError {
    move |e| InfraError::new(what, e)
}

/// What a part of a transaction writes, the name its cancellation reason is read back by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The task's own item.
    Task,
    /// Its project's item.
    Project,
    /// The item that holds its slot: a lane of its project (or the project's own count).
    Slot,
    /// The record of an idempotency key.
    Key,
    /// A dependency that lists the new task among its dependents.
    Dependency,
    /// The project's kill switch, installed with its first task.
    Switch,
    /// The mark of a stream batch's counter write.
    Mark,
}

/// Why a transaction was cancelled: per part, whether its condition failed and the stored item
/// it answered with.
pub(crate) struct Cancelled(Vec<(Part, CancellationReason)>);

impl Cancelled {
    /// Whether the condition of (any write of) `part` failed.
    pub(crate) fn failed(&self, part: Part) -> bool {
        self.0
            .iter()
            .any(|(p, reason)| *p == part && reason.code() == Some("ConditionalCheckFailed"))
    }

    /// The stored item the (first) write of `part` answered with.
    pub(crate) fn item(&mut self, part: Part) -> Option<Item> {
        self.0
            .iter_mut()
            .find(|(p, _)| *p == part)
            .and_then(|(_, reason)| reason.item.take())
    }

    fn any(&self, code: &str) -> bool {
        self.0.iter().any(|(_, reason)| reason.code() == Some(code))
    }
}

/// A number attribute of an item.
pub(crate) fn number(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// What a write that takes a slot checks of the item holding it.
#[derive(Clone, Copy)]
enum Take {
    /// A free slot: the lane holds less than its `share` of the limit.
    Free { share: u64 },
    /// The slot held for the task (`reserved`): the lane still holds no more than its `share`
    /// (the limit was not lowered below the slots taken meanwhile).
    Held { share: u64 },
}

impl Take {
    /// What a dispatch of `current` into `next`'s lane checks, with the controls its batch read.
    fn of(current: &Task, next: &Task, slots: Option<&Controls>) -> Self {
        let share = match (slots, next.lane) {
            (Some(slots), Some(lane)) => slots.share(lane),
            _ => 0,
        };
        match current.reserved {
            true => Take::Held { share },
            false => Take::Free { share },
        }
    }
}

/// The slot counters a move from `current` (none: a new task) to `next` changes, and by how
/// much: `n_RUNNING` up when it starts running, down when it stops, and a slot held for `current`
/// given back to `n_RESERVED` and `n_RUNNING` (which counts held slots too) — a dispatch takes it
/// back at once as the slot it runs in. The other status counters follow the table's stream
/// (`crate::counts`).
fn slot_moves(current: Option<&Task>, next: &Task) -> Vec<(String, i64)> {
    let running = |task: &Task| i64::from(task.status == Status::Running);
    let mut taken = running(next) - current.map_or(0, running);
    let mut moves = Vec::new();
    if current.is_some_and(|current| current.reserved) {
        moves.push((RESERVED.to_owned(), -1));
        taken -= 1;
    }
    if taken != 0 {
        moves.push((counter(Status::Running), taken));
    }
    moves
}

/// The update of the item holding `holder`'s slot ([`slot_key`]) that adds `moves` to its
/// counters, checking what `take` says when it takes a slot. A lane's share is the value its
/// condition compares with; the project's own count (a task without a lane) compares with its
/// `slot_limit`, as before lanes.
fn slot_write(
    table: &str,
    holder: &Task,
    moves: &[(String, i64)],
    take: Option<Take>,
) -> Result<Write, InfraError> {
    let mut update = Update::builder()
        .table_name(table)
        .set_key(Some(slot_key(holder)));
    let mut adds = Vec::with_capacity(moves.len());
    for (i, (name, delta)) in moves.iter().enumerate() {
        update = update
            .expression_attribute_names(format!("#{name}"), name)
            .expression_attribute_values(format!(":d{i}"), n(delta));
        adds.push(format!("#{name} :d{i}"));
    }
    let limit = match (take, holder.lane) {
        (None, _) => None,
        (Some(Take::Free { share } | Take::Held { share }), Some(_)) => {
            update = update.expression_attribute_values(":share", n(share));
            Some(":share")
        }
        (Some(_), None) => Some("slot_limit"),
    };
    let condition = limit.zip(take).map(|(limit, take)| match take {
        Take::Free { .. } => {
            format!("attribute_not_exists(#n_RUNNING) OR #n_RUNNING < {limit}")
        }
        Take::Held { .. } => format!("#n_RUNNING <= {limit}"),
    });
    if condition.is_some() {
        update = update
            .expression_attribute_names("#n_RUNNING", counter(Status::Running))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    }
    Ok(Write::Update(
        update
            .update_expression(format!("ADD {}", adds.join(", ")))
            .set_condition_expression(condition)
            .build()
            .map_err(built("build slot update"))?,
    ))
}

/// The project item its first task creates, with its creation time and the default limit.
fn project_creation(table: &str, task: &Task) -> Result<Write, InfraError> {
    Ok(Write::Update(
        Update::builder()
            .table_name(table)
            .set_key(Some(project_key(&task.tenant, &task.project)))
            .update_expression(
                "SET created_at = :now, slot_limit = if_not_exists(slot_limit, :cap)",
            )
            .condition_expression("attribute_not_exists(created_at)")
            .expression_attribute_values(":now", s(sortable(task.created_at)))
            .expression_attribute_values(":cap", n(DEFAULT_CONCURRENCY_LIMIT))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(built("build project creation"))?,
    ))
}

fn install_project_switch(table: &str, task: &Task) -> Result<Write, InfraError> {
    let scope = Scope::Project {
        tenant: task.tenant.clone(),
        project: task.project.clone(),
    };
    let installed = serde_dynamo::to_attribute_value::<_, AttributeValue>(Change {
        by: "baton".to_owned(),
        reason: "project created".to_owned(),
        at: task.created_at,
    })
    .map_err(built("encode kill switch"))?;
    Ok(Write::Update(
        Update::builder()
            .table_name(table)
            .set_key(Some(switch_key(&scope, "SWITCH")))
            .update_expression(
                "SET engaged = if_not_exists(engaged, :false), #last = if_not_exists(#last, :last)",
            )
            .expression_attribute_names("#last", "last")
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .expression_attribute_values(":last", installed)
            .build()
            .map_err(built("build kill switch install"))?,
    ))
}

/// The record of an idempotency key: taken unless a live record holds it.
fn claim_key(table: &str, task: &Task, idempotency: &Idempotency) -> Result<Write, InfraError> {
    let mut item = item_key(format!("I#{}#{}", task.tenant, idempotency.key), "KEY");
    item.insert("task_id".to_owned(), s(task.id.to_string()));
    item.insert("fingerprint".to_owned(), s(&idempotency.fingerprint));
    let expires = task.created_at + IDEMPOTENCY_RETENTION;
    item.insert("expires_at".to_owned(), n(expires.timestamp()));
    Ok(Write::Put(
        Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
            .expression_attribute_values(":now", n(task.created_at.timestamp()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(built("build idempotency put"))?,
    ))
}

/// A range of a keys-only index of tasks, read newest first by [`DynamoStore::newest_first`].
struct IndexRange {
    index: &'static str,
    /// The partition key's name and value.
    partition: (&'static str, String),
    /// The sort key's name.
    sort: &'static str,
    lowest: String,
    highest: String,
    /// How many tasks the page holds.
    first: usize,
    /// Whether the range alone selects the tasks (no filter after reading).
    key_only: bool,
}

/// A dependency lists a new dependent, if it is still at the version its check read.
fn add_dependent(table: &str, dependency: &Task, child: &TaskId) -> Result<Write, InfraError> {
    Ok(Write::Update(
        Update::builder()
            .table_name(table)
            .set_key(Some(key(&dependency.tenant, &dependency.id)))
            .update_expression(
                "SET dependents = list_append(if_not_exists(dependents, :none), :child)",
            )
            .condition_expression("#version = :version")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":version", n(dependency.version))
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":child", AttributeValue::L(vec![s(child.to_string())]))
            .build()
            .map_err(built("build dependent update"))?,
    ))
}

/// How a single conditional write went.
enum OneWrite {
    Done,
    /// Its condition failed; the stored item, when asked for.
    Failed(Option<Item>),
    /// It met a transaction on its item.
    Conflict(InfraError),
}

fn one_write<O, E, R>(
    operation: &'static str,
    result: Result<O, SdkError<E, R>>,
    condition_failed: impl FnOnce(&E) -> Option<Option<Item>>,
) -> Result<OneWrite, InfraError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let error = match result {
        Ok(_) => return Ok(OneWrite::Done),
        Err(error) => error,
    };
    if let Some(item) = error.as_service_error().and_then(condition_failed) {
        return Ok(OneWrite::Failed(item));
    }
    let conflict =
        error.as_service_error().and_then(|e| e.code()) == Some("TransactionConflictException");
    let error = classified(operation, error);
    match conflict {
        true => Ok(OneWrite::Conflict(error)),
        false => Err(error),
    }
}

/// A short, jittered pause before trying a write that met a concurrent transaction again.
async fn conflict_pause(attempt: u32) {
    let pause = 5 * u64::from(attempt) + u64::from(uuid::Uuid::now_v7().as_bytes()[15] % 10);
    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
}

impl DynamoStore {
    /// Runs `writes`: one alone as a plain conditional write (half a transaction's write units),
    /// several as a transaction. A failed condition is answered with its reasons; a write that
    /// meets a concurrent transaction on the same items (the project item is shared by every
    /// move into or out of a project's slots) is tried again after a short pause.
    pub(crate) async fn transact(
        &self,
        mut writes: Vec<(Part, Write)>,
    ) -> Result<Result<(), Cancelled>, InfraError> {
        if writes.len() == 1
            && let Some((part, write)) = writes.pop()
        {
            return self.write_one(part, write).await;
        }
        let parts: Vec<Part> = writes.iter().map(|(part, _)| *part).collect();
        let items: Vec<TransactWriteItem> = writes
            .into_iter()
            .map(|(_, w)| transaction_item(w))
            .collect();
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
            let cancelled = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(e)) => Cancelled(
                    parts
                        .iter()
                        .copied()
                        .zip(e.cancellation_reasons().iter().cloned())
                        .collect(),
                ),
                _ => return Err(classified("DynamoDB TransactWriteItems", error)),
            };
            if cancelled.any("ConditionalCheckFailed") {
                return Ok(Err(cancelled));
            }
            // An item the table cannot hold cancels the transaction with this reason.
            if cancelled.any("ValidationError") {
                return Err(InfraError::permanent("DynamoDB TransactWriteItems", error));
            }
            if !cancelled.any("TransactionConflict") || attempt >= TRANSACTION_ATTEMPTS {
                return Err(InfraError::new("DynamoDB TransactWriteItems", error));
            }
            conflict_pause(attempt).await;
        }
    }

    /// One write on its own: a plain conditional write costs half a transaction's write units. A
    /// failed condition is answered as a transaction's cancellation of that part would be; a write
    /// that meets a transaction on its item is tried again as a transaction would be.
    async fn write_one(
        &self,
        part: Part,
        write: Write,
    ) -> Result<Result<(), Cancelled>, InfraError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = match &write {
                Write::Put(put) => {
                    let result = self
                        .client
                        .put_item()
                        .table_name(put.table_name())
                        .set_item(Some(put.item().clone()))
                        .set_condition_expression(put.condition_expression().map(str::to_owned))
                        .set_expression_attribute_names(put.expression_attribute_names().cloned())
                        .set_expression_attribute_values(put.expression_attribute_values().cloned())
                        .set_return_values_on_condition_check_failure(
                            put.return_values_on_condition_check_failure().cloned(),
                        )
                        .send()
                        .await;
                    one_write("DynamoDB PutItem", result, |e| match e {
                        PutItemError::ConditionalCheckFailedException(e) => Some(e.item.clone()),
                        _ => None,
                    })?
                }
                Write::Update(update) => {
                    let result = self
                        .client
                        .update_item()
                        .table_name(update.table_name())
                        .set_key(Some(update.key().clone()))
                        .update_expression(update.update_expression())
                        .set_condition_expression(update.condition_expression().map(str::to_owned))
                        .set_expression_attribute_names(
                            update.expression_attribute_names().cloned(),
                        )
                        .set_expression_attribute_values(
                            update.expression_attribute_values().cloned(),
                        )
                        .set_return_values_on_condition_check_failure(
                            update.return_values_on_condition_check_failure().cloned(),
                        )
                        .send()
                        .await;
                    one_write("DynamoDB UpdateItem", result, |e| match e {
                        UpdateItemError::ConditionalCheckFailedException(e) => Some(e.item.clone()),
                        _ => None,
                    })?
                }
            };
            match sent {
                OneWrite::Done => return Ok(Ok(())),
                OneWrite::Failed(item) => {
                    let reason = CancellationReason::builder()
                        .code("ConditionalCheckFailed")
                        .set_item(item)
                        .build();
                    return Ok(Err(Cancelled(vec![(part, reason)])));
                }
                OneWrite::Conflict(error) if attempt >= TRANSACTION_ATTEMPTS => return Err(error),
                OneWrite::Conflict(_) => conflict_pause(attempt).await,
            }
        }
    }

    /// The conditional put of a task's item.
    fn put_task(
        &self,
        item: Item,
        condition: &str,
        values: Option<Item>,
    ) -> Result<Write, InfraError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_values(values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if condition.contains("#status") {
            put = put
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#version", "version");
        }
        Ok(Write::Put(put.build().map_err(built("build task put"))?))
    }

    /// The partition keys of the wake index entries at or before `until` in every shard of a kind
    /// (`key` names the shard's partition), at most `limit`.
    pub(crate) async fn due_wakes(
        &self,
        key: impl Fn(u8) -> AttributeValue,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, InfraError> {
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
                    .expression_attribute_values(":key", key(shard))
                    .expression_attribute_values(":until", s(sortable(until)))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(infra("DynamoDB Query"))?;
                found.extend(
                    output
                        .items()
                        .iter()
                        .filter_map(|item| item.get("pk")?.as_s().ok().cloned()),
                );
                start = output.last_evaluated_key;
                if start.is_none() || found.len() >= limit {
                    break;
                }
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    /// A page of tasks through a keys-only index, newest first: the entries of one partition
    /// whose sort key lies in the range, read from `start`, until `first` tasks (and one more, to
    /// know whether another page follows) pass `keep`; `order` sorts each batch as the index does.
    async fn newest_first<K: Ord>(
        &self,
        range: IndexRange,
        mut start: Option<Item>,
        keep: impl Fn(&Task) -> bool,
        order: impl Fn(&Task) -> K,
    ) -> Result<Page, InfraError> {
        let (partition, value) = range.partition;
        let condition = format!(
            "{partition} = :partition AND {} BETWEEN :lowest AND :highest",
            range.sort
        );
        let mut tasks = Vec::new();
        while tasks.len() <= range.first {
            // When only the key filters, every key read is a task returned, so read no more keys
            // than needed; otherwise read in BatchGetItem-sized steps.
            let batch = if range.key_only {
                (range.first + 1 - tasks.len()).min(MAX_BATCH_GET)
            } else {
                MAX_BATCH_GET
            } as i32;
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(range.index)
                .key_condition_expression(&condition)
                .expression_attribute_values(":partition", s(value.clone()))
                .expression_attribute_values(":lowest", s(range.lowest.clone()))
                .expression_attribute_values(":highest", s(range.highest.clone()))
                .scan_index_forward(false)
                .limit(batch)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(infra("DynamoDB Query"))?;
            let ids: Vec<(Tenant, TaskId)> = task_keys(output.items()).collect();
            let mut page = self.read_many(&ids).await?;
            page.retain(&keep);
            page.sort_by_key(|task| std::cmp::Reverse(order(task)));
            tasks.extend(page);
            start = output.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(Page::of_first(tasks, range.first))
    }

    async fn read_many(&self, ids: &[(Tenant, TaskId)]) -> Result<Vec<Task>, InfraError> {
        let keys = ids.iter().map(|(tenant, id)| key(tenant, id)).collect();
        batch_get(&self.client, &self.table, keys, true)
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }
}

/// Reads `keys` of `table` with BatchGetItem, [`MAX_BATCH_GET`] keys a call, asking again for
/// any the service left unprocessed. Items come back in no particular order.
pub(crate) async fn batch_get(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    consistent: bool,
) -> Result<Vec<Item>, InfraError> {
    let mut items = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(MAX_BATCH_GET) {
        let mut request = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(consistent)
                .build()
                .map_err(|e| InfraError::new("build BatchGetItem", e))?,
        );
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
    }
    Ok(items)
}

#[async_trait]
impl TaskStore for DynamoStore {
    async fn create(
        &self,
        task: &Task,
        wake: Option<Wake>,
        idempotency: Option<&Idempotency>,
        dependencies: &[Task],
        slots: Option<&Controls>,
    ) -> Result<Created, InfraError> {
        // Most tasks join a project that exists (its partitions known): the task's write is
        // all there is.
        let listing = self.listing(task).await?;
        let item = to_item(task, wake, listing.unwrap_or(1))?;
        // Most tasks join a project that exists: the task's write is all there is. The
        // project's first task creates it and its kill switch. Which case holds is read once per
        // project and process, and learnt again from the project's condition, never assumed.
        let mut new_project = listing.is_none();
        // A task created Running takes its slot here, as its dispatch would.
        let slot = slot_moves(None, task);
        for _ in 0..TRANSACTION_ATTEMPTS {
            let mut writes = vec![(
                Part::Task,
                self.put_task(item.clone(), "attribute_not_exists(pk)", None)?,
            )];
            if new_project {
                writes.push((Part::Project, project_creation(&self.table, task)?));
                writes.push((Part::Switch, install_project_switch(&self.table, task)?));
            }
            if !slot.is_empty() {
                let take = Take::of(task, task, slots);
                writes.push((
                    Part::Slot,
                    slot_write(&self.table, task, &slot, Some(take))?,
                ));
            }
            if let Some(idempotency) = idempotency {
                writes.push((Part::Key, claim_key(&self.table, task, idempotency)?));
            }
            for dependency in dependencies {
                writes.push((
                    Part::Dependency,
                    add_dependent(&self.table, dependency, &task.id)?,
                ));
            }
            let Err(mut cancelled) = self.transact(writes).await? else {
                return Ok(Created::Created);
            };
            if cancelled.failed(Part::Task) {
                let existing = cancelled.item(Part::Task).ok_or_else(|| {
                    InfraError::new("DynamoDB TransactWriteItems", "no existing item returned")
                })?;
                return Ok(Created::Exists(Box::new(from_item(existing)?)));
            }
            if cancelled.failed(Part::Key) {
                let used = cancelled.item(Part::Key).unwrap_or_default();
                let text = |name: &str| used.get(name).and_then(|v| v.as_s().ok()).cloned();
                let task_id = text("task_id").and_then(|id| TaskId::parse(&id).ok());
                return match (task_id, text("fingerprint")) {
                    (Some(task_id), Some(fingerprint)) => Ok(Created::KeyUsed {
                        task_id,
                        fingerprint,
                    }),
                    _ => Err(InfraError::new(
                        "DynamoDB TransactWriteItems",
                        "an idempotency record without its task",
                    )),
                };
            }
            if cancelled.failed(Part::Dependency) {
                return Ok(Created::DependencyMoved);
            }
            if cancelled.failed(Part::Slot) {
                return Ok(Created::Held(Hold::Blocked(Gate::Capacity)));
            }
            if !cancelled.failed(Part::Project) {
                return Err(InfraError::new(
                    "DynamoDB TransactWriteItems",
                    "a create cancelled with no failed condition",
                ));
            }
            // Another task created the project meanwhile.
            new_project = false;
        }
        Err(InfraError::new(
            "DynamoDB TransactWriteItems",
            format!("project {} kept changing under a create", task.project),
        ))
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

    async fn get_many(&self, tenant: &Tenant, ids: &[TaskId]) -> Result<Vec<Task>, InfraError> {
        let mut unique: Vec<(Tenant, TaskId)> = Vec::with_capacity(ids.len());
        for id in ids {
            if !unique.iter().any(|(_, seen)| seen == id) {
                unique.push((tenant.clone(), *id));
            }
        }
        self.read_many(&unique).await
    }

    async fn produced_by(&self, query: &ModelQuery) -> Result<Page, InfraError> {
        let model_key = model_key(&query.tenant, &query.model);
        let lowest = query.since.map_or_else(|| "0".to_owned(), sortable);
        let mut highest = query.until.map_or_else(|| "~".to_owned(), sortable);
        if let Some(after) = &query.after {
            let Some(at) = self
                .get(&query.tenant, after)
                .await?
                .and_then(|task| task.produced_at())
            else {
                return Ok(Page::of_first(Vec::new(), query.first));
            };
            // Up to the cursor's own entry, which is skipped below.
            highest = highest.min(model_at(at, after));
        }
        let range = IndexRange {
            index: MODEL_INDEX,
            partition: ("model_key", model_key),
            sort: "model_at",
            lowest,
            highest,
            first: query.first,
            key_only: true,
        };
        let keep = |task: &Task| query.matches(task) && Some(&task.id) != query.after.as_ref();
        self.newest_first(range, None, keep, |task| (task.produced_at(), task.id))
            .await
    }

    async fn commit(
        &self,
        current: &Task,
        next: &Task,
        wake: Option<Wake>,
        slots: Option<&Controls>,
    ) -> Result<Commit, InfraError> {
        let mut values = HashMap::from([
            (":status".to_owned(), s(current.status.as_str())),
            (":version".to_owned(), n(current.version)),
        ]);
        // A new dependent joins the list without a transition: a write that read the list
        // before must not drop it.
        let dependents = if current.dependents.is_empty() {
            "attribute_not_exists(dependents)"
        } else {
            values.insert(":dependents".to_owned(), n(current.dependents.len()));
            "size(dependents) = :dependents"
        };
        // A slot held for the task is held by its item's version: an admission that took it
        // meanwhile changes what this write must do with the project's counters.
        let reserved = match current.reserved {
            true => "reserved = :true",
            false => "attribute_not_exists(reserved)",
        };
        if current.reserved {
            values.insert(":true".to_owned(), AttributeValue::Bool(true));
        }
        let dispatch = current.status == Status::Scheduled && next.status == Status::Running;
        let mut writes = vec![(
            Part::Task,
            self.put_task(
                to_item(next, wake, self.listing(next).await?.unwrap_or(1))?,
                &format!(
                    "#status = :status AND #version = :version AND {dependents} AND {reserved}"
                ),
                Some(values),
            )?,
        )];
        // Only a move into or out of a slot writes the item holding it (a lane of the project);
        // every count follows the stream, and a move that needs no slot is one conditional write.
        let moves = slot_moves(Some(current), next);
        if dispatch {
            let take = Take::of(current, next, slots);
            writes.push((
                Part::Slot,
                slot_write(&self.table, next, &moves, Some(take))?,
            ));
        } else if !moves.is_empty() {
            writes.push((Part::Slot, slot_write(&self.table, current, &moves, None)?));
        }
        let Err(mut cancelled) = self.transact(writes).await? else {
            return Ok(Commit::Committed);
        };
        if cancelled.failed(Part::Task) {
            let stored = cancelled.item(Part::Task).map(from_item).transpose()?;
            return Ok(Commit::Conflict(stored.map(Box::new)));
        }
        Ok(Commit::Blocked(Gate::Capacity))
    }

    async fn list(&self, query: &TaskQuery) -> Result<Page, InfraError> {
        // Every partition the project's entries were ever spread over: its lanes only grow.
        let project = self
            .project_item(&query.tenant, &query.project, "slot_limit, lanes")
            .await?;
        let shards = project.as_ref().map_or(1, listing_shards);
        // Ids are UUIDv7s, so a submission time range is a range of the index's sort key; a
        // page after a task ends at it (itself left out), in every partition alike.
        let lowest = query
            .submitted_after
            .map_or_else(|| "0".to_owned(), |at| TaskId::bounds_at(at).0.to_string());
        let before = query.submitted_before.map_or_else(
            || "~".to_owned(),
            |at| {
                TaskId::bounds_at(at - chrono::Duration::milliseconds(1))
                    .1
                    .to_string()
            },
        );
        let highest = match query.after {
            Some(after) => before.min(after.to_string()),
            None => before,
        };
        let keep = |task: &Task| query.matches(task) && Some(task.id) != query.after;
        let mut tasks = Vec::new();
        let mut more = false;
        for shard in 0..shards {
            let range = IndexRange {
                index: PROJECT_INDEX,
                partition: (
                    "project_key",
                    listing_key(&query.tenant, &query.project, shard),
                ),
                sort: "id",
                lowest: lowest.clone(),
                highest: highest.clone(),
                first: query.first,
                key_only: query.filters_by_key_only() && query.after.is_none(),
            };
            let page = self.newest_first(range, None, keep, |task| task.id).await?;
            more |= page.has_next_page;
            tasks.extend(page.tasks);
        }
        tasks.sort_by_key(|task| std::cmp::Reverse(task.id));
        let mut page = Page::of_first(tasks, query.first);
        page.has_next_page |= more;
        Ok(page)
    }

    async fn wakes(
        &self,
        kind: WakeKind,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Tenant, TaskId)>, InfraError> {
        let keys = self
            .due_wakes(|shard| wake_key(kind, shard), until, limit)
            .await?;
        Ok(keys.iter().filter_map(|pk| parse_pk(pk)).collect())
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
        written("DynamoDB UpdateItem", update.send().await)
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
    fn listing_entries_spread_over_a_project_s_partitions_and_stay_in_one() {
        let ids: Vec<TaskId> = (0..1000)
            .map(|_| TaskId::from_uuid(uuid::Uuid::now_v7()))
            .collect();
        let mut per_shard = [0; MAX_LISTING_SHARDS as usize];
        for id in &ids {
            assert_eq!(listing_shard(id, 1), 0);
            assert_eq!(
                listing_shard(id, MAX_LISTING_SHARDS),
                listing_shard(id, MAX_LISTING_SHARDS)
            );
            per_shard[usize::from(listing_shard(id, MAX_LISTING_SHARDS))] += 1;
        }
        assert!(
            per_shard.iter().all(|&n| (30..100).contains(&n)),
            "{per_shard:?}"
        );
        let (acme, p) = (
            Tenant::parse("acme").unwrap(),
            ProjectId::parse("p").unwrap(),
        );
        assert_eq!(listing_key(&acme, &p, 0), "acme#p");
        assert_eq!(listing_key(&acme, &p, 3), "acme#p#3");
        let project = |limit: u32, lanes: u16| {
            HashMap::from([
                ("slot_limit".to_owned(), n(limit)),
                ("lanes".to_owned(), n(lanes)),
            ])
        };
        assert_eq!(listing_shards(&project(10, 1)), 1);
        assert_eq!(listing_shards(&project(100, 1)), 3);
        assert_eq!(listing_shards(&project(10, 5)), 5, "lanes only grow");
        assert_eq!(listing_shards(&project(10_000, 250)), MAX_LISTING_SHARDS);
    }

    #[test]
    fn wake_times_sort_as_strings_in_time_order() {
        let early: DateTime<Utc> = "2026-01-01T09:59:59.5Z".parse().unwrap();
        let late: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        assert!(sortable(early) < sortable(late));
        assert_eq!(sortable(late), "2026-01-01T10:00:00.000Z");
    }
}
