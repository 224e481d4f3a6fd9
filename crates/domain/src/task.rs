use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::flow::Parked;
use crate::graph::{Provenance, Taint};
use crate::ids::{Lease, ProjectId, TaskId, Tenant, Tier, fnv1a};
use crate::payload::{check_shape, stored_bytes};

/// Where a task is in its lifecycle. Moves only forward; the last four absorb every command but
/// the rollback of a succeeded task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Waiting for dependencies.
    Pending,
    /// Waiting for its due time.
    Scheduled,
    /// Handed to a worker; the attempt's result is awaited.
    Running,
    /// A worker reported success.
    Succeeded,
    /// The last attempt failed or timed out.
    Failed,
    /// Cancelled on request before it finished.
    Cancelled,
    /// A succeeded task whose output was rolled back (tainted).
    RolledBack,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Scheduled,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::RolledBack,
    ];

    /// Whether the task has finished for good.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Failed | Status::Cancelled | Status::RolledBack
        )
    }

    /// The stored and wire name, e.g. `ROLLED_BACK`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Scheduled => "SCHEDULED",
            Status::Running => "RUNNING",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::Cancelled => "CANCELLED",
            Status::RolledBack => "ROLLED_BACK",
        }
    }
}

/// How a failed attempt is retried: exponential backoff from `backoff_seconds`, doubled per
/// attempt, capped at `max_backoff_seconds`, with deterministic jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = never retry).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub backoff_seconds: u32,
    /// Upper bound of any delay.
    pub max_backoff_seconds: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_seconds: 5,
            max_backoff_seconds: 900,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `failed_attempt + 1` of task `id`.
    ///
    /// "Equal jitter": half the exponential delay is fixed, the other half is spread by a hash of
    /// the task id and attempt, so retries of many tasks do not align, yet the same failure always
    /// yields the same delay (replaying a result decides the same thing).
    pub fn backoff(&self, id: &TaskId, failed_attempt: u32) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(30);
        let full_ms = (u64::from(self.backoff_seconds) * 1000)
            .saturating_mul(1 << exponent)
            .min(u64::from(self.max_backoff_seconds) * 1000);
        let half = full_ms / 2;
        let spread = fnv1a(id.as_uuid().as_bytes(), failed_attempt) % (half + 1);
        Duration::milliseconds((half + spread) as i64)
    }
}

/// Why an attempt failed, as the worker (or Baton, for a timeout) reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// A stable, machine-readable code, e.g. `TIMEOUT`.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
    /// Whether another attempt could succeed. `false` (a request that can never be made, say)
    /// fails the task at once, whatever attempts its retry policy has left.
    #[serde(default = "retryable", skip_serializing_if = "Clone::clone")]
    pub retryable: bool,
}

fn retryable() -> bool {
    true
}

/// What a worker reports for an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The attempt produced `output`.
    Succeeded {
        /// The task's result.
        #[serde(default)]
        output: Value,
    },
    /// The attempt failed with `error`.
    Failed {
        /// What went wrong.
        error: TaskError,
    },
}

/// Largest accepted result (`output`, or `error`, with the provenance), in bytes, counted as JSON
/// and as DynamoDB sizes it, whichever is larger: the `TaskSucceeded` event that carries it keeps
/// 64 KiB of EventBridge's 256 KiB for its other fields, and the task's item holds it beside its
/// input (at most 64 KiB) and history inside 400 KB. A task keeps one result: a success clears
/// the error of a failed attempt before it.
pub const MAX_RESULT_BYTES: usize = 192 * 1024;
/// Longest `error.code` a worker may report, in characters.
const MAX_ERROR_CODE_CHARS: usize = 100;
/// Longest reason a cancel, a rollback or an operator's control may give, in characters.
pub const MAX_REASON_CHARS: usize = 500;

impl Outcome {
    /// Checks the bounds that keep a result (with its `provenance`) inside the events that
    /// carry it and the task's item: an output DynamoDB can store, and the size of the whole;
    /// names what is out of them.
    pub fn check(&self, provenance: Option<&Provenance>) -> Result<(), String> {
        match self {
            Outcome::Failed { error } if error.code.chars().count() > MAX_ERROR_CODE_CHARS => {
                return Err(format!(
                    "error.code must be at most {MAX_ERROR_CODE_CHARS} characters"
                ));
            }
            Outcome::Succeeded { output } => {
                check_shape(output).map_err(|reason| format!("output {reason}"))?;
            }
            Outcome::Failed { .. } => {}
        }
        if let Some(provenance) = provenance {
            provenance.check()?;
        }
        let json = serde_json::to_vec(&(self, provenance)).map_or(0, |json| json.len());
        let stored = serde_json::to_value((self, provenance)).map_or(0, |v| stored_bytes(&v));
        let bytes = json.max(stored);
        if bytes > MAX_RESULT_BYTES {
            return Err(format!(
                "the result is {bytes} bytes; at most {MAX_RESULT_BYTES} fit its events and the \
                 task's item"
            ));
        }
        Ok(())
    }
}

