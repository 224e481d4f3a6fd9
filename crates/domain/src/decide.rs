use chrono::{DateTime, Duration, Utc};

use crate::event::Event;
use crate::graph::{Cascade, Provenance, Reach, Taint, cancelled_by_rollback};
use crate::ids::{Lease, ProjectId, TaskId, Tenant};
use crate::task::{HistoryEntry, Outcome, Status, Task, TaskError};

/// Something that asks a task to move.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// The due timer of `attempt` fired: start it.
    Dispatch {
        /// The attempt the timer was armed for.
        attempt: u32,
        /// A fresh lease for the attempt, drawn by the caller; kept if this dispatch commits.
        lease: Lease,
    },
    /// A worker reported the outcome of `attempt`.
    Complete {
        /// The attempt the result is for.
        attempt: u32,
        /// The lease the attempt's `TaskReady` carried; a result without it does not move the
        /// task (`None` is accepted only from an attempt dispatched before leases existed).
        lease: Option<Lease>,
        /// What happened.
        outcome: Outcome,
        /// How the result was produced, as the worker reported it.
        provenance: Option<Provenance>,
    },
    /// `attempt` ran past its deadline.
    TimeOut {
        /// The attempt that is late.
        attempt: u32,
    },
    /// Stop the task for good.
    Cancel {
        /// Why.
        reason: String,
    },
    /// Undo a succeeded task. Reaching a dependent of a rolled-back task (`taint.via` set), it
    /// rolls back a succeeded one and cancels an unfinished one.
    Rollback {
        /// Why.
        reason: String,
        /// Which rollback this is, and through which dependency it came.
        taint: Taint,
    },
    /// A dependency succeeded: start a Pending task once every dependency has.
    Release {
        /// The status of each of the task's dependencies, read after that success.
        dependencies: Vec<(TaskId, Status)>,
    },
    /// Record an operator's action (a DLQ redrive) in the history without moving the task.
    /// Applies in every status, once per `cause`, up to [`MAX_NOTES`] notes.
    Note {
        /// The history entry's cause, unique to the action, e.g. `redriven:{redrive id}`.
        cause: String,
    },
}

impl Command {
    /// A short name for logs and rejections.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Dispatch { .. } => "dispatch",
            Command::Complete { .. } => "complete",
            Command::TimeOut { .. } => "timeout",
            Command::Cancel { .. } => "cancel",
            Command::Rollback { .. } => "rollback",
            Command::Release { .. } => "release",
            Command::Note { .. } => "note",
        }
    }

    /// The cause recorded in history when this command moves a task.
    fn cause(&self) -> &str {
        match self {
            Command::Dispatch { .. } => "dispatched",
            Command::Complete {
                outcome: Outcome::Succeeded { .. },
                ..
            } => "result:succeeded",
            Command::Complete {
                outcome: Outcome::Failed { .. },
                ..
            } => "result:failed",
            Command::TimeOut { .. } => "timeout",
            Command::Cancel { .. } => "cancelled",
            Command::Rollback { .. } => "rolled_back",
            Command::Release { .. } => "released",
            Command::Note { cause } => cause,
        }
    }
}

/// How many notes (operators' actions) a task's history keeps; it lives in the task's item.
pub const MAX_NOTES: usize = 100;

/// A request to run `on-due` for an attempt at `due_at`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timer {
    /// The task's owner.
    pub tenant: Tenant,
    /// The task.
    pub task_id: TaskId,
    /// The attempt to start.
    pub attempt: u32,
    /// When to start it.
    pub due_at: DateTime<Utc>,
}

/// What must happen outside the store once a state is committed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Effects {
    /// Events to publish.
    pub events: Vec<Event>,
    /// A timer to arm.
    pub timer: Option<Timer>,
    /// The project whose slot the task gave back, so the next task of its ready set may start.
    pub admit: Option<(Tenant, ProjectId)>,
    /// What the task's move asks of its dependents.
    pub cascade: Option<Box<Cascade>>,
}

