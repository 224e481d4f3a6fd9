use async_graphql::{ComplexObject, Enum, ID, InputObject, Json, Object, SimpleObject};
use baton_app::Page;
use baton_domain::{RetryInput, SubmitRequest};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Where a task is in its lifecycle.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "baton_domain::Status")]
pub enum TaskStatus {
    /// Waiting for dependencies.
    Pending,
    /// Waiting for its due time.
    Scheduled,
    /// Handed to a worker.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Cancelled on request.
    Cancelled,
    /// Rolled back after success.
    RolledBack,
}

/// A unit of work and everything Baton knows about it.
pub struct Task(pub baton_domain::Task);

/// Why an attempt failed.
#[derive(SimpleObject)]
pub struct TaskError {
    /// Stable code, e.g. `TIMEOUT`.
    pub code: String,
    /// Explanation.
    pub message: String,
    /// Whether another attempt could succeed; when not, the task failed without retrying.
    pub retryable: bool,
}

/// One transition of a task.
#[derive(SimpleObject)]
pub struct HistoryEntry {
    /// The version it produced.
    pub version: u64,
    /// Status before (null for the submission).
    pub from: Option<TaskStatus>,
    /// Status after.
    pub to: TaskStatus,
    /// When.
    pub at: DateTime<Utc>,
    /// What caused it, e.g. `submitted`, `dispatched`, `result:failed`, `timeout`, `cancelled`.
    pub cause: String,
    /// The attempt after it.
    pub attempt: u32,
}

#[Object]
impl Task {
    /// The task's id (a UUIDv7).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// Its project.
    async fn project_id(&self) -> &str {
        self.0.project.as_str()
    }
    /// Its name.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The worker tier it runs on.
    async fn tier(&self) -> &str {
        self.0.tier.as_str()
    }
    /// What the worker receives.
    async fn input(&self) -> Json<Value> {
        Json(self.0.input.clone())
    }
    /// Higher goes first.
    async fn priority(&self) -> i32 {
        self.0.priority
    }
    /// When the current attempt is due.
    async fn due_at(&self) -> DateTime<Utc> {
        self.0.due_at
    }
    /// Per-attempt timeout in seconds.
    async fn timeout_seconds(&self) -> u32 {
        self.0.timeout_seconds
    }
    /// Attempts allowed in all.
    async fn max_attempts(&self) -> u32 {
        self.0.retry.max_attempts
    }
    /// Where it is in its lifecycle.
    async fn status(&self) -> TaskStatus {
        self.0.status.into()
    }
    /// Grows by one with every transition.
    async fn version(&self) -> u64 {
        self.0.version
    }
    /// The current attempt, from 1.
    async fn attempt(&self) -> u32 {
        self.0.attempt
    }
    /// When the running attempt times out.
    async fn deadline(&self) -> Option<DateTime<Utc>> {
        self.0.deadline
    }
    /// The output of the successful attempt.
    async fn output(&self) -> Option<Json<Value>> {
        self.0.output.clone().map(Json)
    }
    /// The error of the last failed attempt.
    async fn error(&self) -> Option<TaskError> {
        self.0.error.as_ref().map(|e| TaskError {
            code: e.code.clone(),
            message: e.message.clone(),
            retryable: e.retryable,
        })
    }
    /// Why it was cancelled or rolled back.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    /// Carried on every event about the task.
    async fn correlation_id(&self) -> &str {
        &self.0.correlation_id
    }
    /// When it was submitted.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When it last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Every transition, oldest first.
    async fn history(&self) -> Vec<HistoryEntry> {
        history(&self.0)
    }

    /// Set while the task is due but held back (project at its limit, paused, or a kill switch
    /// engaged); it starts once a slot frees up or the hold ends.
    async fn parked(&self) -> Option<crate::flow::Parked> {
        self.0.parked.map(Into::into)
    }

    /// The idempotency key it was submitted with.
    async fn idempotency_key(&self) -> Option<&str> {
        self.0.idempotency_key.as_deref()
    }

    /// The tasks that must succeed before it starts.
    async fn depends_on(&self) -> Vec<ID> {
        ids(&self.0.depends_on)
    }

    /// The tasks that depend on it.
    async fn dependents(&self) -> Vec<ID> {
        ids(&self.0.dependents)
    }

    /// How its last result was produced, as its worker reported it.
    async fn provenance(&self) -> Option<crate::graph::Provenance> {
        crate::graph::Provenance::of(&self.0)
    }

    /// Whether it was rolled back (its output must not be trusted).
    async fn tainted(&self) -> bool {
        self.0.taint.is_some()
    }

    /// The rollback that reached it, and through which dependency.
    async fn taint(&self) -> Option<crate::graph::Taint> {
        self.0.taint.as_ref().map(Into::into)
    }
}

