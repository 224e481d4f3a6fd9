//! Task graphs in the schema: provenance, lineage, rollback and its preview, results by model.

use async_graphql::{Context, Enum, ID, SimpleObject};
use baton_app::{Baton, Direction, GraphError, MAX_LINEAGE_DEPTH, ModelQuery};
use baton_domain::{DependencyError, TaskId, check_reason};
use chrono::{DateTime, Utc};

use crate::flow::StatusCount;
use crate::types::{Task, TaskConnection};
use crate::{MAX_PAGE, caller, error, internal, invalid, not_found, parse_id};

/// An output a worker produced, by reference.
#[derive(SimpleObject)]
pub struct Artifact {
    /// Where it is, e.g. `s3://bucket/key`.
    pub uri: String,
    /// Its content digest.
    pub digest: Option<String>,
    /// Its media type.
    pub media_type: Option<String>,
    /// Its size in bytes.
    pub bytes: Option<u64>,
}

/// How a task's last result was produced, as its worker reported it (committed with the
/// result).
#[derive(SimpleObject)]
pub struct Provenance {
    /// The task it belongs to.
    pub task_id: ID,
    /// The model used.
    pub model: Option<String>,
    /// The tier the worker ran on.
    pub tier: Option<String>,
    /// The subject domain.
    pub domain: Option<String>,
    /// Tokens read.
    pub tokens_in: Option<u64>,
    /// Tokens written.
    pub tokens_out: Option<u64>,
    /// The worker that ran the attempt.
    pub worker_id: Option<String>,
    /// What it produced.
    pub artifacts: Vec<Artifact>,
    /// When the worker started the attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// When Baton committed the result.
    pub recorded_at: Option<DateTime<Utc>>,
    /// Whether the result was rolled back.
    pub tainted: bool,
}

impl Provenance {
    /// The provenance of `task`, if its result carried one.
    pub fn of(task: &baton_domain::Task) -> Option<Self> {
        let p = task.provenance.clone()?;
        Some(Self {
            task_id: ID(task.id.to_string()),
            model: p.model,
            tier: p.tier,
            domain: p.domain,
            tokens_in: p.tokens_in,
            tokens_out: p.tokens_out,
            worker_id: p.worker_id,
            artifacts: p
                .artifacts
                .into_iter()
                .map(|a| Artifact {
                    uri: a.uri,
                    digest: a.digest,
                    media_type: a.media_type,
                    bytes: a.bytes,
                })
                .collect(),
            started_at: p.started_at,
            finished_at: p.finished_at,
            recorded_at: task.produced_at(),
            tainted: task.taint.is_some(),
        })
    }
}

/// Which rollback reached a rolled-back task.
#[derive(SimpleObject)]
pub struct Taint {
    /// The task the rollback was requested on.
    pub root: ID,
    /// The dependency it came through (null on the root).
    pub via: Option<ID>,
    /// The request's id.
    pub request: String,
}

impl From<&baton_domain::Taint> for Taint {
    fn from(taint: &baton_domain::Taint) -> Self {
        Self {
            root: ID(taint.root.to_string()),
            via: taint.via.map(|via| ID(via.to_string())),
            request: taint.request.clone(),
        }
    }
}

/// Which way a lineage walks.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "baton_app::Direction")]
pub enum LineageDirection {
    /// Towards what the task was built from (its dependencies).
    Upstream,
    /// Towards what was built from it (its dependents).
    Downstream,
}

/// A dependency edge: `to` depends on `from`.
#[derive(SimpleObject)]
pub struct LineageEdge {
    /// The dependency.
    pub from: ID,
    /// The dependent.
    pub to: ID,
}

/// A task's graph in one direction.
#[derive(SimpleObject)]
pub struct Lineage {
    /// The tasks: the starting one first, then level by level.
    pub nodes: Vec<Task>,
    /// The dependency edges between them.
    pub edges: Vec<LineageEdge>,
    /// Whether the graph was cut short at 5000 tasks.
    pub truncated: bool,
}

/// What a rollback would touch. Nothing is changed by asking.
#[derive(SimpleObject)]
pub struct RollbackPreview {
    /// Succeeded tasks that would be rolled back and tainted (the task itself first).
    pub rolled_back: Vec<Task>,
    /// Unfinished tasks that would be cancelled.
    pub cancelled: Vec<Task>,
    /// The touched tasks by their current status.
    pub by_status: Vec<StatusCount>,
    /// The projects of the touched tasks.
    pub projects: Vec<String>,
    /// Tokens read by the results that would be rolled back.
    pub tokens_in: u64,
    /// Tokens written by them.
    pub tokens_out: u64,
    /// Both.
    pub total_tokens: u64,
    /// Whether the walk was cut short at 5000 tasks.
    pub truncated: bool,
}

