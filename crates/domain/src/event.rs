use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::flow::Parked;
use crate::graph::{Provenance, Taint};
use crate::ids::{Lease, ProjectId, TaskId, Tenant, Tier};
use crate::task::{Status, Task, TaskError};

/// The kinds of event Baton publishes on its bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A task was accepted: scheduled, or pending while it waits for dependencies.
    Submitted,
    /// Every dependency of a pending task has succeeded: it is scheduled.
    Released,
    /// An attempt may start now: a worker of the task's tier should run it.
    Ready,
    /// The task succeeded.
    Succeeded,
    /// The task failed for good.
    Failed,
    /// An attempt failed; another is scheduled.
    Retrying,
    /// The task was cancelled; a worker running it should stop.
    Cancelled,
    /// A succeeded task was rolled back; its effects should be compensated.
    RolledBack,
    /// A due task could not start (its project is at its limit, paused, or a kill switch is
    /// engaged) and waits in its project's ready set. Not a transition: it stays Scheduled.
    Parked,
}

impl EventKind {
    /// Every kind, in lifecycle order.
    pub const ALL: [EventKind; 9] = [
        EventKind::Submitted,
        EventKind::Released,
        EventKind::Ready,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Retrying,
        EventKind::Cancelled,
        EventKind::RolledBack,
        EventKind::Parked,
    ];

    /// The kind whose `detail-type` is `name`.
    pub fn from_detail_type(name: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.detail_type() == name)
    }

    /// The EventBridge `detail-type`.
    pub fn detail_type(self) -> &'static str {
        match self {
            EventKind::Submitted => "TaskSubmitted",
            EventKind::Released => "TaskReleased",
            EventKind::Ready => "TaskReady",
            EventKind::Succeeded => "TaskSucceeded",
            EventKind::Failed => "TaskFailed",
            EventKind::Retrying => "TaskRetrying",
            EventKind::Cancelled => "TaskCancelled",
            EventKind::RolledBack => "TaskRolledBack",
            EventKind::Parked => "TaskParked",
        }
    }
}

/// An outbound event: the task's state right after a transition. Carries `task_id`, `version` and
/// `attempt`, so consumers can drop duplicates and order by version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// What happened.
    #[serde(skip)]
    pub kind: EventKind,
    /// The task.
    pub task_id: TaskId,
    /// Its owner.
    pub tenant: Tenant,
    /// Its project.
    pub project: ProjectId,
    /// Its name.
    pub name: String,
    /// Its worker tier.
    pub tier: Tier,
    /// Its status after the transition.
    pub status: Status,
    /// Its version after the transition.
    pub version: u64,
    /// Its attempt after the transition.
    pub attempt: u32,
    /// When the transition happened.
    pub at: DateTime<Utc>,
    /// Ties together everything that happens to the task.
    pub correlation_id: String,
    /// `TaskReady`: what the worker receives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// `TaskReady`: when the attempt times out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// `TaskReady`: the attempt's lease, which its result must carry back. In no other event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// `TaskSubmitted`, `TaskReleased`, `TaskRetrying`: when the next attempt is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    /// `TaskSucceeded`, `TaskRolledBack`: the task's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// `TaskFailed`, `TaskRetrying`: the error of the failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// `TaskCancelled`, `TaskRolledBack`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `TaskParked`: what keeps it waiting, and since when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parked: Option<Parked>,
    /// `TaskSubmitted`, `TaskReleased`: the tasks it waited for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TaskId>,
    /// `TaskSucceeded`, `TaskRolledBack`: how the result was produced, so a compensating worker
    /// knows what to undo.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// `TaskRolledBack`: the rollback that reached it, and through which dependency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub taint: Option<Taint>,
}

impl Event {
    /// The event that announces `task`'s current state, if that state is announced.
    pub fn announcing(task: &Task) -> Option<Event> {
        let last_move = task.last_move();
        let released = last_move.is_some_and(|e| e.cause == "released");
        let kind = match task.status {
            Status::Pending | Status::Scheduled if task.version == 1 => EventKind::Submitted,
            Status::Pending => return None,
            Status::Scheduled if released => EventKind::Released,
            Status::Scheduled => EventKind::Retrying,
            Status::Running => EventKind::Ready,
            Status::Succeeded => EventKind::Succeeded,
            Status::Failed => EventKind::Failed,
            Status::Cancelled => EventKind::Cancelled,
            Status::RolledBack => EventKind::RolledBack,
        };
        let has = |kinds: &[EventKind]| kinds.contains(&kind);
        Some(Event {
            kind,
            task_id: task.id,
            tenant: task.tenant.clone(),
            project: task.project.clone(),
            name: task.name.clone(),
            tier: task.tier.clone(),
            status: task.status,
            // A note recorded since does not make this another announcement.
            version: last_move.map_or(task.version, |e| e.version),
            attempt: task.attempt,
            at: last_move.map_or(task.updated_at, |e| e.at),
            correlation_id: task.correlation_id.clone(),
            input: has(&[EventKind::Ready]).then(|| task.input.clone()),
            deadline: task.deadline.filter(|_| has(&[EventKind::Ready])),
            lease: task.lease.clone().filter(|_| has(&[EventKind::Ready])),
            due_at: has(&[
                EventKind::Submitted,
                EventKind::Released,
                EventKind::Retrying,
            ])
            .then_some(task.due_at),
            output: task
                .output
                .clone()
                .filter(|_| has(&[EventKind::Succeeded, EventKind::RolledBack])),
            error: task
                .error
                .clone()
                .filter(|_| has(&[EventKind::Failed, EventKind::Retrying])),
            reason: task
                .reason
                .clone()
                .filter(|_| has(&[EventKind::Cancelled, EventKind::RolledBack])),
            parked: None,
            depends_on: if has(&[EventKind::Submitted, EventKind::Released]) {
                task.depends_on.clone()
            } else {
                Vec::new()
            },
            provenance: task
                .provenance
                .clone()
                .filter(|_| has(&[EventKind::Succeeded, EventKind::RolledBack])),
            taint: task.taint.clone().filter(|_| has(&[EventKind::RolledBack])),
        })
    }

    /// The `TaskSubmitted` that announced `task`'s creation, rebuilt from its first history
    /// entry whatever it became since (with its due time as it is now): what a submission
    /// delivered again repeats, since its first delivery may have stopped before sending it.
    pub fn submission(task: &Task) -> Option<Event> {
        let created = task.history.first()?;
        let mut view = task.clone();
        view.status = created.to;
        view.version = created.version;
        view.attempt = created.attempt;
        view.history.truncate(1);
        Event::announcing(&view)
    }

    /// The `TaskParked` event of a task that waits in its project's ready set.
    pub fn parked(task: &Task) -> Option<Event> {
        let parked = task.parked?;
        let mut event = Event::announcing(task)?;
        event.kind = EventKind::Parked;
        event.due_at = Some(task.due_at);
        event.error = None;
        event.parked = Some(parked);
        event.at = parked.since;
        Some(event)
    }
}
