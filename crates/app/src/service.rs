use std::sync::Arc;

use baton_domain::{
    Command, Decision, Effects, InvalidSubmission, ProjectId, Rejection, Status, SubmitRequest,
    Task, TaskId, Tenant, Timer, decide,
};
use chrono::{DateTime, Duration, Utc};
use tracing::{info, warn};

use crate::ports::{
    Clock, Commit, Created, EventBus, InfraError, Page, ProjectStatus, TaskQuery, TaskStore,
    TimerQueue, Wake, WakeKind,
};

/// The longest delay a timer message can carry (SQS `DelaySeconds` tops out at 15 minutes).
/// Tasks due later are armed by the sweeper once they come this close.
pub const MAX_TIMER_DELAY: Duration = Duration::minutes(15);
/// How long past its due time a task may stay Scheduled before the sweeper assumes its timer was
/// lost and arms it again.
pub const TIMER_GRACE: Duration = Duration::minutes(5);
/// How often a command is decided again after losing a write race before giving up.
const MAX_RACES: usize = 5;
/// How many tasks one sweep handles per kind of wake.
const SWEEP_LIMIT: usize = 500;

/// What became of a command. Everything but an `Err` is acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// The task moved; here is its new state.
    Applied(Box<Task>),
    /// The command had been applied before; its effects were repeated.
    AlreadyApplied(Box<Task>),
    /// Another transition won the race and the command no longer fits.
    LostRace(Rejection),
    /// The command does not fit the task (stale, or invalid in its status).
    Rejected(Rejection),
    /// The timer fired early and was armed again.
    Rearmed(Timer),
    /// No such task.
    NotFound,
}

/// A submission's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The task as stored.
    pub task: Task,
    /// Whether it existed already (a redelivered submission).
    pub duplicate: bool,
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The submission is wrong; retrying will not help.
    #[error("invalid submission: {0}")]
    Invalid(#[from] InvalidSubmission),
    /// Infrastructure failed; retry.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Timers armed for tasks entering the timer window.
    pub armed: usize,
    /// Timers armed again for Scheduled tasks whose timer was lost.
    pub rearmed: usize,
    /// Running attempts timed out.
    pub timed_out: usize,
}

/// The application service: every entry point of Baton goes through it.
#[derive(Clone)]
pub struct Baton {
    store: Arc<dyn TaskStore>,
    bus: Arc<dyn EventBus>,
    timers: Arc<dyn TimerQueue>,
    clock: Arc<dyn Clock>,
}