fn ids(ids: &[baton_domain::TaskId]) -> Vec<ID> {
    ids.iter().map(|id| ID(id.to_string())).collect()
}

/// Every transition of `task`, oldest first.
pub fn history(task: &baton_domain::Task) -> Vec<HistoryEntry> {
    task.history
        .iter()
        .map(|entry| HistoryEntry {
            version: entry.version,
            from: entry.from.map(Into::into),
            to: entry.to.into(),
            at: entry.at,
            cause: entry.cause.clone(),
            attempt: entry.attempt,
        })
        .collect()
}

/// A task and where it is in the list (Relay edge).
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct TaskEdge {
    /// Pass as `after` to continue behind this task.
    pub cursor: String,
    #[graphql(skip)]
    task: baton_domain::Task,
}

#[ComplexObject]
impl TaskEdge {
    /// The task.
    async fn node(&self) -> Task {
        Task(self.task.clone())
    }
}

/// Where a page ends (Relay page info).
#[derive(SimpleObject)]
pub struct PageInfo {
    /// Whether more tasks follow.
    pub has_next_page: bool,
    /// The cursor of the last edge.
    pub end_cursor: Option<String>,
}

/// A page of tasks (Relay connection).
#[derive(SimpleObject)]
pub struct TaskConnection {
    /// The tasks, newest first.
    pub edges: Vec<TaskEdge>,
    /// Where the page ends and whether more follow.
    pub page_info: PageInfo,
}

impl From<Page> for TaskConnection {
    fn from(page: Page) -> Self {
        let edges: Vec<TaskEdge> = page
            .tasks
            .into_iter()
            .map(|task| TaskEdge {
                cursor: task.id.to_string(),
                task,
            })
            .collect();
        let end_cursor = edges.last().map(|edge| edge.cursor.clone());
        TaskConnection {
            edges,
            page_info: PageInfo {
                has_next_page: page.has_next_page,
                end_cursor,
            },
        }
    }
}

/// How failed attempts are retried.
#[derive(InputObject, Default)]
pub struct RetryPolicyInput {
    /// Attempts in all, 1 to 100 (default 3).
    pub max_attempts: Option<i32>,
    /// First backoff in seconds, 1 to 3600 (default 5).
    pub backoff_seconds: Option<i32>,
    /// Backoff cap in seconds (default 900).
    pub max_backoff_seconds: Option<i32>,
}

/// A task to submit.
#[derive(InputObject)]
pub struct SubmitTaskInput {
    /// The project.
    pub project_id: String,
    /// A human-readable name.
    pub name: String,
    /// The worker tier.
    pub tier: String,
    /// What the worker receives.
    pub input: Option<Json<Value>>,
    /// -1000 to 1000, default 0.
    pub priority: Option<i32>,
    /// When to run; default now. Not together with `delaySeconds`.
    pub due_at: Option<DateTime<Utc>>,
    /// Run this many seconds from now.
    pub delay_seconds: Option<i32>,
    /// Per-attempt timeout, 1 to 86400 seconds (default 300).
    pub timeout_seconds: Option<i32>,
    /// Retry policy.
    pub retry: Option<RetryPolicyInput>,
    /// Carried on every event about the task; generated when absent.
    pub correlation_id: Option<String>,
    /// Makes the submission safe to repeat for 24 hours: the same key with the same input
    /// returns the task the first submission created; with different input it fails with
    /// `IDEMPOTENCY_CONFLICT`. 1 to 128 characters.
    pub idempotency_key: Option<String>,
    /// Tasks (yours, at most 32) that must succeed before this one starts; it is PENDING until
    /// then, and cancelled if one of them fails or is cancelled.
    pub depends_on: Option<Vec<ID>>,
}

impl From<SubmitTaskInput> for SubmitRequest {
    fn from(input: SubmitTaskInput) -> Self {
        SubmitRequest {
            tenant: None,
            project: Some(input.project_id),
            name: Some(input.name),
            tier: Some(input.tier),
            input: input.input.map(|json| json.0),
            priority: input.priority.map(Into::into),
            due_at: input.due_at.map(|at| at.to_rfc3339()),
            delay_seconds: input.delay_seconds.map(Into::into),
            timeout_seconds: input.timeout_seconds.map(Into::into),
            retry: input.retry.map(|retry| RetryInput {
                max_attempts: retry.max_attempts.map(Into::into),
                backoff_seconds: retry.backoff_seconds.map(Into::into),
                max_backoff_seconds: retry.max_backoff_seconds.map(Into::into),
            }),
            correlation_id: input.correlation_id,
            idempotency_key: input.idempotency_key,
            depends_on: input
                .depends_on
                .map(|ids| ids.into_iter().map(|id| id.0).collect()),
        }
    }
}
