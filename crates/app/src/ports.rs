use std::error::Error;

use async_trait::async_trait;
use baton_domain::{Event, ProjectId, Status, Task, TaskId, Tenant, Timer};
use chrono::{DateTime, Duration, Utc};

/// An infrastructure failure (network, throttling, a missing resource). Retryable: the message
/// that caused it is failed so its queue delivers it again.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed")]
pub struct InfraError {
    /// What was being done, e.g. `DynamoDB PutItem`.
    pub operation: &'static str,
    /// The underlying error, chain intact.
    #[source]
    pub source: Box<dyn Error + Send + Sync>,
}

impl InfraError {
    /// Wraps `source` as a failure of `operation`.
    pub fn new(operation: &'static str, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            operation,
            source: source.into(),
        }
    }
}

/// Why the sweeper must look at a task, and from when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WakeKind {
    /// Its timer is not armed yet: arm it once the due time is inside the timer window.
    Arm,
    /// Its timer is armed or it is running: check it when it should have moved (a lost timer,
    /// a passed deadline).
    Check,
}

/// When the sweeper must next look at a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wake {
    /// Why.
    pub kind: WakeKind,
    /// From when.
    pub at: DateTime<Utc>,
}

/// The outcome of creating a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// It was written.
    Created,
    /// A task with this id exists already; here it is.
    Exists(Box<Task>),
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, PartialEq)]
pub enum Commit {
    /// Written.
    Committed,
    /// The stored task no longer had the expected status and version; here is what it has
    /// (`None`: it is gone).
    Conflict(Option<Box<Task>>),
}

/// Which tasks to list.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskQuery {
    /// Owner.
    pub tenant: Tenant,
    /// Project.
    pub project: ProjectId,
    /// Only tasks in this status.
    pub status: Option<Status>,
    /// At most this many.
    pub first: usize,
    /// Continue after this task (newest first).
    pub after: Option<TaskId>,
}

/// A page of tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The tasks, newest first.
    pub tasks: Vec<Task>,
    /// Whether more follow.
    pub has_next_page: bool,
}

impl Page {
    /// The page of the first `first` of `tasks`, which a store reads one past the page so it
    /// knows whether another page follows.
    pub fn of_first(mut tasks: Vec<Task>, first: usize) -> Self {
        let has_next_page = tasks.len() > first;
        tasks.truncate(first);
        Self {
            tasks,
            has_next_page,
        }
    }
}

/// Durable task state. Every transition is one conditional write.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Creates `task` unless a task with its id exists.
    async fn create(&self, task: &Task, wake: Option<Wake>) -> Result<Created, InfraError>;
    /// Reads one task.
    async fn get(&self, tenant: &Tenant, id: &TaskId) -> Result<Option<Task>, InfraError>;
    /// Writes `next` (its history entry included) if the stored task still has `current`'s
    /// status and version.
    async fn commit(
        &self,
        current: &Task,
        next: &Task,
        wake: Option<Wake>,
    ) -> Result<Commit, InfraError>;
    /// Lists a project's tasks, newest first.
    async fn list(&self, query: &TaskQuery) -> Result<Page, InfraError>;
    /// Tasks whose wake of `kind` is at or before `until`, at most `limit`.
    async fn wakes(
        &self,
        kind: WakeKind,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Tenant, TaskId)>, InfraError>;
    /// Moves `task`'s wake, if the task is still at its version. Not a transition.
    async fn set_wake(&self, task: &Task, wake: Option<Wake>) -> Result<bool, InfraError>;
}

/// Where outbound events go.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes `events`, all or an error.
    async fn publish(&self, events: &[Event]) -> Result<(), InfraError>;
}

/// Delayed delivery of due timers to `on-due`.
#[async_trait]
pub trait TimerQueue: Send + Sync {
    /// Delivers `timer` after `delay` (at most [`crate::MAX_TIMER_DELAY`]).
    async fn arm(&self, timer: &Timer, delay: Duration) -> Result<(), InfraError>;
}

/// The time. A port so tests can move it.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
