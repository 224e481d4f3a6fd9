//! Task graphs: dependencies, the provenance a result records, and what a rollback does to the
//! tasks built on a rolled-back one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::decide::Command;
use crate::ids::{TaskId, Tenant};
use crate::task::{Status, Task};

/// Most dependencies one task may have.
pub const MAX_DEPENDENCIES: usize = 32;
/// Most dependents one task may have (they are listed on its item).
pub const MAX_DEPENDENTS: usize = 1000;
/// Most output artifacts one provenance record may list.
pub const MAX_ARTIFACTS: usize = 100;
/// Longest text field of a provenance record.
const MAX_TEXT: usize = 256;
/// Longest artifact URI.
const MAX_URI: usize = 2048;

/// An output a worker produced, by reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// Where it is, e.g. `s3://bucket/key`.
    pub uri: String,
    /// A content digest, e.g. `sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Its media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// How a result was produced, as the worker reported it: committed in the same write as the
/// result. Every field is optional; the worker sends what it knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The model used, e.g. `claude-sonnet-4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The tier it ran on (the worker's own, which may refine the task's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The subject domain, e.g. `billing`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Tokens read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_in: Option<u64>,
    /// Tokens written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<u64>,
    /// The worker that ran the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// What it produced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// When the worker started the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl Provenance {
    /// Checks the bounds that keep a record inside one item; names the first field out of them.
    pub fn check(&self) -> Result<(), String> {
        let texts = [
            ("model", &self.model),
            ("tier", &self.tier),
            ("domain", &self.domain),
            ("worker_id", &self.worker_id),
        ];
        for (field, text) in texts {
            if let Some(text) = text
                && (text.trim().is_empty() || text.chars().count() > MAX_TEXT)
            {
                return Err(format!(
                    "provenance.{field} must be 1 to {MAX_TEXT} characters"
                ));
            }
        }
        if self.artifacts.len() > MAX_ARTIFACTS {
            return Err(format!(
                "provenance.artifacts must list at most {MAX_ARTIFACTS}"
            ));
        }
        for (i, artifact) in self.artifacts.iter().enumerate() {
            if artifact.uri.is_empty() || artifact.uri.len() > MAX_URI {
                return Err(format!(
                    "provenance.artifacts[{i}].uri must be 1 to {MAX_URI} bytes"
                ));
            }
            let texts = [
                ("digest", &artifact.digest),
                ("media_type", &artifact.media_type),
            ];
            for (field, text) in texts {
                if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT) {
                    return Err(format!(
                        "provenance.artifacts[{i}].{field} must be at most {MAX_TEXT} bytes"
                    ));
                }
            }
        }
        if let (Some(started), Some(finished)) = (self.started_at, self.finished_at)
            && finished < started
        {
            return Err("provenance.finished_at is before started_at".to_owned());
        }
        Ok(())
    }

    /// Tokens read and written.
    pub fn tokens(&self) -> u64 {
        self.tokens_in.unwrap_or(0) + self.tokens_out.unwrap_or(0)
    }
}

/// Why a task was rolled back: the rollback request that reached it, and through which task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Taint {
    /// The task the rollback was requested on.
    pub root: TaskId,
    /// The dependency it reached this task through (`None` on the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<TaskId>,
    /// The request's id. A redelivery of the same request repeats the rollback's effects;
    /// another request on a rolled-back task changes nothing.
    pub request: String,
}

impl Taint {
    /// The taint a rollback of `self`'s task hands on to the task's dependents.
    pub fn passed_on(&self, from: TaskId) -> Taint {
        Taint {
            root: self.root,
            via: Some(from),
            request: self.request.clone(),
        }
    }
}

/// What a rollback of an upstream task does to a task, by its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// A succeeded task: rolled back (tainted); the walk goes on to its dependents.
    RollBack,
    /// An unfinished task: cancelled; its dependents are cancelled in turn.
    Cancel,
    /// A task that failed, was cancelled or rolled back already: left alone (its dependents were
    /// cancelled when it finished), and the walk stops there.
    Untouched,
}

impl Reach {
    /// What a rollback does to a task in `status`.
    pub fn of(status: Status) -> Reach {
        match status {
            Status::Succeeded => Reach::RollBack,
            Status::Pending | Status::Scheduled | Status::Running => Reach::Cancel,
            Status::Failed | Status::Cancelled | Status::RolledBack => Reach::Untouched,
        }
    }
}

/// What a task's move asks of its dependents: the walk of a task graph, one edge at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cascade {
    /// The owner of the graph.
    pub tenant: Tenant,
    /// The task that moved.
    pub parent: TaskId,
    /// Its dependents.
    pub dependents: Vec<TaskId>,
    /// What each dependent is asked.
    pub step: Step,
    /// The parent's correlation id, carried on every message of the walk.
    pub correlation_id: String,
}

/// The command a cascade hands each dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The parent succeeded: a dependent whose dependencies have all succeeded starts.
    Release,
    /// The parent failed or was cancelled: unfinished dependents are cancelled.
    Cancel {
        /// Names the parent and what became of it.
        reason: String,
    },
    /// The parent was rolled back: succeeded dependents are rolled back, unfinished ones
    /// cancelled.
    Rollback {
        /// The rollback's reason.
        reason: String,
        /// The taint each dependent receives.
        taint: Taint,
    },
}