impl Effects {
    /// The effects that announce `task`'s current state. A function of the state alone, so a
    /// transition and its replay publish the same thing.
    pub fn of(task: &Task) -> Effects {
        Effects {
            events: Event::announcing(task).into_iter().collect(),
            timer: (task.status == Status::Scheduled).then(|| Timer {
                tenant: task.tenant.clone(),
                task_id: task.id,
                attempt: task.attempt,
                due_at: task.due_at,
            }),
            admit: task
                .last_move()
                .is_some_and(|entry| entry.from == Some(Status::Running))
                .then(|| (task.tenant.clone(), task.project.clone())),
            cascade: Cascade::of(task).map(Box::new),
        }
    }
}

/// A transition to commit: the task's next state (history entry appended) and its effects.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The state to write, conditional on the current status and version.
    pub task: Task,
    /// What to do once it is written.
    pub effects: Effects,
}

/// What a command does to a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Move the task.
    Apply(Box<Transition>),
    /// The command was applied before (a duplicate, or a retry after a lost response): nothing to
    /// write, but the effects are repeated in case the first run stopped before them.
    AlreadyApplied(Effects),
    /// The timer fired early: arm it again.
    NotYetDue(Timer),
}

/// Why a command does not fit the task. An outcome to log and acknowledge, never a retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The command makes no sense in the task's status.
    #[error("cannot {command} a task that is {}", status.as_str())]
    InvalidTransition {
        /// The task's status.
        status: Status,
        /// The command's name.
        command: &'static str,
    },
    /// The command names an attempt other than the current one.
    #[error("attempt {received} is stale: the task is on attempt {current}")]
    StaleAttempt {
        /// The task's attempt.
        current: u32,
        /// The command's attempt.
        received: u32,
    },
    /// A timeout was reported before the deadline.
    #[error("the attempt's deadline {deadline} has not passed")]
    DeadlineNotReached {
        /// The running attempt's deadline.
        deadline: DateTime<Utc>,
    },
    /// A release came while some dependencies have not succeeded yet.
    #[error("{} dependencies have not succeeded yet", open.len())]
    DependenciesOpen {
        /// Those dependencies.
        open: Vec<TaskId>,
    },
    /// A result without the lease its attempt was given: not from the worker that received the
    /// attempt.
    #[error("the result does not carry the lease of attempt {attempt}")]
    InvalidLease {
        /// The attempt the result names.
        attempt: u32,
    },
    /// The task's history holds as many notes as it may; the action is not recorded.
    #[error("the history holds {MAX_NOTES} notes already")]
    TooManyNotes,
}

impl Rejection {
    /// A stable code for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InvalidTransition { .. } => "INVALID_TRANSITION",
            Rejection::StaleAttempt { .. } => "STALE_ATTEMPT",
            Rejection::DeadlineNotReached { .. } => "DEADLINE_NOT_REACHED",
            Rejection::DependenciesOpen { .. } => "DEPENDENCIES_OPEN",
            Rejection::InvalidLease { .. } => "INVALID_LEASE",
            Rejection::TooManyNotes => "TOO_MANY_NOTES",
        }
    }
}