fn graph_error(refused: GraphError) -> async_graphql::Error {
    match refused {
        GraphError::NotFound(id) => not_found(&id),
        GraphError::Rejected(rejection) => error("INVALID_TRANSITION", rejection.to_string()),
        GraphError::Infra(infra) => internal(infra),
    }
}

/// A submission's dependencies refused: `INVALID_INPUT` on `dependsOn`, with the fault's own
/// code as `reason` and the tasks at fault as `taskIds`.
pub fn dependency_error(refused: DependencyError) -> async_graphql::Error {
    use async_graphql::ErrorExtensions;
    let ids: Vec<String> = refused.task_ids().iter().map(ToString::to_string).collect();
    invalid("dependsOn", refused.to_string()).extend_with(|_, e| {
        e.set("reason", refused.code());
        e.set("taskIds", ids.clone());
    })
}

pub async fn provenance(
    ctx: &Context<'_>,
    task_id: &ID,
) -> async_graphql::Result<Option<Provenance>> {
    let task = crate::owned_task(ctx, task_id).await?;
    Ok(Provenance::of(&task))
}

pub async fn lineage(
    ctx: &Context<'_>,
    task_id: &ID,
    direction: LineageDirection,
    depth: i32,
) -> async_graphql::Result<Lineage> {
    let caller = caller(ctx)?;
    let id = parse_id(task_id)?;
    if !(1..=MAX_LINEAGE_DEPTH as i32).contains(&depth) {
        return Err(invalid(
            "depth",
            format!("depth must be 1 to {MAX_LINEAGE_DEPTH}"),
        ));
    }
    let lineage = ctx
        .data_unchecked::<Baton>()
        .lineage(
            &caller.tenant,
            &id,
            Direction::from(direction),
            depth as u32,
        )
        .await
        .map_err(graph_error)?;
    Ok(Lineage {
        nodes: lineage.nodes.into_iter().map(Task).collect(),
        edges: lineage
            .edges
            .into_iter()
            .map(|(from, to)| LineageEdge {
                from: ID(from.to_string()),
                to: ID(to.to_string()),
            })
            .collect(),
        truncated: lineage.truncated,
    })
}

pub async fn rollback_preview(
    ctx: &Context<'_>,
    task_id: &ID,
) -> async_graphql::Result<RollbackPreview> {
    let caller = caller(ctx)?;
    let id = parse_id(task_id)?;
    let preview = ctx
        .data_unchecked::<Baton>()
        .rollback_preview(&caller.tenant, &id)
        .await
        .map_err(graph_error)?;
    let (tokens_in, tokens_out) = preview.tokens();
    Ok(RollbackPreview {
        by_status: preview
            .by_status()
            .into_iter()
            .map(|(status, count)| StatusCount {
                status: status.into(),
                count: count as u64,
            })
            .collect(),
        projects: preview
            .projects()
            .into_iter()
            .map(|project| project.to_string())
            .collect(),
        tokens_in,
        tokens_out,
        total_tokens: tokens_in + tokens_out,
        truncated: preview.truncated,
        rolled_back: preview.rolled_back.into_iter().map(Task).collect(),
        cancelled: preview.cancelled.into_iter().map(Task).collect(),
    })
}

pub async fn request_rollback(
    ctx: &Context<'_>,
    task_id: &ID,
    reason: Option<String>,
) -> async_graphql::Result<Task> {
    let caller = caller(ctx)?;
    let id = parse_id(task_id)?;
    let reason = reason.unwrap_or_else(|| format!("rolled back by {}", caller.subject));
    check_reason(&reason).map_err(|message| invalid("reason", message))?;
    let request = uuid::Uuid::now_v7().to_string();
    let handled = ctx
        .data_unchecked::<Baton>()
        .rollback(&caller.tenant, &id, &reason, &request)
        .await
        .map_err(internal)?;
    crate::moved(handled, &id)
}

pub async fn produced_by(
    ctx: &Context<'_>,
    model: String,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    first: i32,
    after: Option<String>,
) -> async_graphql::Result<TaskConnection> {
    let caller = caller(ctx)?;
    if model.is_empty() || model.chars().count() > 256 {
        return Err(invalid("model", "must be 1 to 256 characters"));
    }
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(invalid("first", format!("first must be 1 to {MAX_PAGE}")));
    }
    let after = after
        .map(|cursor| TaskId::parse(&cursor).map_err(|e| invalid("after", e.to_string())))
        .transpose()?;
    let query = ModelQuery {
        tenant: caller.tenant.clone(),
        model,
        since,
        until,
        first: first as usize,
        after,
    };
    let page = ctx
        .data_unchecked::<Baton>()
        .produced_by(&query)
        .await
        .map_err(internal)?;
    Ok(TaskConnection::from(page))
}
