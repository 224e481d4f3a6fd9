//! Baton's GraphQL schema: object types are views over domain values; every error a client sees
//! carries a stable `extensions.code`. Transports stay thin: the Lambda gateway serves HTTP and
//! the WebSocket routes, [`live`] speaks graphql-transport-ws over API Gateway and fans updates
//! out to subscribers.

pub mod auth;
mod codes;
pub mod dashboard;
mod flow;
mod graph;
pub mod limits;
pub mod live;
mod ops;
mod types;

use std::sync::{Arc, Mutex};

use async_graphql::futures_util::stream::{self, Stream};
use async_graphql::{
    Context, ErrorExtensions, ID, InputObject, Object, Schema, SchemaBuilder, Subscription,
};
use baton_app::{Baton, Handled, InfraError, SubmitError, TaskQuery, Watch};
use baton_domain::{Command, ProjectId, SubmitRequest, TaskId, Tier, check_reason};
use chrono::{DateTime, Utc};
use tracing::error;

pub use baton_app::Caller;
pub use flow::{KillSwitch, KillSwitchScope, ProjectStatus};
pub use graph::{Lineage, LineageDirection, Provenance, RollbackPreview};
pub use limits::{LIMITS, Limits};
pub use ops::{DeadLetterQueues, DlqClass, DlqStats, REDRIVE_BUDGET, RedriveFilter, RedriveResult};
pub use types::{HistoryEntry, SubmitTaskInput, Task, TaskConnection, TaskStatus};

use flow::ProjectControl;

/// The schema type.
pub type BatonSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Largest page `tasks` returns.
pub const MAX_PAGE: i32 = 100;

/// How the schema is served.
#[derive(Clone, Default)]
pub struct Options {
    /// Whether clients may introspect the schema (on in the local stage only).
    pub introspection: bool,
    /// The DLQs `dlqStats` and `redriveDlq` work on; without them they answer `UNAVAILABLE`.
    pub dead_letters: Option<DeadLetterQueues>,
}

fn builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
}

/// Builds the schema over `baton`, with every limit in [`LIMITS`] on, every error coded and field
/// suggestions off.
pub fn schema(baton: Baton, options: Options) -> BatonSchema {
    let mut schema = builder().data(baton);
    if let Some(dead_letters) = options.dead_letters {
        schema = schema.data(dead_letters);
    }
    let schema = schema
        .extension(LIMITS)
        .extension(codes::ErrorCodes)
        .disable_suggestions()
        .limit_recursive_depth(LIMITS.depth * 4);
    match options.introspection {
        true => schema.finish(),
        false => schema.disable_introspection().finish(),
    }
}

/// The schema in SDL, as checked in at the top level as `schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}

fn error(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

fn invalid(field: &'static str, message: impl Into<String>) -> async_graphql::Error {
    error("INVALID_INPUT", message).extend_with(|_, e| e.set("field", field))
}

fn internal(infra: InfraError) -> async_graphql::Error {
    error!(error = ?infra, "infrastructure failure");
    error("INTERNAL", "internal error; try again")
}

/// A task the caller cannot see, whether it does not exist or belongs to another tenant.
fn not_found(id: &TaskId) -> async_graphql::Error {
    error("NOT_FOUND", format!("no task {id}"))
}

fn caller<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Caller> {
    ctx.data_opt::<Caller>().ok_or_else(|| {
        error(
            "UNAUTHENTICATED",
            "no valid token: send `Authorization: Bearer <token>`",
        )
    })
}

fn parse_id(id: &ID) -> async_graphql::Result<TaskId> {
    TaskId::parse(id).map_err(|e| invalid("id", e.to_string()))
}

fn parse_project(project: &str) -> async_graphql::Result<ProjectId> {
    ProjectId::parse(project).map_err(|e| invalid("projectId", e.to_string()))
}

/// One of the caller's tasks, or `NOT_FOUND`.
async fn owned_task(ctx: &Context<'_>, id: &ID) -> async_graphql::Result<baton_domain::Task> {
    let caller = caller(ctx)?;
    let id = parse_id(id)?;
    ctx.data_unchecked::<Baton>()
        .task(&caller.tenant, &id)
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found(&id))
}

/// The task a cancel or rollback left behind: moved or already so; `NOT_FOUND`; or
/// `INVALID_TRANSITION` when its status refuses the command.
fn moved(handled: Handled, id: &TaskId) -> async_graphql::Result<Task> {
    match handled {
        Handled::Applied(task) | Handled::AlreadyApplied(task) => Ok(Task(*task)),
        Handled::NotFound => Err(not_found(id)),
        Handled::Rejected(rejection) | Handled::LostRace(rejection) => {
            Err(error("INVALID_TRANSITION", rejection.to_string()))
        }
        Handled::Rearmed(_) | Handled::Parked(_) => Err(error("INTERNAL", "unexpected outcome")),
    }
}