/// Checks a reason given for a cancel, a rollback or a control: 1 to [`MAX_REASON_CHARS`]
/// characters, not blank.
pub fn check_reason(reason: &str) -> Result<(), String> {
    match reason.trim().is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        true => Err(format!("must be 1 to {MAX_REASON_CHARS} characters")),
        false => Ok(()),
    }
}

/// One transition as recorded in the task's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The version the transition produced.
    pub version: u64,
    /// The status before; `None` for the submission.
    pub from: Option<Status>,
    /// The status after.
    pub to: Status,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// What caused it, e.g. `submitted`, `dispatched`, `result:failed`, `timeout`.
    pub cause: String,
    /// The attempt the task was on after the transition.
    pub attempt: u32,
}

/// A unit of work and everything Baton knows about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Its identity.
    pub id: TaskId,
    /// Its owner.
    pub tenant: Tenant,
    /// The project it belongs to.
    pub project: ProjectId,
    /// A human-readable name.
    pub name: String,
    /// The kind of worker that runs it.
    pub tier: Tier,
    /// What the worker receives.
    pub input: Value,
    /// Higher goes first when capacity is short.
    pub priority: i32,
    /// When the current attempt may start.
    pub due_at: DateTime<Utc>,
    /// How long one attempt may run before it times out.
    pub timeout_seconds: u32,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// Where it is in the lifecycle.
    pub status: Status,
    /// Grows by one with every transition; the commit condition names it.
    pub version: u64,
    /// The current (or next) attempt, from 1.
    pub attempt: u32,
    /// When the running attempt times out.
    pub deadline: Option<DateTime<Utc>>,
    /// The result of the successful attempt.
    pub output: Option<Value>,
    /// The error of the last failed attempt.
    pub error: Option<TaskError>,
    /// Why it was cancelled or rolled back.
    pub reason: Option<String>,
    /// Ties together everything that happens to the task across functions.
    pub correlation_id: String,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Every transition, oldest first; committed in the same write as the transition.
    pub history: Vec<HistoryEntry>,
    /// Set while the task is due but waits in its project's ready set; any transition clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<Parked>,
    /// Set while the task is due and an admission holds one of its project's slots for it, taken
    /// out of the ready set; its dispatch turns the slot into the one it runs in, and any other
    /// transition gives it back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reserved: bool,
    /// The lane of its project's slots that holds its slot while it runs or one is held for it
    /// (see [`crate::Controls`]); `None` while it holds none, or while it holds one in the
    /// project's own count (a task an earlier version started or admitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<u16>,
    /// The key the submitter gave so that a repeated submission returns this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The tasks that must succeed before it starts (same tenant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<TaskId>,
    /// The tasks that depend on it, in the order they were submitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependents: Vec<TaskId>,
    /// How the last result was produced, as its worker reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// Set when it was rolled back: which rollback reached it and through which dependency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taint: Option<Taint>,
    /// The lease of the last dispatched attempt, drawn at its dispatch: its worker's result must
    /// carry it. `None` on a task dispatched by a version of Baton before leases (or never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

impl HistoryEntry {
    /// Whether this entry records a note (an operator's action such as a redrive) rather than a
    /// move: every move changes the status.
    pub fn is_note(&self) -> bool {
        self.from == Some(self.to)
    }
}

impl Task {
    /// Its latest move: the last history entry that is not a note.
    pub fn last_move(&self) -> Option<&HistoryEntry> {
        self.history.iter().rev().find(|entry| !entry.is_note())
    }

    /// When its last result was committed (the time its provenance is filed under).
    pub fn produced_at(&self) -> Option<DateTime<Utc>> {
        self.history
            .iter()
            .rev()
            .find(|entry| entry.cause.starts_with("result:"))
            .map(|entry| entry.at)
    }

    /// Checks what every stored task must show, however its commands were delivered: one
    /// history entry per version, each starting where the one before ended, nothing moving on
    /// from a terminal status but a rollback of a success, one dispatch per attempt, and the
    /// status the last entry reached. Names the first thing that does not hold.
    pub fn check_history(&self) -> Result<(), String> {
        if self.history.len() as u64 != self.version {
            return Err(format!(
                "{} history entries at version {}",
                self.history.len(),
                self.version
            ));
        }
        let mut from = None;
        let mut dispatched = Vec::new();
        for (i, entry) in self.history.iter().enumerate() {
            if entry.version != i as u64 + 1 || entry.from != from {
                return Err(format!("entry {} does not follow the one before", i + 1));
            }
            let rollback = (entry.from, entry.to) == (Some(Status::Succeeded), Status::RolledBack);
            if from.is_some_and(Status::is_terminal) && !entry.is_note() && !rollback {
                return Err(format!("entry {} moves on from {:?}", i + 1, entry.from));
            }
            if entry.to == Status::Running && !entry.is_note() {
                if dispatched.contains(&entry.attempt) {
                    return Err(format!("attempt {} dispatched twice", entry.attempt));
                }
                dispatched.push(entry.attempt);
            }
            from = Some(entry.to);
        }
        match from == Some(self.status) {
            true => Ok(()),
            false => Err(format!(
                "the last entry reached {from:?}, the task is {:?}",
                self.status
            )),
        }
    }
}