/// Decides what `command` does to `task` at `now`. Pure: the same arguments give the same answer.
pub fn decide(task: &Task, command: &Command, now: DateTime<Utc>) -> Result<Decision, Rejection> {
    if let Command::Rollback { reason, taint } = command {
        return roll_back(task, command, reason, taint, now);
    }
    if let Command::Note { cause } = command {
        if task.history.iter().any(|entry| &entry.cause == cause) {
            return Ok(Decision::AlreadyApplied(Effects::default()));
        }
        if task.history.iter().filter(|entry| entry.is_note()).count() >= MAX_NOTES {
            return Err(Rejection::TooManyNotes);
        }
        // Nothing to announce: the task did not move.
        return Ok(Decision::Apply(Box::new(Transition {
            task: next_state(task, task.status, command, now, |_| {}),
            effects: Effects::default(),
        })));
    }
    if already_applied(task, command) {
        leased(task, command)?;
        return Ok(Decision::AlreadyApplied(Effects::of(task)));
    }
    let invalid = || Rejection::InvalidTransition {
        status: task.status,
        command: command.name(),
    };
    let current_attempt = |attempt: u32| {
        if attempt == task.attempt {
            Ok(())
        } else {
            Err(Rejection::StaleAttempt {
                current: task.attempt,
                received: attempt,
            })
        }
    };
    match (command, task.status) {
        (Command::Dispatch { attempt, lease }, Status::Scheduled) => {
            current_attempt(*attempt)?;
            if now < task.due_at {
                return Ok(Decision::NotYetDue(
                    Effects::of(task).timer.expect("scheduled"),
                ));
            }
            Ok(apply(task, Status::Running, command, now, |next| {
                next.deadline = Some(now + Duration::seconds(task.timeout_seconds.into()));
                next.lease = Some(lease.clone());
            }))
        }
        (
            Command::Complete {
                attempt,
                outcome,
                provenance,
                ..
            },
            Status::Running,
        ) => {
            current_attempt(*attempt)?;
            leased(task, command)?;
            // A task keeps the last result's provenance only, as its item keeps one result.
            let recorded = |next: &mut Task| next.provenance = provenance.clone();
            Ok(match outcome {
                Outcome::Succeeded { output } => {
                    apply(task, Status::Succeeded, command, now, |next| {
                        next.output = Some(output.clone());
                        next.error = None;
                        next.deadline = None;
                        recorded(next);
                    })
                }
                Outcome::Failed { error } => {
                    fail_attempt(task, command, error.clone(), now, recorded)
                }
            })
        }
        (Command::TimeOut { attempt }, Status::Running) => {
            current_attempt(*attempt)?;
            match task.deadline {
                Some(deadline) if now < deadline => Err(Rejection::DeadlineNotReached { deadline }),
                _ => {
                    let error = TaskError {
                        code: "TIMEOUT".to_owned(),
                        message: format!(
                            "attempt {} ran longer than {} s",
                            task.attempt, task.timeout_seconds
                        ),
                        retryable: true,
                    };
                    Ok(fail_attempt(task, command, error, now, |_| {}))
                }
            }
        }
        (
            Command::Dispatch { attempt, .. }
            | Command::Complete { attempt, .. }
            | Command::TimeOut { attempt },
            _,
        ) => {
            current_attempt(*attempt)?;
            Err(invalid())
        }
        (Command::Cancel { reason }, Status::Pending | Status::Scheduled | Status::Running) => {
            Ok(apply(task, Status::Cancelled, command, now, |next| {
                next.reason = Some(reason.clone());
                next.deadline = None;
            }))
        }
        (Command::Release { dependencies }, Status::Pending) => {
            let open: Vec<TaskId> = task
                .depends_on
                .iter()
                .filter(|id| !dependencies.contains(&(**id, Status::Succeeded)))
                .copied()
                .collect();
            if !open.is_empty() {
                return Err(Rejection::DependenciesOpen { open });
            }
            Ok(apply(task, Status::Scheduled, command, now, |next| {
                next.due_at = task.due_at.max(now);
            }))
        }
        (
            Command::Cancel { .. }
            | Command::Release { .. }
            | Command::Rollback { .. }
            | Command::Note { .. },
            _,
        ) => Err(invalid()),
    }
}

/// A rollback: a succeeded task is rolled back (tainted); reaching a dependent of a rolled-back
/// task, it cancels an unfinished one and leaves a finished one alone. A repeat of the same
/// request (the same taint) repeats the effects, in case the first run stopped before them;
/// another request on a task it reached before changes nothing.
fn roll_back(
    task: &Task,
    command: &Command,
    reason: &str,
    taint: &Taint,
    now: DateTime<Utc>,
) -> Result<Decision, Rejection> {
    let invalid = Rejection::InvalidTransition {
        status: task.status,
        command: command.name(),
    };
    let same_request = match task.status {
        Status::RolledBack => task.taint.as_ref() == Some(taint),
        Status::Cancelled => taint
            .via
            .is_some_and(|via| task.reason.as_deref() == Some(&cancelled_by_rollback(via))),
        _ => false,
    };
    if same_request {
        return Ok(Decision::AlreadyApplied(Effects::of(task)));
    }
    match (Reach::of(task.status), taint.via) {
        (Reach::RollBack, _) => Ok(apply(task, Status::RolledBack, command, now, |next| {
            next.reason = Some(reason.to_owned());
            next.taint = Some(taint.clone());
        })),
        (Reach::Cancel, Some(via)) => {
            let cancel = Command::Cancel {
                reason: cancelled_by_rollback(via),
            };
            Ok(apply(task, Status::Cancelled, &cancel, now, |next| {
                next.reason = Some(cancelled_by_rollback(via));
                next.deadline = None;
            }))
        }
        (Reach::Untouched, _) if task.status == Status::RolledBack || taint.via.is_some() => {
            Ok(Decision::AlreadyApplied(Effects::default()))
        }
        (Reach::Cancel | Reach::Untouched, _) => Err(invalid),
    }
}

