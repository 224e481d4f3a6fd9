//! The service's view of task graphs: lineage, rollback and its preview, and results by model.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use baton_domain::{Command, ProjectId, Reach, Rejection, Status, Taint, Task, TaskId, Tenant};

use crate::ports::{InfraError, ModelQuery, Page};
use crate::service::{Baton, Handled};

/// The deepest lineage a caller may ask for.
pub const MAX_LINEAGE_DEPTH: u32 = 100;
/// The most tasks one lineage or rollback preview returns; a bigger graph is cut short and says
/// so.
pub const MAX_GRAPH_NODES: usize = 5000;

/// Which way a lineage walks from its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards what it was built from (its dependencies).
    Upstream,
    /// Towards what was built from it (its dependents).
    Downstream,
}

/// A task's graph in one direction: the tasks reached and the edges between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Lineage {
    /// The tasks, the starting one first, then level by level.
    pub nodes: Vec<Task>,
    /// `(dependency, dependent)` pairs between the nodes.
    pub edges: Vec<(TaskId, TaskId)>,
    /// Whether the walk stopped at [`MAX_GRAPH_NODES`] with more to go.
    pub truncated: bool,
}

/// What a rollback of a task would touch, found without changing anything.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackPreview {
    /// Succeeded tasks that would be rolled back (the task itself first).
    pub rolled_back: Vec<Task>,
    /// Unfinished tasks that would be cancelled.
    pub cancelled: Vec<Task>,
    /// Whether the walk stopped at [`MAX_GRAPH_NODES`] with more to go.
    pub truncated: bool,
}

impl RollbackPreview {
    /// Every task touched.
    pub fn touched(&self) -> impl Iterator<Item = &Task> {
        self.rolled_back.iter().chain(&self.cancelled)
    }