impl Baton {
    /// Wires the service to its adapters.
    pub fn new(
        store: Arc<dyn TaskStore>,
        bus: Arc<dyn EventBus>,
        timers: Arc<dyn TimerQueue>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            bus,
            timers,
            clock,
        }
    }

    /// The service's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Validates and creates a task with id `id`. Submitting the same id again returns the stored
    /// task (and repeats its submission effects if it has not moved since), so a redelivered
    /// submission creates nothing twice.
    pub async fn submit(
        &self,
        request: &SubmitRequest,
        id: TaskId,
    ) -> Result<Submitted, SubmitError> {
        let now = self.now();
        let task = Task::submitted(request.validate(now)?, id, now);
        match self.store.create(&task, wake_for(&task, now)).await? {
            Created::Created => {
                self.perform(&Effects::of(&task), now).await?;
                Ok(Submitted {
                    task,
                    duplicate: false,
                })
            }
            Created::Exists(existing) => {
                if existing.version == 1 {
                    self.perform(&Effects::of(&existing), now).await?;
                }
                Ok(Submitted {
                    task: *existing,
                    duplicate: true,
                })
            }
        }
    }

    /// Runs `command` against a task: load → decide → commit → perform. A lost write race is
    /// classified from the stored state: already applied (effects repeated), still applicable
    /// (decided again), or no longer fitting (a lost race).
    pub async fn execute(
        &self,
        tenant: &Tenant,
        id: &TaskId,
        command: &Command,
    ) -> Result<Handled, InfraError> {
        match self.store.get(tenant, id).await? {
            Some(current) => self.execute_on(current, command).await,
            None => Ok(Handled::NotFound),
        }
    }

    /// [`Baton::execute`] on a task already read from the store.
    async fn execute_on(
        &self,
        mut current: Task,
        command: &Command,
    ) -> Result<Handled, InfraError> {
        let mut raced = false;
        for _ in 0..MAX_RACES {
            let now = self.now();
            match decide(&current, command, now) {
                Err(rejection) if raced => return Ok(Handled::LostRace(rejection)),
                Err(rejection) => return Ok(Handled::Rejected(rejection)),
                Ok(Decision::NotYetDue(timer)) => {
                    self.arm(&timer, now).await?;
                    return Ok(Handled::Rearmed(timer));
                }
                Ok(Decision::AlreadyApplied(effects)) => {
                    self.perform(&effects, now).await?;
                    return Ok(Handled::AlreadyApplied(Box::new(current)));
                }
                Ok(Decision::Apply(transition)) => {
                    let next = &transition.task;
                    match self
                        .store
                        .commit(&current, next, wake_for(next, now))
                        .await?
                    {
                        Commit::Committed => {
                            self.perform(&transition.effects, now).await?;
                            return Ok(Handled::Applied(Box::new(transition.task)));
                        }
                        Commit::Conflict(Some(stored)) => {
                            current = *stored;
                            raced = true;
                        }
                        Commit::Conflict(None) => return Ok(Handled::NotFound),
                    }
                }
            }
        }
        Err(InfraError::new(
            "commit",
            format!(
                "task {} kept changing under {} commands",
                current.id,
                command.name()
            ),
        ))
    }

    /// Reads a task.
    pub async fn task(&self, tenant: &Tenant, id: &TaskId) -> Result<Option<Task>, InfraError> {
        self.store.get(tenant, id).await
    }

    /// Lists a project's tasks.
    pub async fn tasks(&self, query: &TaskQuery) -> Result<Page, InfraError> {
        self.store.list(query).await
    }

    /// A project's counts per status.
    pub async fn project_status(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<ProjectStatus, InfraError> {
        self.store.project_status(tenant, project).await
    }

    /// The sweeper's pass: arms timers for tasks entering the timer window, re-arms lost timers
    /// and times out attempts past their deadline.
    pub async fn sweep(&self) -> Result<SweepReport, InfraError> {
        let now = self.now();
        let mut report = SweepReport::default();
        for (tenant, id) in self.store.wakes(WakeKind::Arm, now, SWEEP_LIMIT).await? {
            if let Some(task) = self.store.get(&tenant, &id).await?
                && let Some(timer) = Effects::of(&task).timer
                && self.store.set_wake(&task, wake_for(&task, now)).await?
            {
                self.arm(&timer, now).await?;
                report.armed += 1;
            }
        }
        for (tenant, id) in self.store.wakes(WakeKind::Check, now, SWEEP_LIMIT).await? {
            let Some(task) = self.store.get(&tenant, &id).await? else {
                continue;
            };
            match task.status {
                Status::Running if task.deadline.is_some_and(|deadline| deadline <= now) => {
                    let command = Command::TimeOut {
                        attempt: task.attempt,
                    };
                    if let Handled::Applied(_) = self.execute_on(task, &command).await? {
                        report.timed_out += 1;
                    }
                }
                Status::Scheduled if task.due_at + TIMER_GRACE <= now => {
                    let recheck = Wake {
                        kind: WakeKind::Check,
                        at: now + TIMER_GRACE,
                    };
                    if let Some(timer) = Effects::of(&task).timer
                        && self.store.set_wake(&task, Some(recheck)).await?
                    {
                        warn!(task_id = %id, tenant = %tenant, "timer lost; arming again");
                        self.arm(&timer, now).await?;
                        report.rearmed += 1;
                    }
                }
                // The task moved since the wake was written; its transition set the right one.
                _ => {}
            }
        }
        info!(?report, "sweep done");
        Ok(report)
    }

    async fn perform(&self, effects: &Effects, now: DateTime<Utc>) -> Result<(), InfraError> {
        if !effects.events.is_empty() {
            self.bus.publish(&effects.events).await?;
        }
        if let Some(timer) = &effects.timer
            && timer.due_at - now <= MAX_TIMER_DELAY
        {
            self.arm(timer, now).await?;
        }
        Ok(())
    }

    async fn arm(&self, timer: &Timer, now: DateTime<Utc>) -> Result<(), InfraError> {
        let delay = (timer.due_at - now).clamp(Duration::zero(), MAX_TIMER_DELAY);
        self.timers.arm(timer, delay).await
    }
}

/// When the sweeper must look at `task` next, given that `perform` arms timers due inside the
/// window at once.
fn wake_for(task: &Task, now: DateTime<Utc>) -> Option<Wake> {
    match task.status {
        Status::Scheduled if task.due_at - now <= MAX_TIMER_DELAY => Some(Wake {
            kind: WakeKind::Check,
            at: task.due_at.max(now) + TIMER_GRACE,
        }),
        Status::Scheduled => Some(Wake {
            kind: WakeKind::Arm,
            at: task.due_at - MAX_TIMER_DELAY,
        }),
        Status::Running => task.deadline.map(|at| Wake {
            kind: WakeKind::Check,
            at,
        }),
        _ => None,
    }
}