/// Whether `task`'s latest transition is the one `command` makes.
fn already_applied(task: &Task, command: &Command) -> bool {
    let last_cause = task.last_move().map(|entry| entry.cause.as_str());
    match command {
        Command::Dispatch { attempt, .. } => {
            task.status == Status::Running && task.attempt == *attempt
        }
        Command::Complete {
            attempt,
            outcome: Outcome::Succeeded { .. },
            ..
        } => task.status == Status::Succeeded && task.attempt == *attempt,
        Command::Complete { attempt, .. } | Command::TimeOut { attempt } => {
            let failed_attempt = match task.status {
                Status::Scheduled => task.attempt.saturating_sub(1),
                Status::Failed => task.attempt,
                _ => return false,
            };
            failed_attempt == *attempt && last_cause == Some(command.cause())
        }
        Command::Cancel { .. } => task.status == Status::Cancelled,
        Command::Release { .. } => {
            task.status == Status::Scheduled && last_cause == Some(command.cause())
        }
        // Decided before.
        Command::Rollback { .. } | Command::Note { .. } => false,
    }
}

/// Whether a worker's `command` carries the lease of the attempt it answers. Other commands come
/// from Baton or from callers authorised before they reach it. A task without a lease was
/// dispatched before leases existed: its running attempt finishes under the rule it started
/// under, and its next attempt gets one.
fn leased(task: &Task, command: &Command) -> Result<(), Rejection> {
    let Command::Complete { attempt, lease, .. } = command else {
        return Ok(());
    };
    match (&task.lease, lease) {
        (None, _) => Ok(()),
        (Some(stored), Some(given)) if stored.matches(given) => Ok(()),
        (Some(_), _) => Err(Rejection::InvalidLease { attempt: *attempt }),
    }
}

/// A failed attempt: retried after backoff while attempts remain and the error allows it, else
/// the task fails.
fn fail_attempt(
    task: &Task,
    command: &Command,
    error: TaskError,
    now: DateTime<Utc>,
    recorded: impl FnOnce(&mut Task),
) -> Decision {
    if task.attempt < task.retry.max_attempts && error.retryable {
        let due_at = now + task.retry.backoff(&task.id, task.attempt);
        apply(task, Status::Scheduled, command, now, |next| {
            next.attempt += 1;
            next.due_at = due_at;
            next.deadline = None;
            next.error = Some(error);
            recorded(next);
        })
    } else {
        apply(task, Status::Failed, command, now, |next| {
            next.deadline = None;
            next.error = Some(error);
            recorded(next);
        })
    }
}

fn apply(
    task: &Task,
    to: Status,
    command: &Command,
    now: DateTime<Utc>,
    change: impl FnOnce(&mut Task),
) -> Decision {
    let next = next_state(task, to, command, now, change);
    let effects = Effects::of(&next);
    Decision::Apply(Box::new(Transition {
        task: next,
        effects,
    }))
}

/// `task` moved to `to` by `command`: changed, its version one higher, the move in its history.
fn next_state(
    task: &Task,
    to: Status,
    command: &Command,
    now: DateTime<Utc>,
    change: impl FnOnce(&mut Task),
) -> Task {
    let mut next = task.clone();
    next.parked = None;
    next.reserved = false;
    // A task keeps its lane while it keeps its slot: running on, or starting in the slot held
    // for it. A dispatch that took no slot yet gets its lane from the batch that starts it.
    if to != Status::Running || !(task.status == Status::Running || task.reserved) {
        next.lane = None;
    }
    change(&mut next);
    next.status = to;
    next.version = task.version + 1;
    next.updated_at = now;
    next.history.push(HistoryEntry {
        version: next.version,
        from: Some(task.status),
        to,
        at: now,
        cause: command.cause().to_owned(),
        attempt: next.attempt,
    });
    next
}
