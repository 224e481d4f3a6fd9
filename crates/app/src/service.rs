use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use baton_domain::{
    Change, Command, ControlEvent, Controls, Decision, DependencyError, Effects, Event, Gate,
    InvalidSubmission, KillSwitch, MAX_CONCURRENCY_LIMIT, Parked, ProjectId, Rejection, Scope,
    Status, Step, SubmitRequest, Task, TaskId, Tenant, Timer, Transition, check_dependencies,
    check_reason, decide,
};
use chrono::{DateTime, Duration, Utc};
use tracing::{Instrument, Span, info, info_span, warn};

use crate::gates::{Gates, next_turn};
use crate::outbox::Admissions;
use crate::ports::{
    Clock, Commit, Created, EventBus, Hold, InfraError, Metrics, NoMetrics, Page, ProjectStatus,
    Reservation, Store, TaskQuery, TimerQueue, Wake, WakeKind,
};

/// The longest delay a timer message can carry (SQS `DelaySeconds` tops out at 15 minutes).
/// Tasks due later are armed by the sweeper once they come this close.
pub const MAX_TIMER_DELAY: Duration = Duration::minutes(15);
/// How long past its due time a task may stay Scheduled before the sweeper assumes its timer was
/// lost and arms it again.
pub const TIMER_GRACE: Duration = Duration::minutes(5);
/// How often a command is decided again after losing a write race before giving up.
const MAX_RACES: usize = 5;
/// How many other lanes a dispatch its lane refused tries, each read to have room.
const LANE_PROBES: usize = 3;
/// How many tasks one sweep handles per kind of wake, and how many projects it drains.
pub const SWEEP_LIMIT: usize = 500;
/// How many parked tasks a bulk admission (resume, a disengaged switch, a drain) starts per
/// second unless told otherwise.
pub const ADMIT_RATE: u32 = 10;
/// The fastest admission rate a caller may ask for.
pub const MAX_ADMIT_RATE: u32 = 1000;
/// One admission arms at most this much of its rate ahead; the drain continues later.
const ADMIT_WINDOW_SECONDS: u32 = 60;
/// How soon after a task joins a ready set the sweeper drains the project, and how often again
/// while tasks wait.
pub const DRAIN_INTERVAL: Duration = Duration::minutes(1);
/// How long a task that just joined a ready set may take to show in the store's index of it;
/// a drain ends only when the last park is older.
const INDEX_LAG: Duration = Duration::seconds(10);

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
    /// The task is due but the gate refused it: it waits in its project's ready set.
    Parked(Gate),
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
    /// What its dispatch at submission did, when it was started here ([`Start::Here`]).
    pub started: Option<Handled>,
}

/// How a submission starts a task that is due now.
#[derive(Clone, Copy)]
pub enum Start<'a> {
    /// Through its timer on the due queue, as any later dispatch: what a caller that must answer
    /// at once wants.
    Timer,
    /// Dispatched at once, in this process, with the gates as these read them: no
    /// due-queue hop and no read of the task again. The task is created first; a dispatch that
    /// fails leaves the submission to be delivered again (which dispatches it then), with the
    /// sweeper's lost-timer check behind that.
    Here(&'a Gates),
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The submission is wrong; retrying will not help.
    #[error("invalid submission: {0}")]
    Invalid(#[from] InvalidSubmission),
    /// The dependencies are unknown, finished without success, or would form a cycle.
    #[error("invalid dependencies: {0}")]
    Dependency(#[from] DependencyError),
    /// The idempotency key belongs to another submission with a different payload.
    #[error("idempotency key `{key}` was used by task {task_id} with a different payload")]
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The task the key belongs to.
        task_id: TaskId,
    },
    /// Infrastructure failed; retry.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

/// Why a control could not be turned.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// An argument is out of range; retrying will not help.
    #[error("{field}: {message}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Infrastructure failed; retry.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

impl ControlError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// Who turns a control and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator<'a> {
    /// The caller's identity.
    pub by: &'a str,
    /// Their reason, 1 to [`baton_domain::MAX_REASON_CHARS`] characters.
    pub reason: &'a str,
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
    /// Parked tasks re-armed by the drain of their project.
    pub admitted: usize,
    /// Projects whose ready set was found empty.
    pub drained: usize,
    /// Whether it stopped at its deadline with work left for the next sweep.
    pub cut_short: bool,
}

/// What one admission from a ready set did.
#[derive(Default)]
struct Admission {
    /// Tasks taken out with a slot held for each, their timers armed.
    armed: usize,
    /// Tasks the ready set showed, taken or not.
    seen: usize,
}

/// How an admission spreads the timers it arms.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// At most this many a second, the first at once (a resume, a drain).
    PerSecond(u32),
    /// All at once: slots just given back.
    AtOnce,
}