    /// How many touched tasks are in each status now, in lifecycle order.
    pub fn by_status(&self) -> Vec<(Status, usize)> {
        let mut counts: BTreeMap<Status, usize> = BTreeMap::new();
        for task in self.touched() {
            *counts.entry(task.status).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// The projects of the touched tasks.
    pub fn projects(&self) -> BTreeSet<ProjectId> {
        self.touched().map(|task| task.project.clone()).collect()
    }

    /// Tokens read and written by the results that would be rolled back.
    pub fn tokens(&self) -> (u64, u64) {
        self.rolled_back
            .iter()
            .filter_map(|task| task.provenance.as_ref())
            .fold((0, 0), |(read, written), p| {
                (
                    read + p.tokens_in.unwrap_or(0),
                    written + p.tokens_out.unwrap_or(0),
                )
            })
    }
}

/// Why a graph query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// The caller has no task with this id.
    #[error("no task {0}")]
    NotFound(TaskId),
    /// The task's status does not allow it (a rollback of an unfinished or failed task).
    #[error(transparent)]
    Rejected(Rejection),
    /// Infrastructure failed; retry.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

impl Baton {
    /// Rolls back a succeeded task, as request `request`: it becomes RolledBack (tainted) and
    /// the walk goes on through the queue to its dependents. A task rolled back before is
    /// returned unchanged.
    pub async fn rollback(
        &self,
        tenant: &Tenant,
        id: &TaskId,
        reason: &str,
        request: &str,
    ) -> Result<Handled, InfraError> {
        let command = Command::Rollback {
            reason: reason.to_owned(),
            taint: Taint {
                root: *id,
                via: None,
                request: request.to_owned(),
            },
        };
        self.execute(tenant, id, &command).await
    }

    /// The lineage of a task, `depth` levels in `direction` (1 to [`MAX_LINEAGE_DEPTH`]).
    pub async fn lineage(
        &self,
        tenant: &Tenant,
        id: &TaskId,
        direction: Direction,
        depth: u32,
    ) -> Result<Lineage, GraphError> {
        let root = self.graph_root(tenant, id).await?;
        self.walk(root, direction, depth.min(MAX_LINEAGE_DEPTH), |_| true)
            .await
    }

    /// What a rollback of a task would touch: the task, its succeeded descendants (rolled back)
    /// and its unfinished ones (cancelled), walking through every task the rollback would reach.
    /// Nothing for a task rolled back before; a task that has not succeeded is refused as the
    /// rollback would refuse it.
    pub async fn rollback_preview(
        &self,
        tenant: &Tenant,
        id: &TaskId,
    ) -> Result<RollbackPreview, GraphError> {
        let root = self.graph_root(tenant, id).await?;
        let mut preview = RollbackPreview {
            rolled_back: Vec::new(),
            cancelled: Vec::new(),
            truncated: false,
        };
        match root.status {
            Status::Succeeded => {}
            Status::RolledBack => return Ok(preview),
            status => {
                return Err(GraphError::Rejected(Rejection::InvalidTransition {
                    status,
                    command: "rollback",
                }));
            }
        }
        let reached = self
            .walk(root, Direction::Downstream, u32::MAX, |task| {
                Reach::of(task.status) != Reach::Untouched
            })
            .await?;
        preview.truncated = reached.truncated;
        for task in reached.nodes {
            match Reach::of(task.status) {
                Reach::RollBack => preview.rolled_back.push(task),
                Reach::Cancel => preview.cancelled.push(task),
                Reach::Untouched => {}
            }
        }
        Ok(preview)
    }

    /// Tasks whose result names a model, newest first.
    pub async fn produced_by(&self, query: &ModelQuery) -> Result<Page, InfraError> {
        self.store.produced_by(query).await
    }

    async fn graph_root(&self, tenant: &Tenant, id: &TaskId) -> Result<Task, GraphError> {
        self.store
            .get(tenant, id)
            .await?
            .ok_or(GraphError::NotFound(*id))
    }

    /// Walks from `root`, level by level, at most `depth` levels, through the tasks `follow`
    /// accepts (the root is always taken); each level is one batch read.
    async fn walk(
        &self,
        root: Task,
        direction: Direction,
        depth: u32,
        follow: impl Fn(&Task) -> bool,
    ) -> Result<Lineage, GraphError> {
        let tenant = root.tenant.clone();
        let mut seen: HashSet<TaskId> = HashSet::from([root.id]);
        let mut lineage = Lineage {
            nodes: Vec::new(),
            edges: Vec::new(),
            truncated: false,
        };
        let mut level = vec![root];
        let mut levels_left = depth;
        loop {
            let mut next_ids = Vec::new();
            for task in &level {
                let neighbours = match direction {
                    Direction::Downstream => &task.dependents,
                    Direction::Upstream => &task.depends_on,
                };
                next_ids.extend(neighbours.iter().filter(|other| seen.insert(**other)));
            }
            lineage.nodes.append(&mut level);
            if levels_left == 0 || next_ids.is_empty() {
                break;
            }
            levels_left -= 1;
            let room = MAX_GRAPH_NODES.saturating_sub(lineage.nodes.len());
            if next_ids.len() > room {
                next_ids.truncate(room);
                lineage.truncated = true;
            }
            level = self.store.get_many(&tenant, &next_ids).await?;
            level.retain(|task| follow(task));
            level.sort_by_key(|task| task.id);
        }
        let included: HashSet<TaskId> = lineage.nodes.iter().map(|task| task.id).collect();
        for task in &lineage.nodes {
            match direction {
                Direction::Downstream => lineage.edges.extend(
                    task.dependents
                        .iter()
                        .filter(|child| included.contains(child))
                        .map(|&child| (task.id, child)),
                ),
                Direction::Upstream => lineage.edges.extend(
                    task.depends_on
                        .iter()
                        .filter(|parent| included.contains(parent))
                        .map(|&parent| (parent, task.id)),
                ),
            }
        }
        Ok(lineage)
    }
}