/// Which tasks `tasks` lists.
#[derive(InputObject)]
pub struct TaskFilter {
    /// The project (required: tasks are listed per project).
    pub project_id: String,
    /// Only tasks in one of these statuses.
    pub statuses: Option<Vec<TaskStatus>>,
    /// Only tasks of this worker tier.
    pub tier: Option<String>,
    /// Only tasks submitted at or after this time.
    pub submitted_after: Option<DateTime<Utc>>,
    /// Only tasks submitted before this time.
    pub submitted_before: Option<DateTime<Utc>>,
}

/// Queries.
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// One of the caller's tasks; `NOT_FOUND` when it has none with this id.
    async fn task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Task> {
        owned_task(ctx, &id).await.map(Task)
    }

    /// A project's tasks, newest first, as a Relay connection.
    #[graphql(complexity = "first.clamp(1, MAX_PAGE) as usize * child_complexity")]
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        filter: TaskFilter,
        #[graphql(default = 20, desc = "Page size, 1 to 100.")] first: i32,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> async_graphql::Result<TaskConnection> {
        let caller = caller(ctx)?;
        let project = parse_project(&filter.project_id)?;
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(invalid("first", format!("first must be 1 to {MAX_PAGE}")));
        }
        let tier = filter
            .tier
            .map(|tier| Tier::parse(&tier).map_err(|e| invalid("tier", e.to_string())))
            .transpose()?;
        let after = after
            .map(|cursor| TaskId::parse(&cursor).map_err(|e| invalid("after", e.to_string())))
            .transpose()?;
        let query = TaskQuery {
            statuses: filter
                .statuses
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            tier,
            submitted_after: filter.submitted_after,
            submitted_before: filter.submitted_before,
            after,
            ..TaskQuery::project(caller.tenant.clone(), project, first as usize)
        };
        let page = ctx
            .data_unchecked::<Baton>()
            .tasks(&query)
            .await
            .map_err(internal)?;
        Ok(TaskConnection::from(page))
    }

    /// How many of a project's tasks are in each status (from counters every transition keeps),
    /// and its flow controls: running against its limit, queued, paused, kill switches.
    async fn project_status(
        &self,
        ctx: &Context<'_>,
        project_id: String,
    ) -> async_graphql::Result<ProjectStatus> {
        let caller = caller(ctx)?;
        let project = parse_project(&project_id)?;
        let status = ctx
            .data_unchecked::<Baton>()
            .project_status(&caller.tenant, &project)
            .await
            .map_err(internal)?;
        Ok(ProjectStatus::new(caller.tenant.clone(), project, status))
    }

    /// A kill switch: its state, who set it, why, when, and its history.
    async fn kill_switch(
        &self,
        ctx: &Context<'_>,
        scope: KillSwitchScope,
    ) -> async_graphql::Result<KillSwitch> {
        flow::kill_switch(ctx, caller(ctx)?, &scope).await
    }

    /// How one of the caller's tasks produced its last result (null when its worker sent no
    /// provenance); `NOT_FOUND` when the caller has no such task.
    async fn provenance(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
    ) -> async_graphql::Result<Option<Provenance>> {
        graph::provenance(ctx, &task_id).await
    }

    /// The graph around a task: what it was built from (`UPSTREAM`) or what was built from it
    /// (`DOWNSTREAM`), `depth` levels (1 to 100), at most 5000 tasks.
    async fn lineage(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
        #[graphql(default_with = "LineageDirection::Downstream")] direction: LineageDirection,
        #[graphql(default = 10)] depth: i32,
    ) -> async_graphql::Result<Lineage> {
        graph::lineage(ctx, &task_id, direction, depth).await
    }

    /// What `requestRollback` would touch: the succeeded tasks it would roll back, the
    /// unfinished ones it would cancel, their projects and tokens. Changes nothing.
    async fn rollback_preview(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
    ) -> async_graphql::Result<RollbackPreview> {
        graph::rollback_preview(ctx, &task_id).await
    }

    /// The caller's tasks whose result names `model` in its provenance, newest result first:
    /// "everything produced by model X since T".
    #[graphql(complexity = "first.clamp(1, MAX_PAGE) as usize * child_complexity")]
    async fn produced_by(
        &self,
        ctx: &Context<'_>,
        model: String,
        #[graphql(desc = "Only results committed at or after this time.")] since: Option<
            DateTime<Utc>,
        >,
        #[graphql(desc = "Only results committed before this time.")] until: Option<DateTime<Utc>>,
        #[graphql(default = 20, desc = "Page size, 1 to 100.")] first: i32,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> async_graphql::Result<TaskConnection> {
        graph::produced_by(ctx, model, since, until, first, after).await
    }

    /// What every DLQ holds: depth, oldest age, and letters grouped by failure class, tier and
    /// project. Needs the `baton:admin` scope.
    async fn dlq_stats(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<DlqStats>> {
        ops::dlq_stats(ctx).await
    }

    /// Every transition of one of the caller's tasks, oldest first.
    async fn task_history(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Vec<HistoryEntry>> {
        Ok(types::history(&owned_task(ctx, &id).await?))
    }
}

/// Mutations.
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Submits a task. Invalid input fails with `INVALID_INPUT`, naming every wrong field (the
    /// same messages as a `SubmitTask` event gets).
    async fn submit_task(
        &self,
        ctx: &Context<'_>,
        input: SubmitTaskInput,
    ) -> async_graphql::Result<Task> {
        let caller = caller(ctx)?;
        let request = SubmitRequest {
            tenant: Some(caller.tenant.to_string()),
            ..input.into()
        };
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        match ctx.data_unchecked::<Baton>().submit(&request, id).await {
            Ok(submitted) => Ok(Task(submitted.task)),
            Err(SubmitError::Invalid(invalid)) => {
                let fields: Vec<String> = invalid.0.iter().map(|e| e.field.clone()).collect();
                Err(
                    error("INVALID_INPUT", invalid.to_string()).extend_with(|_, x| {
                        x.set("field", fields[0].clone());
                        x.set("fields", fields.clone());
                    }),
                )
            }
            Err(SubmitError::Dependency(refused)) => Err(graph::dependency_error(refused)),
            Err(SubmitError::IdempotencyConflict { key, task_id }) => Err(error(
                "IDEMPOTENCY_CONFLICT",
                format!("idempotency key `{key}` was used by task {task_id} with another payload"),
            )
            .extend_with(|_, x| {
                x.set("existingTaskId", task_id.to_string());
                x.set("idempotencyKey", key.clone());
            })),
            Err(SubmitError::Infra(infra)) => Err(internal(infra)),
        }
    }

    /// Cancels an unfinished task; cancelling a cancelled task returns it unchanged. A finished
    /// task answers `INVALID_TRANSITION`.
    async fn cancel_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<Task> {
        let caller = caller(ctx)?;
        let task_id = parse_id(&id)?;
        let reason = reason.unwrap_or_else(|| format!("cancelled by {}", caller.subject));
        check_reason(&reason).map_err(|message| invalid("reason", message))?;
        let command = Command::Cancel { reason };
        let handled = ctx
            .data_unchecked::<Baton>()
            .execute(&caller.tenant, &task_id, &command)
            .await
            .map_err(internal)?;
        // Only a finished task refuses a cancel.
        moved(handled, &task_id)
    }

    /// Rolls back a succeeded task and everything built on it: the task and every succeeded
    /// descendant become ROLLED_BACK (tainted), unfinished descendants are cancelled, and a
    /// `TaskRolledBack` event is published for each so workers can compensate. The walk goes on
    /// through the queue after this returns the task. A rolled-back task is returned unchanged;
    /// an unfinished or failed one answers `INVALID_TRANSITION`.
    async fn request_rollback(
        &self,
        ctx: &Context<'_>,
        task_id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<Task> {
        graph::request_rollback(ctx, &task_id, reason).await
    }

    /// Moves the letters of `queue`'s DLQ that match `filter` back to `queue`, at most
    /// `ratePerSecond` (1 to 100, default 10), noting the redrive in each task's history; the
    /// others stay. `dryRun` lists what would move. One call runs up to 20 s (`complete: false`
    /// then: call again). Stopped at any point, it loses nothing: a letter leaves the DLQ only
    /// once it is back in its queue. Needs the `baton:admin` scope.
    async fn redrive_dlq(
        &self,
        ctx: &Context<'_>,
        queue: String,
        #[graphql(default)] filter: RedriveFilter,
        rate_per_second: Option<i32>,
        #[graphql(default)] dry_run: bool,
    ) -> async_graphql::Result<RedriveResult> {
        ops::redrive_dlq(ctx, queue, filter, rate_per_second, dry_run).await
    }

    /// Stops every dispatch in scope at once: due tasks stay Scheduled until it is disengaged;
    /// running ones finish. The global switch needs the `baton:admin` scope (else `FORBIDDEN`).
    async fn engage_kill_switch(
        &self,
        ctx: &Context<'_>,
        scope: KillSwitchScope,
        reason: String,
    ) -> async_graphql::Result<KillSwitch> {
        flow::set_kill_switch(ctx, caller(ctx)?, &scope, true, &reason).await
    }

    /// Lets dispatch in scope go again; the tasks it held start at once (10 per second).
    async fn disengage_kill_switch(
        &self,
        ctx: &Context<'_>,
        scope: KillSwitchScope,
        reason: String,
    ) -> async_graphql::Result<KillSwitch> {
        flow::set_kill_switch(ctx, caller(ctx)?, &scope, false, &reason).await
    }

    /// Pauses a project: due tasks wait in its ready set instead of starting (nothing is
    /// dropped); running tasks finish normally.
    async fn pause_project(
        &self,
        ctx: &Context<'_>,
        project_id: String,
        reason: String,
    ) -> async_graphql::Result<ProjectStatus> {
        let control = ProjectControl::Pause;
        flow::control_project(ctx, caller(ctx)?, &project_id, control, &reason).await
    }

    /// Resumes a paused project; its waiting tasks start at most `ratePerSecond` per second
    /// (and never beyond its limit).
    async fn resume_project(
        &self,
        ctx: &Context<'_>,
        project_id: String,
        reason: String,
        #[graphql(default = 10, desc = "1 to 1000.")] rate_per_second: i32,
    ) -> async_graphql::Result<ProjectStatus> {
        let control = ProjectControl::Resume {
            rate: rate_per_second,
        };
        flow::control_project(ctx, caller(ctx)?, &project_id, control, &reason).await
    }

    /// Sets how many of a project's tasks may run at once (1 to 10000; default 10).
    async fn set_project_limit(
        &self,
        ctx: &Context<'_>,
        project_id: String,
        limit: i32,
        reason: String,
    ) -> async_graphql::Result<ProjectStatus> {
        let control = ProjectControl::Limit(limit);
        flow::control_project(ctx, caller(ctx)?, &project_id, control, &reason).await
    }
}

/// The task state a subscription is run against when the notifier fans out a transition.
#[derive(Debug, Clone)]
pub struct Update(pub baton_domain::Task);

/// Filled in while a subscription starts: what it watches.
#[derive(Debug, Clone, Default)]
pub struct Registration(Arc<Mutex<Option<Watch>>>);

impl Registration {
    fn watch(&self, watch: Watch) {
        *self.0.lock().unwrap() = Some(watch);
    }

    /// What the subscription watches, once it has started.
    pub fn watched(&self) -> Option<Watch> {
        self.0.lock().unwrap().clone()
    }
}

/// Subscriptions, over WebSocket (graphql-transport-ws). Each pushes the task's new state on
/// every transition that matches.
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// One of the caller's tasks: its current state at once, then its state after every
    /// transition. `NOT_FOUND` when the caller has no task with this id.
    async fn task_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Task> + use<>> {
        let caller = caller(ctx)?;
        let task = match ctx.data_opt::<Update>() {
            Some(Update(task)) => {
                let id = parse_id(&id)?;
                (task.tenant == caller.tenant && task.id == id).then(|| task.clone())
            }
            None => {
                let task = owned_task(ctx, &id).await?;
                ctx.data::<Registration>()?.watch(Watch::Task(task.id));
                Some(task)
            }
        };
        Ok(stream::iter(task.map(Task)))
    }

    /// Every task of one of the caller's projects, after each transition into one of `statuses`
    /// (any status when absent).
    async fn project_tasks(
        &self,
        ctx: &Context<'_>,
        project_id: String,
        statuses: Option<Vec<TaskStatus>>,
    ) -> async_graphql::Result<impl Stream<Item = Task> + use<>> {
        let caller = caller(ctx)?;
        let project = parse_project(&project_id)?;
        let task = match ctx.data_opt::<Update>() {
            Some(Update(task)) => {
                let wanted = statuses
                    .as_ref()
                    .is_none_or(|s| s.contains(&TaskStatus::from(task.status)));
                (task.tenant == caller.tenant && task.project == project && wanted)
                    .then(|| task.clone())
            }
            None => {
                ctx.data::<Registration>()?.watch(Watch::Project(project));
                None
            }
        };
        Ok(stream::iter(task.map(Task)))
    }
}