/// The application service: every entry point of Baton goes through it.
#[derive(Clone)]
pub struct Baton {
    pub(crate) store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    timers: Arc<dyn TimerQueue>,
    clock: Arc<dyn Clock>,
    metrics: Arc<dyn Metrics>,
    /// Where admissions after a slot given back go; `None`: at once.
    admissions: Option<Arc<dyn Admissions>>,
}

impl Baton {
    /// Wires the service to its adapters. It reports no metrics until given
    /// [`Baton::with_metrics`].
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        timers: Arc<dyn TimerQueue>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            bus,
            timers,
            clock,
            metrics: Arc::new(NoMetrics),
            admissions: None,
        }
    }

    /// The same service, reporting what it does to `metrics`.
    pub fn with_metrics(self, metrics: Arc<dyn Metrics>) -> Self {
        Self { metrics, ..self }
    }

    /// The bus and timer queue it sends through.
    pub(crate) fn senders(&self) -> (Arc<dyn EventBus>, Arc<dyn TimerQueue>) {
        (Arc::clone(&self.bus), Arc::clone(&self.timers))
    }

    /// The same service, sending through `bus` and `timers`, its admissions held by
    /// `admissions`.
    pub(crate) fn sending_through(
        &self,
        bus: Arc<dyn EventBus>,
        timers: Arc<dyn TimerQueue>,
        admissions: Arc<dyn Admissions>,
    ) -> Self {
        Self {
            bus,
            timers,
            admissions: Some(admissions),
            ..self.clone()
        }
    }

    /// The service's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Validates and creates a task with id `id`. Submitting the same id again returns the stored
    /// task (and repeats its submission effects if it has not moved since), so a redelivered
    /// submission creates nothing twice. A task with dependencies starts Pending unless they
    /// have all succeeded; each dependency lists it among its dependents in the same write. A
    /// task due now starts through its timer ([`Start::Timer`]).
    pub async fn submit(
        &self,
        request: &SubmitRequest,
        id: TaskId,
    ) -> Result<Submitted, SubmitError> {
        self.submit_in(request, id, Start::Timer).await
    }

    /// [`Baton::submit`], a task due now started as `start` says.
    pub async fn submit_in(
        &self,
        request: &SubmitRequest,
        id: TaskId,
        start: Start<'_>,
    ) -> Result<Submitted, SubmitError> {
        let now = self.now();
        let new = request.validate(now)?;
        let idempotency = new.idempotency.clone();
        let tenant = new.tenant.clone();
        // What refused a task created Running: it is created Scheduled instead and waits.
        let mut held = None;
        // Or a lane refused it: it is created Scheduled instead and dispatched after.
        let mut dispatch_after = false;
        for _ in 0..MAX_RACES {
            let dependencies = self.store.get_many(&tenant, &new.depends_on).await?;
            let status = match check_dependencies(id, &new.depends_on, &dependencies) {
                Ok(status) => status,
                // A redelivered submission answers with its task, whatever became of the
                // dependencies since.
                Err(refused) => match self.store.get(&tenant, &id).await? {
                    Some(existing) => return self.resubmitted(existing, start, true, now).await,
                    None => return Err(refused.into()),
                },
            };
            let task = Task::submitted(new.clone(), id, now, status);
            let dispatched = match (held, dispatch_after) {
                (None, false) => self.dispatch_at_create(&task, start, now).await?,
                _ => None,
            };
            let stored = dispatched
                .as_ref()
                .map_or(&task, |(dispatch, _)| &dispatch.task);
            let created = self
                .store
                .create(
                    stored,
                    wake_for(stored, now),
                    idempotency.as_ref(),
                    &dependencies,
                    dispatched.as_ref().map(|(_, slots)| slots),
                )
                .await?;
            match created {
                Created::Created => {
                    self.metrics.moved(None, &task);
                    let span = task_span(&task);
                    let started = match (dispatched, held) {
                        (Some((dispatch, _)), _) => Some(
                            self.created_running(&task, *dispatch, now)
                                .instrument(span)
                                .await?,
                        ),
                        (None, Some(hold)) => {
                            Some(self.created_held(&task, hold, now).instrument(span).await?)
                        }
                        (None, None) => self.start(&task, start, now).instrument(span).await?,
                    };
                    return Ok(Submitted {
                        task,
                        duplicate: false,
                        started,
                    });
                }
                // A full lane of a project with others is no reason to wait: the task is
                // created Scheduled, and dispatched after in a lane with room.
                Created::Held(Hold::Blocked(Gate::Capacity))
                    if dispatched.is_some_and(|(_, slots)| slots.active_lanes() > 1) =>
                {
                    dispatch_after = true
                }
                Created::Held(hold) => held = Some(hold),
                Created::Exists(existing) => {
                    return self.resubmitted(*existing, start, true, now).await;
                }
                Created::KeyUsed {
                    task_id,
                    fingerprint,
                } => {
                    let key = task.idempotency_key.unwrap_or_default();
                    let same = idempotency
                        .as_ref()
                        .is_some_and(|i| i.fingerprint == fingerprint);
                    return self.key_used(&tenant, key, task_id, same, start, now).await;
                }
                Created::DependencyMoved => {}
            }
        }
        Err(InfraError::new(
            "submit",
            format!("the dependencies of task {id} kept changing"),
        )
        .into())
    }

    /// The dispatch of a task `start`ed here, due now, that the batch's gates let start, with
    /// its project's controls as the batch read them: the task is then created Running in a
    /// lane of its project, its submission and its dispatch one write. A gate that stops it, or
    /// a switch that is missing (a project's first task puts it), leaves it to be created
    /// Scheduled and dispatched after (or parked).
    async fn dispatch_at_create(
        &self,
        task: &Task,
        start: Start<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<(Box<Transition>, Controls)>, InfraError> {
        let Start::Here(gates) = start else {
            return Ok(None);
        };
        if task.status != Status::Scheduled || task.due_at > now {
            return Ok(None);
        }
        let Ok(slots) = self.gate_dispatch(task, gates).await? else {
            return Ok(None);
        };
        Ok(match decide(task, &first_dispatch()?, now) {
            Ok(Decision::Apply(mut transition)) => {
                transition.task.lane = Some(slots.lane(next_turn()));
                Some((transition, slots))
            }
            _ => None,
        })
    }

    /// What a batch's `gates` say of the dispatch of `task`: its project's controls, when it
    /// may start; else why it waits (a kill switch, the pause, or tasks waiting before it).
    async fn gate_dispatch(
        &self,
        task: &Task,
        gates: &Gates,
    ) -> Result<Result<Controls, Hold>, InfraError> {
        let store = self.store.as_ref();
        if let Some(gate) = gates.gate(store, &task.tenant, &task.project).await? {
            return Ok(Err(Hold::Blocked(gate)));
        }
        let controls = gates.controls(store, &task.tenant, &task.project).await?;
        Ok(if controls.paused {
            Err(Hold::Blocked(Gate::Paused))
        } else if controls.waiting && !task.reserved {
            Err(Hold::Queued)
        } else {
            Ok(controls)
        })
    }

    /// Commits the dispatch `next` of `current`, which holds no slot, in a lane of its project:
    /// the next in this process's turn, or should that one be full while the project has
    /// others, one that had room when read (at most [`LANE_PROBES`] of them).
    async fn dispatch_in_lane(
        &self,
        current: &Task,
        next: &mut Task,
        slots: &Controls,
        now: DateTime<Utc>,
    ) -> Result<Commit, InfraError> {
        let wake = wake_for(next, now);
        next.lane = Some(slots.lane(next_turn()));
        let mut committed = self.store.commit(current, next, wake, Some(slots)).await?;
        if slots.active_lanes() < 2 {
            return Ok(committed);
        }
        for _ in 0..LANE_PROBES {
            if committed != Commit::Blocked(Gate::Capacity) {
                break;
            }
            let status = self
                .store
                .project_status(&current.tenant, &current.project)
                .await?;
            let Some(lane) = status.lane_with_room(next_turn()) else {
                break;
            };
            next.lane = Some(lane);
            committed = self
                .store
                .commit(current, next, wake, Some(&status.controls()))
                .await?;
        }
        Ok(committed)
    }

    /// After `task` was created Running as `dispatch`: announces its submission, then its
    /// dispatch.
    async fn created_running(
        &self,
        task: &Task,
        dispatch: Transition,
        now: DateTime<Utc>,
    ) -> Result<Handled, InfraError> {
        self.metrics.moved(Some(task), &dispatch.task);
        self.announce_submission(task, false, now).await?;
        self.perform(&dispatch.effects, now).await?;
        Ok(Handled::Applied(Box::new(dispatch.task)))
    }

    /// After `task` was created Scheduled because its project refused it a slot: announces its
    /// submission and parks it where its dispatch would have.
    async fn created_held(
        &self,
        task: &Task,
        hold: Hold,
        now: DateTime<Utc>,
    ) -> Result<Handled, InfraError> {
        self.announce_submission(task, false, now).await?;
        self.hold(task, hold, now).await
    }

    /// Parks `task`, whose dispatch its project refused, in its ready set.
    async fn hold(
        &self,
        task: &Task,
        hold: Hold,
        now: DateTime<Utc>,
    ) -> Result<Handled, InfraError> {
        Ok(match hold {
            Hold::Blocked(gate) => {
                self.park(task, gate, now).await?;
                Handled::Parked(gate)
            }
            Hold::Queued => {
                self.queue(task, now).await?;
                Handled::Parked(Gate::Capacity)
            }
        })
    }

    /// The answer to a submission whose idempotency key task `task_id` holds: that task when
    /// the payloads are the `same`, else a conflict.
    async fn key_used(
        &self,
        tenant: &Tenant,
        key: String,
        task_id: TaskId,
        same: bool,
        start: Start<'_>,
        now: DateTime<Utc>,
    ) -> Result<Submitted, SubmitError> {
        if !same {
            return Err(SubmitError::IdempotencyConflict { key, task_id });
        }
        match self.store.get(tenant, &task_id).await? {
            Some(existing) => self.resubmitted(existing, start, false, now).await,
            None => Err(InfraError::new(
                "submit",
                format!("idempotency key `{key}` names task {task_id}, which is missing"),
            )
            .into()),
        }
    }

    /// The answer to a repeated submission: the stored task, with its submission effects repeated
    /// if it has not moved since (the first run may have stopped before them). The same
    /// submission delivered `again` also repeats its `TaskSubmitted` whatever the task became:
    /// its first delivery may have moved the task before sending it (a function sends a batch's
    /// events when the batch is done).
    async fn resubmitted(
        &self,
        existing: Task,
        start: Start<'_>,
        again: bool,
        now: DateTime<Utc>,
    ) -> Result<Submitted, SubmitError> {
        if again
            && existing.version > 1
            && let Some(submission) = Event::submission(&existing)
        {
            self.bus.publish(&[submission]).await?;
        }
        let started = self.start(&existing, start, now).await?;
        Ok(Submitted {
            task: existing,
            duplicate: true,
            started,
        })
    }

    /// A submission's effects on `task` as stored: its events and timer while it has not moved
    /// (version 1). Started [`Start::Here`], a task due now is dispatched instead of its timer
    /// armed, and dispatched again on a repeated submission until it has moved past its dispatch
    /// (so a dispatch whose events were lost repeats them, as a timer delivered again would).
    async fn start(
        &self,
        task: &Task,
        start: Start<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<Handled>, InfraError> {
        let here = match start {
            Start::Here(gates)
                if task.attempt == 1
                    && task.due_at <= now
                    && matches!(
                        (task.status, task.version),
                        (Status::Scheduled, 1) | (Status::Running, 2)
                    ) =>
            {
                Some(gates)
            }
            _ => None,
        };
        if task.version == 1 {
            self.announce_submission(task, here.is_none(), now).await?;
        }
        let Some(gates) = here else {
            return Ok(None);
        };
        let handled = self
            .execute_on(task.clone(), &first_dispatch()?, gates)
            .await?;
        Ok(Some(handled))
    }

    /// Announces `task`'s submission: its `TaskSubmitted`, and its timer unless it starts at
    /// its submission.
    async fn announce_submission(
        &self,
        task: &Task,
        timer: bool,
        now: DateTime<Utc>,
    ) -> Result<(), InfraError> {
        let mut effects = Effects::of(task);
        if !timer {
            effects.timer = None;
        }
        self.perform(&effects, now).await
    }

    /// Runs `command` against a task: load → decide → commit → perform. A write that meets a
    /// changed task is classified from the stored state: its own write (a lost response: applied),
    /// already applied by a rival (whose effects are the rival's), still applicable (decided
    /// again), or no longer fitting (a lost race). A dispatch reads its gates itself; a
    /// batch of dispatches shares one read of each through [`Baton::execute_in`].
    pub async fn execute(
        &self,
        tenant: &Tenant,
        id: &TaskId,
        command: &Command,
    ) -> Result<Handled, InfraError> {
        self.execute_in(&Gates::default(), tenant, id, command)
            .await
    }

    /// [`Baton::execute`] as part of a batch whose dispatches see the gates as
    /// `gates` read them.
    pub async fn execute_in(
        &self,
        gates: &Gates,
        tenant: &Tenant,
        id: &TaskId,
        command: &Command,
    ) -> Result<Handled, InfraError> {
        let read = self.store.get(tenant, id).await?;
        self.execute_read(gates, read, command).await
    }

    /// Reads the tasks of `wanted` (a batch's), one read per tenant of up to a hundred tasks,
    /// for [`Baton::execute_read`]. A task that does not exist is left out.
    pub async fn read_tasks(
        &self,
        wanted: &[(Tenant, TaskId)],
    ) -> Result<HashMap<(Tenant, TaskId), Task>, InfraError> {
        let mut by_tenant: HashMap<&Tenant, Vec<TaskId>> = HashMap::new();
        for (tenant, id) in wanted {
            by_tenant.entry(tenant).or_default().push(*id);
        }
        let mut read = HashMap::with_capacity(wanted.len());
        for (tenant, ids) in by_tenant {
            for task in self.store.get_many(tenant, &ids).await? {
                read.insert((task.tenant.clone(), task.id), task);
            }
        }
        Ok(read)
    }

    /// [`Baton::execute_in`] on a task as [`Baton::read_tasks`] read it (`None`: it was not
    /// there). A task another command of the batch moved since is met by the write's condition
    /// and decided again from what is stored.
    pub async fn execute_read(
        &self,
        gates: &Gates,
        read: Option<Task>,
        command: &Command,
    ) -> Result<Handled, InfraError> {
        match read {
            Some(current) => {
                let span = task_span(&current);
                self.execute_on(current, command, gates)
                    .instrument(span)
                    .await
            }
            None => Ok(Handled::NotFound),
        }
    }

    /// [`Baton::execute_in`] on a task already read from the store.
    async fn execute_on(
        &self,
        mut current: Task,
        command: &Command,
        gates: &Gates,
    ) -> Result<Handled, InfraError> {
        let mut raced = false;
        for _ in 0..MAX_RACES {
            let now = self.now();
            match decide(&current, command, now) {
                Err(rejection) => {
                    self.metrics.rejected(command, &rejection);
                    return Ok(match raced {
                        true => Handled::LostRace(rejection),
                        false => Handled::Rejected(rejection),
                    });
                }
                Ok(Decision::NotYetDue(timer)) => {
                    self.arm(&timer, now).await?;
                    return Ok(Handled::Rearmed(timer));
                }
                Ok(Decision::AlreadyApplied(effects)) => {
                    // After a lost race, the rival that applied it performs its effects (and
                    // one that stops before them has its own command delivered again); only a
                    // repeat delivery repeats them.
                    if !raced {
                        self.perform(&effects, now).await?;
                    }
                    return Ok(Handled::AlreadyApplied(Box::new(current)));
                }
                Ok(Decision::Apply(mut transition)) => {
                    let dispatch = (current.status, transition.task.status)
                        == (Status::Scheduled, Status::Running);
                    let slots = match dispatch {
                        true => match self.gate_dispatch(&current, gates).await? {
                            Ok(slots) => Some(slots),
                            Err(hold) => return self.hold(&current, hold, now).await,
                        },
                        false => None,
                    };
                    let committed = match &slots {
                        Some(slots) if !current.reserved => {
                            self.dispatch_in_lane(&current, &mut transition.task, slots, now)
                                .await?
                        }
                        _ => {
                            let next = &transition.task;
                            let wake = wake_for(next, now);
                            self.store
                                .commit(&current, next, wake, slots.as_ref())
                                .await?
                        }
                    };
                    let next = &transition.task;
                    let rival = match committed {
                        Commit::Committed => None,
                        // Our own write: its response was lost and the retry met its own
                        // condition.
                        Commit::Conflict(Some(stored)) if *stored == transition.task => None,
                        Commit::Conflict(Some(stored)) => Some(stored),
                        Commit::Conflict(None) => return Ok(Handled::NotFound),
                        Commit::Blocked(gate) => {
                            return self.hold(&current, Hold::Blocked(gate), now).await;
                        }
                        Commit::Queued => return self.hold(&current, Hold::Queued, now).await,
                    };
                    match rival {
                        Some(stored) => {
                            current = *stored;
                            raced = true;
                        }
                        None => {
                            self.metrics.moved(Some(&current), next);
                            self.perform(&transition.effects, now).await?;
                            return Ok(Handled::Applied(Box::new(transition.task)));
                        }
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

    /// The sweeper's pass, unbounded in time: see [`Baton::sweep_until`].
    pub async fn sweep(&self) -> Result<SweepReport, InfraError> {
        self.sweep_until(None).await
    }

    /// The sweeper's pass: arms timers for tasks entering the timer window, re-arms lost timers,
    /// times out attempts past their deadline and drains projects, at most [`SWEEP_LIMIT`] of
    /// each. It starts nothing new once `until` has passed (each task it began is finished,
    /// timers included), says so in the report, and leaves the rest to the next sweep.
    pub async fn sweep_until(&self, until: Option<Instant>) -> Result<SweepReport, InfraError> {
        let now = self.now();
        let mut report = SweepReport::default();
        let in_time = |report: &mut SweepReport| {
            report.cut_short |= until.is_some_and(|until| Instant::now() >= until);
            !report.cut_short
        };
        let arms = match in_time(&mut report) {
            true => self.store.wakes(WakeKind::Arm, now, SWEEP_LIMIT).await?,
            false => Vec::new(),
        };
        for (tenant, id) in arms {
            if !in_time(&mut report) {
                break;
            }
            if let Some(task) = self.store.get(&tenant, &id).await?
                && let Some(timer) = Effects::of(&task).timer
                && self.store.set_wake(&task, wake_for(&task, now)).await?
            {
                self.arm(&timer, now).await?;
                report.armed += 1;
            }
        }
        let checks = match in_time(&mut report) {
            true => self.store.wakes(WakeKind::Check, now, SWEEP_LIMIT).await?,
            false => Vec::new(),
        };
        for (tenant, id) in checks {
            if !in_time(&mut report) {
                break;
            }
            let Some(task) = self.store.get(&tenant, &id).await? else {
                continue;
            };
            match task.status {
                Status::Running if task.deadline.is_some_and(|deadline| deadline <= now) => {
                    let command = Command::TimeOut {
                        attempt: task.attempt,
                    };
                    let gates = Gates::default();
                    if let Handled::Applied(_) = self.execute_on(task, &command, &gates).await? {
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
        let drains = match in_time(&mut report) {
            true => self.store.drains(now, SWEEP_LIMIT).await?,
            false => Vec::new(),
        };
        for (tenant, project) in drains {
            if !in_time(&mut report) {
                break;
            }
            let status = self.store.project_status(&tenant, &project).await?;
            let Some(drain) = status.drain else {
                continue;
            };
            let admission = self
                .admit_from(&status, &tenant, &project, Pace::PerSecond(ADMIT_RATE))
                .await?;
            report.admitted += admission.armed;
            // Free slots and nobody in the ready set: it is empty, unless a task joined it too
            // recently to show. A task seen there but not taken (its slot went to a reservation
            // whose answer was lost, say) keeps the drain going.
            if admission.seen == 0 && status.free_slots() > 0 && drain.last_park + INDEX_LAG < now {
                if self
                    .store
                    .end_drain(&tenant, &project, drain.last_park)
                    .await?
                {
                    report.drained += 1;
                }
            } else {
                self.store
                    .reschedule_drain(&tenant, &project, now + DRAIN_INTERVAL)
                    .await?;
            }
        }
        info!(?report, "sweep done");
        Ok(report)
    }

    /// Puts a due task the gate refused in its project's ready set, announcing it when it was
    /// not waiting there already for the same reason.
    async fn park(&self, task: &Task, gate: Gate, now: DateTime<Utc>) -> Result<(), InfraError> {
        if task.parked.is_some_and(|parked| parked.gate == gate) {
            return Ok(());
        }
        let parked = Parked {
            gate,
            since: task.parked.map_or(now, |parked| parked.since),
        };
        if self.store.park(task, parked).await? {
            let mut waiting = task.clone();
            waiting.parked = Some(parked);
            if let Some(event) = Event::parked(&waiting) {
                self.bus.publish(&[event]).await?;
            }
        }
        Ok(())
    }

    /// A due task met a free slot while others wait in its project's ready set: it joins them,
    /// and the slot goes to the first in line. Should the admission not see it yet (the index
    /// lags its write), nor anything else to admit, its own timer comes back for it.
    async fn queue(&self, task: &Task, now: DateTime<Utc>) -> Result<(), InfraError> {
        self.park(task, Gate::Capacity, now).await?;
        if self.admit(&task.tenant, &task.project, ADMIT_RATE).await? == 0
            && let Some(timer) = Effects::of(task).timer
        {
            self.timers.arm(&timer, INDEX_LAG).await?;
        }
        Ok(())
    }

    /// Lets tasks of a project's ready set start, as many as it has free slots, at most `rate`
    /// per second, highest priority first: takes each out of the ready set with a slot held for
    /// it (so neither another admission nor a task that comes due meanwhile takes that slot) and
    /// arms its timer, so `on-due` dispatches it in that slot (a task a closed gate refuses then
    /// is parked again, its slot given back). Answers how many it armed.
    pub async fn admit(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        rate: u32,
    ) -> Result<usize, InfraError> {
        self.admit_paced(tenant, project, Pace::PerSecond(rate))
            .await
    }

    async fn admit_paced(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        pace: Pace,
    ) -> Result<usize, InfraError> {
        let status = self.store.project_status(tenant, project).await?;
        Ok(self.admit_from(&status, tenant, project, pace).await?.armed)
    }

    async fn admit_from(
        &self,
        status: &ProjectStatus,
        tenant: &Tenant,
        project: &ProjectId,
        pace: Pace,
    ) -> Result<Admission, InfraError> {
        let pace = match pace {
            Pace::PerSecond(rate) => Pace::PerSecond(rate.clamp(1, MAX_ADMIT_RATE)),
            Pace::AtOnce => Pace::AtOnce,
        };
        let window = match pace {
            Pace::PerSecond(rate) => u64::from(rate * ADMIT_WINDOW_SECONDS),
            Pace::AtOnce => u64::MAX,
        };
        let wanted = status.free_slots().min(window);
        if status.drain.is_none() || wanted == 0 {
            return Ok(Admission::default());
        }
        // Read past the wanted count: an entry another admission has just taken may still show.
        let wanted = wanted as usize;
        let candidates = self.store.ready(tenant, project, wanted * 2).await?;
        let seen = candidates.len();
        let now = self.now();
        let slots = status.controls();
        let mut room: Vec<u64> = (0..slots.lanes)
            .map(|lane| slots.share(lane).saturating_sub(status.taken(lane)))
            .collect();
        let turn = next_turn() as usize;
        let mut admitted = 0;
        'tasks: for timer in candidates {
            if admitted == wanted {
                break;
            }
            let delay = match pace {
                Pace::PerSecond(rate) => {
                    Duration::milliseconds(admitted as i64 * 1000 / i64::from(rate))
                }
                Pace::AtOnce => Duration::zero(),
            };
            let backstop = Wake {
                kind: WakeKind::Check,
                at: now + delay + TIMER_GRACE,
            };
            loop {
                let lanes = room.len();
                let Some(lane) = (0..lanes)
                    .map(|i| (turn + i) % lanes)
                    .find(|&lane| room[lane] > 0)
                else {
                    break 'tasks;
                };
                let index = u16::try_from(lane).unwrap_or(0);
                match self
                    .store
                    .reserve(project, &timer, index, &slots, backstop)
                    .await?
                {
                    Reservation::Reserved => {
                        self.timers.arm(&timer, delay).await?;
                        room[lane] -= 1;
                        admitted += 1;
                        break;
                    }
                    Reservation::NotWaiting => break,
                    // Concurrent moves took the lane's slots first; another may have room.
                    Reservation::Full => room[lane] = 0,
                }
            }
        }
        if admitted > 0 {
            info!(%tenant, %project, admitted, ?pace, "admitted from the ready set");
        }
        Ok(Admission {
            armed: admitted,
            seen,
        })
    }

    /// Sets a project's concurrency limit; a raised limit admits waiting tasks at once.
    pub async fn set_limit(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        limit: u32,
        operator: &Operator<'_>,
    ) -> Result<ProjectStatus, ControlError> {
        if !(1..=MAX_CONCURRENCY_LIMIT).contains(&limit) {
            return Err(ControlError::invalid(
                "limit",
                format!("must be between 1 and {MAX_CONCURRENCY_LIMIT}"),
            ));
        }
        let change = self.change(operator)?;
        self.store.set_limit(tenant, project, limit).await?;
        self.bus
            .announce(&ControlEvent::Limit {
                tenant: tenant.clone(),
                project: project.clone(),
                limit,
                change,
            })
            .await?;
        self.admit(tenant, project, ADMIT_RATE).await?;
        Ok(self.store.project_status(tenant, project).await?)
    }

    /// Pauses a project: its due tasks park instead of starting; running ones finish.
    pub async fn pause(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        operator: &Operator<'_>,
    ) -> Result<ProjectStatus, ControlError> {
        let change = self.change(operator)?;
        self.store
            .set_paused(tenant, project, Some(&change))
            .await?;
        self.announce_pause(tenant, project, true, change).await?;
        Ok(self.store.project_status(tenant, project).await?)
    }

    /// Resumes a project and starts its waiting tasks at most `rate` per second.
    pub async fn resume(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        operator: &Operator<'_>,
        rate: u32,
    ) -> Result<ProjectStatus, ControlError> {
        if !(1..=MAX_ADMIT_RATE).contains(&rate) {
            return Err(ControlError::invalid(
                "ratePerSecond",
                format!("must be between 1 and {MAX_ADMIT_RATE}"),
            ));
        }
        let change = self.change(operator)?;
        self.store.set_paused(tenant, project, None).await?;
        self.announce_pause(tenant, project, false, change).await?;
        self.admit(tenant, project, rate).await?;
        Ok(self.store.project_status(tenant, project).await?)
    }

    async fn announce_pause(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        paused: bool,
        change: Change,
    ) -> Result<(), InfraError> {
        self.bus
            .announce(&ControlEvent::Pause {
                tenant: tenant.clone(),
                project: project.clone(),
                paused,
                change,
            })
            .await
    }

    /// Engages or disengages a kill switch. A disengaged switch admits the tasks it held.
    pub async fn set_kill_switch(
        &self,
        scope: &Scope,
        engaged: bool,
        operator: &Operator<'_>,
    ) -> Result<KillSwitch, ControlError> {
        let switch = KillSwitch {
            engaged,
            last: self.change(operator)?,
        };
        self.store.set_kill_switch(scope, &switch).await?;
        warn!(
            ?scope,
            engaged,
            by = operator.by,
            reason = operator.reason,
            "kill switch set"
        );
        self.bus
            .announce(&ControlEvent::KillSwitch {
                scope: scope.clone(),
                engaged,
                change: switch.last.clone(),
            })
            .await?;
        if !engaged {
            match scope {
                Scope::Project { tenant, project } => {
                    self.admit(tenant, project, ADMIT_RATE).await?;
                }
                Scope::Global => {
                    let far = self.now() + Duration::days(3650);
                    for (tenant, project) in self.store.drains(far, SWEEP_LIMIT).await? {
                        self.admit(&tenant, &project, ADMIT_RATE).await?;
                    }
                }
            }
        }
        Ok(switch)
    }

    /// A kill switch (`None`: missing, which stops dispatch like an engaged one).
    pub async fn kill_switch(&self, scope: &Scope) -> Result<Option<KillSwitch>, InfraError> {
        self.store.kill_switch(scope).await
    }

    /// A kill switch's changes, newest first.
    pub async fn kill_switch_history(
        &self,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<KillSwitch>, InfraError> {
        self.store.kill_switch_history(scope, limit).await
    }

    /// How many tasks wait in a project's ready set.
    pub async fn queued(&self, tenant: &Tenant, project: &ProjectId) -> Result<u64, InfraError> {
        self.store.queued(tenant, project).await
    }

    fn change(&self, operator: &Operator<'_>) -> Result<Change, ControlError> {
        check_reason(operator.reason)
            .map_err(|message| ControlError::invalid("reason", message))?;
        let reason = operator.reason.trim();
        Ok(Change {
            by: operator.by.to_owned(),
            reason: reason.to_owned(),
            at: self.now(),
        })
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
        match (&effects.admit, &self.admissions) {
            (Some((tenant, project)), Some(held)) => held.hold(tenant, project),
            (Some((tenant, project)), None) => self.admit_released(tenant, project).await?,
            (None, _) => {}
        }
        if let Some(cascade) = &effects.cascade {
            match cascade.step {
                Step::Release => self.release(&cascade.tenant, &cascade.dependents).await?,
                Step::Cancel { .. } | Step::Rollback { .. } => self.bus.cascade(cascade).await?,
            }
        }
        Ok(())
    }

    /// After a dependency succeeded: starts each of `dependents` that is Pending and whose
    /// dependencies have all succeeded. Two dependencies succeeding at once may both get here;
    /// the release is one conditional write, so only one of them moves the task. A dependent
    /// released and not started since has its release's events and timer sent again (the
    /// success is delivered again when they may not have gone out).
    async fn release(&self, tenant: &Tenant, dependents: &[TaskId]) -> Result<(), InfraError> {
        for child in self.store.get_many(tenant, dependents).await? {
            if !matches!(child.status, Status::Pending | Status::Scheduled) {
                continue;
            }
            let dependencies = self.store.get_many(tenant, &child.depends_on).await?;
            let command = Command::Release {
                dependencies: dependencies.iter().map(|d| (d.id, d.status)).collect(),
            };
            let id = child.id;
            let span = task_span(&child);
            let gates = Gates::default();
            let handled =
                Box::pin(self.execute_on(child, &command, &gates).instrument(span)).await?;
            let released = matches!(handled, Handled::Applied(_));
            info!(task_id = %id, %tenant, released, "dependencies checked");
        }
        Ok(())
    }

    /// After slots were given back (by one command, or by a batch's): admits from the ready
    /// set if anything waits there, into every free slot at once (a freed slot is not paced
    /// like a resume). Reads only the project's drain when nothing waits.
    pub(crate) async fn admit_released(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<(), InfraError> {
        if self.store.drain(tenant, project).await?.is_some() {
            self.admit_paced(tenant, project, Pace::AtOnce).await?;
        }
        Ok(())
    }

    async fn arm(&self, timer: &Timer, now: DateTime<Utc>) -> Result<(), InfraError> {
        let delay = (timer.due_at - now).clamp(Duration::zero(), MAX_TIMER_DELAY);
        self.timers.arm(timer, delay).await
    }
}

/// The dispatch of a task's first attempt, with a fresh lease.
fn first_dispatch() -> Result<Command, InfraError> {
    Ok(Command::Dispatch {
        attempt: 1,
        lease: crate::ports::draw_lease()?,
    })
}

/// The span every log line about `task` is written in: the fields a log filter finds a task's
/// whole path by, across functions.
fn task_span(task: &Task) -> Span {
    info_span!(
        "task",
        task_id = %task.id,
        tenant = %task.tenant,
        project = %task.project,
        version = task.version,
        correlation_id = %task.correlation_id,
    )
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