impl Step {
    /// The command a dependent receives through the queue; `None` for a release, which needs
    /// the dependent's dependencies read first.
    pub fn command(&self) -> Option<Command> {
        match self {
            Step::Release => None,
            Step::Cancel { reason } => Some(Command::Cancel {
                reason: reason.clone(),
            }),
            Step::Rollback { reason, taint } => Some(Command::Rollback {
                reason: reason.clone(),
                taint: taint.clone(),
            }),
        }
    }
}

impl Cascade {
    /// What `task`'s current state asks of its dependents, if anything.
    pub fn of(task: &Task) -> Option<Cascade> {
        if task.dependents.is_empty() {
            return None;
        }
        let step = match task.status {
            Status::Succeeded => Step::Release,
            Status::Failed => Step::Cancel {
                reason: format!("dependency {} failed", task.id),
            },
            Status::Cancelled => Step::Cancel {
                reason: format!("dependency {} was cancelled", task.id),
            },
            Status::RolledBack => Step::Rollback {
                reason: task.reason.clone().unwrap_or_default(),
                taint: task.taint.as_ref()?.passed_on(task.id),
            },
            Status::Pending | Status::Scheduled | Status::Running => return None,
        };
        Some(Cascade {
            tenant: task.tenant.clone(),
            parent: task.id,
            dependents: task.dependents.clone(),
            step,
            correlation_id: task.correlation_id.clone(),
        })
    }
}

/// The reason a task cancelled by the rollback of its dependency `via` records.
pub fn cancelled_by_rollback(via: TaskId) -> String {
    format!("dependency {via} was rolled back")
}

/// Why a submission's dependencies cannot be accepted. Every variant names the tasks at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DependencyError {
    /// No such tasks for the submitter's tenant (a task of another tenant is unknown to it).
    #[error("unknown dependencies: {}", list(.0))]
    Unknown(Vec<TaskId>),
    /// The task would depend on itself, directly or through its dependencies.
    #[error("dependency cycle: {}", list(.0))]
    Cycle(Vec<TaskId>),
    /// These dependencies finished without succeeding, so the task could never start.
    #[error("dependencies that can never succeed: {}", .0.iter().map(|(id, s)| format!("{id} is {}", s.as_str())).collect::<Vec<_>>().join(", "))]
    Finished(Vec<(TaskId, Status)>),
    /// These dependencies have as many dependents as a task may have.
    #[error("dependencies with {MAX_DEPENDENTS} dependents already: {}", list(.0))]
    Full(Vec<TaskId>),
}

impl DependencyError {
    /// A stable code for the kind of fault.
    pub fn code(&self) -> &'static str {
        match self {
            DependencyError::Unknown(_) => "UNKNOWN_DEPENDENCY",
            DependencyError::Cycle(_) => "DEPENDENCY_CYCLE",
            DependencyError::Finished(_) => "DEPENDENCY_FINISHED",
            DependencyError::Full(_) => "TOO_MANY_DEPENDENTS",
        }
    }

    /// The tasks at fault.
    pub fn task_ids(&self) -> Vec<TaskId> {
        match self {
            DependencyError::Unknown(ids)
            | DependencyError::Cycle(ids)
            | DependencyError::Full(ids) => ids.clone(),
            DependencyError::Finished(found) => found.iter().map(|(id, _)| *id).collect(),
        }
    }
}

fn list(ids: &[TaskId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that task `id` may depend on `depends_on`, given the dependencies as stored (`found`,
/// read for the submitter's tenant), and answers the status it starts in: Scheduled when every
/// dependency has succeeded already, else Pending.
///
/// Dependencies must exist when a task is submitted, so every edge points from a new task to an
/// older one and the only cycle a submission can form is through the task itself (a task whose id
/// its submitter chose, e.g. derived from an event, listed among its own dependencies, or among
/// the dependencies' own). The walk checks the dependencies' dependencies as stored.
pub fn check_dependencies(
    id: TaskId,
    depends_on: &[TaskId],
    found: &[Task],
) -> Result<Status, DependencyError> {
    let cycle: Vec<TaskId> = found
        .iter()
        .filter(|dependency| dependency.depends_on.contains(&id))
        .map(|dependency| dependency.id)
        .collect();
    if depends_on.contains(&id) {
        return Err(DependencyError::Cycle(vec![id]));
    }
    if !cycle.is_empty() {
        return Err(DependencyError::Cycle(
            std::iter::once(id).chain(cycle).collect(),
        ));
    }
    let unknown: Vec<TaskId> = depends_on
        .iter()
        .filter(|wanted| !found.iter().any(|task| task.id == **wanted))
        .copied()
        .collect();
    if !unknown.is_empty() {
        return Err(DependencyError::Unknown(unknown));
    }
    let finished: Vec<(TaskId, Status)> = found
        .iter()
        .filter(|task| task.status.is_terminal() && task.status != Status::Succeeded)
        .map(|task| (task.id, task.status))
        .collect();
    if !finished.is_empty() {
        return Err(DependencyError::Finished(finished));
    }
    let full: Vec<TaskId> = found
        .iter()
        .filter(|task| task.dependents.len() >= MAX_DEPENDENTS && !task.dependents.contains(&id))
        .map(|task| task.id)
        .collect();
    if !full.is_empty() {
        return Err(DependencyError::Full(full));
    }
    Ok(
        if found.iter().all(|task| task.status == Status::Succeeded) {
            Status::Scheduled
        } else {
            Status::Pending
        },
    )
}
