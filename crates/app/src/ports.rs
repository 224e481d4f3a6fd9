use std::error::Error;

use async_trait::async_trait;
use baton_domain::{
    Cascade, Change, Command, ControlEvent, Controls, DEFAULT_CONCURRENCY_LIMIT, Event, Gate,
    Idempotency, KillSwitch, Lease, Parked, ProjectId, Rejection, Scope, Status, Task, TaskId,
    Tenant, Tier, Timer,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// An infrastructure failure (network, throttling, a missing resource). Retryable: the message
/// that caused it is failed so its queue delivers it again; unless it is `permanent`, a refusal
/// the service will give every time (DynamoDB's `ValidationException`), which is parked at once.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed")]
pub struct InfraError {
    /// What was being done, e.g. `DynamoDB PutItem`.
    pub operation: &'static str,
    /// The underlying error, chain intact.
    #[source]
    pub source: Box<dyn Error + Send + Sync>,
    /// Whether the service refused the request itself, so repeating it cannot succeed.
    pub permanent: bool,
}

impl InfraError {
    /// Wraps `source` as a failure of `operation`.
    pub fn new(operation: &'static str, source: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            operation,
            source: source.into(),
            permanent: false,
        }
    }

    /// Wraps `source` as a refusal of `operation` that no retry changes.
    pub fn permanent(
        operation: &'static str,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        Self {
            permanent: true,
            ..Self::new(operation, source)
        }
    }

    /// The same failure told to another caller (one request failed for several messages): its
    /// operation and permanence, its causes as text.
    pub fn shared(&self) -> Self {
        let mut causes = vec![self.source.to_string()];
        let mut source = self.source.source();
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        Self {
            permanent: self.permanent,
            ..Self::new(self.operation, causes.join(": "))
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
    /// The idempotency key was used before (within its retention) by the task `task_id`, whose
    /// submission had the payload fingerprint `fingerprint`. Nothing was written.
    KeyUsed {
        /// The task the key belongs to.
        task_id: TaskId,
        /// The fingerprint of that task's submission.
        fingerprint: String,
    },
    /// A dependency moved after it was read (it is no longer at the version read): nothing was
    /// written; read the dependencies again.
    DependencyMoved,
    /// A task created Running could not take a slot, as its dispatch could not have: nothing
    /// was written.
    Held(Hold),
}

/// Why a project refused a dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// It is paused, or at its limit.
    Blocked(Gate),
    /// A slot is free but tasks wait in its ready set: the task joins them, and an admission
    /// gives the slot to the first in line.
    Queued,
}

impl From<Hold> for Commit {
    fn from(hold: Hold) -> Self {
        match hold {
            Hold::Blocked(gate) => Commit::Blocked(gate),
            Hold::Queued => Commit::Queued,
        }
    }
}

/// The outcome of a conditional write.
#[derive(Debug, Clone, PartialEq)]
pub enum Commit {
    /// Written.
    Committed,
    /// The stored task no longer had the expected status and version; here is what it has
    /// (`None`: it is gone).
    Conflict(Option<Box<Task>>),
    /// A dispatch (Scheduled → Running) that its project refused (paused, or at its limit):
    /// nothing was written.
    Blocked(Gate),
    /// A dispatch into a free slot while tasks wait in the project's ready set: it joins them,
    /// and an admission gives the slot to the first in line. Nothing was written.
    Queued,
}

/// Which tasks to list.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskQuery {
    /// Owner.
    pub tenant: Tenant,
    /// Project.
    pub project: ProjectId,
    /// Only tasks in one of these statuses (empty: any).
    pub statuses: Vec<Status>,
    /// Only tasks of this tier.
    pub tier: Option<Tier>,
    /// Only tasks submitted at or after this time.
    pub submitted_after: Option<DateTime<Utc>>,
    /// Only tasks submitted before this time.
    pub submitted_before: Option<DateTime<Utc>>,
    /// At most this many.
    pub first: usize,
    /// Continue after this task (newest first).
    pub after: Option<TaskId>,
}

impl TaskQuery {
    /// The first `first` tasks of a project, newest first, unfiltered.
    pub fn project(tenant: Tenant, project: ProjectId, first: usize) -> Self {
        Self {
            tenant,
            project,
            statuses: Vec::new(),
            tier: None,
            submitted_after: None,
            submitted_before: None,
            first,
            after: None,
        }
    }

    /// Whether `task` passes the filters other than tenant and project (which a store's key
    /// already selects).
    pub fn matches(&self, task: &Task) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&task.status))
            && self.tier.as_ref().is_none_or(|tier| &task.tier == tier)
            && self
                .submitted_after
                .is_none_or(|after| task.created_at >= after)
            && self
                .submitted_before
                .is_none_or(|before| task.created_at < before)
    }

    /// Whether only the key range (project, time) filters, so every key read is a task returned.
    pub fn filters_by_key_only(&self) -> bool {
        self.statuses.is_empty() && self.tier.is_none()
    }
}

/// Which tasks `produced_by` lists: those whose result names `model` in its provenance.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelQuery {
    /// Owner.
    pub tenant: Tenant,
    /// The model, exactly as the workers report it.
    pub model: String,
    /// Only results committed at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only results committed before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many.
    pub first: usize,
    /// Continue after this task (newest result first).
    pub after: Option<TaskId>,
}

impl ModelQuery {
    /// Whether `task`'s result is one this query lists (apart from paging).
    pub fn matches(&self, task: &Task) -> bool {
        let model = task.provenance.as_ref().and_then(|p| p.model.as_deref());
        let Some(at) = task.produced_at() else {
            return false;
        };
        task.tenant == self.tenant
            && model == Some(self.model.as_str())
            && self.since.is_none_or(|since| at >= since)
            && self.until.is_none_or(|until| at < until)
    }
}

/// When the sweeper must look at a project that has tasks in its ready set, in case no released
/// slot admits them (a crash between a release and the admission, a disengaged switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// When.
    pub at: DateTime<Utc>,
    /// When a task last joined the ready set.
    pub last_park: DateTime<Utc>,
}

/// What an admission's attempt to take a task out of the ready set found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The task left the ready set holding a slot.
    Reserved,
    /// It was not waiting there (another admission took it first, or it moved).
    NotWaiting,
    /// Every slot of the lane is taken or held.
    Full,
}

/// A project's counts per status (kept by counters that every transition moves in the same write)
/// and its flow controls, as read in one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectStatus {
    /// Count per status, in [`Status::ALL`] order, zeros included.
    pub counts: Vec<(Status, u64)>,
    /// How many tasks may run at once.
    pub limit: u32,
    /// Who paused it, why and when; `None` while it runs.
    pub paused: Option<Change>,
    /// Slots held for tasks an admission took out of the ready set that have not started yet.
    pub reserved: u64,
    /// Slots taken (by running tasks, and held for admitted ones) in each of its lanes.
    pub lanes: Vec<u64>,
    /// Slots taken in the project's own count, by tasks an earlier version started.
    pub legacy: u64,
    /// Set while tasks wait in its ready set.
    pub drain: Option<Drain>,
    /// The global kill switch (`None`: missing, which stops dispatch like an engaged one).
    pub global_switch: Option<KillSwitch>,
    /// The project's kill switch (`None`: missing; a project that has never had a task has none).
    pub project_switch: Option<KillSwitch>,
}

impl Default for ProjectStatus {
    fn default() -> Self {
        Self {
            counts: Self::counted(|_| 0),
            limit: DEFAULT_CONCURRENCY_LIMIT,
            paused: None,
            reserved: 0,
            lanes: Vec::new(),
            legacy: 0,
            drain: None,
            global_switch: None,
            project_switch: None,
        }
    }
}

impl ProjectStatus {
    /// Counts per status in [`Status::ALL`] order; missing statuses count zero.
    pub fn counted(count: impl Fn(Status) -> u64) -> Vec<(Status, u64)> {
        Status::ALL.iter().map(|&s| (s, count(s))).collect()
    }

    /// How many tasks are in `status`.
    pub fn count(&self, status: Status) -> u64 {
        self.counts
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }

    /// How many tasks the project has.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    /// What would stop a due task of the project from starting now, the first that applies in
    /// the order a dispatch meets them: the kill switches (read by its batch), then what its
    /// write checks ([`ProjectStatus::write_gate`]).
    pub fn gate(&self) -> Option<Gate> {
        let engaged = |switch: &Option<KillSwitch>| switch.as_ref().is_none_or(|s| s.engaged);
        if engaged(&self.global_switch) {
            Some(Gate::GlobalKillSwitch)
        } else if engaged(&self.project_switch) {
            Some(Gate::ProjectKillSwitch)
        } else {
            self.write_gate()
        }
    }

    /// The slots taken: by running tasks, and held for admitted ones.
    pub fn held(&self) -> u64 {
        self.count(Status::Running) + self.reserved
    }

    /// What a dispatch's own write refuses it for: the project paused, or at its limit.
    pub fn write_gate(&self) -> Option<Gate> {
        if self.paused.is_some() {
            Some(Gate::Paused)
        } else if self.held() >= u64::from(self.limit) {
            Some(Gate::Capacity)
        } else {
            None
        }
    }

    /// Its controls, as a batch of dispatches reads them.
    pub fn controls(&self) -> Controls {
        Controls {
            limit: self.limit,
            lanes: u16::try_from(self.lanes.len().max(1)).unwrap_or(u16::MAX),
            legacy: self.legacy,
            paused: self.paused.is_some(),
            waiting: self.drain.is_some(),
        }
    }

    /// How many more tasks may start now: in each lane, what it holds below its share.
    pub fn free_slots(&self) -> u64 {
        if self.gate().is_some() {
            return 0;
        }
        let controls = self.controls();
        (0..controls.lanes)
            .map(|lane| controls.share(lane).saturating_sub(self.taken(lane)))
            .sum::<u64>()
            .min(u64::from(self.limit).saturating_sub(self.held()))
    }

    /// A lane with a free slot: the first from `turn`, round the lanes.
    pub fn lane_with_room(&self, turn: u32) -> Option<u16> {
        let controls = self.controls();
        let lanes = u32::from(controls.lanes);
        (0..lanes)
            .filter_map(|i| u16::try_from((turn % lanes + i) % lanes).ok())
            .find(|&lane| self.taken(lane) < controls.share(lane))
    }

    /// Slots taken in lane `lane`.
    pub fn taken(&self, lane: u16) -> u64 {
        self.lanes.get(usize::from(lane)).copied().unwrap_or(0)
    }
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
    /// Creates `task` unless a task with its id exists or `idempotency`'s key is taken. A task of
    /// a project new to the store creates the project with its limit and its kill switch
    /// (disengaged) in the same write; a project that exists never gets a switch back this way.
    /// `dependencies` are the task's dependencies as read: each gets the task among its
    /// dependents in the same write, if it is still at the version read. A task created Running
    /// (dispatched at its submission) takes a slot in its lane in the same write, on the
    /// terms of a dispatch's [`TaskStore::commit`] (`slots`), or is not written
    /// ([`Created::Held`]).
    async fn create(
        &self,
        task: &Task,
        wake: Option<Wake>,
        idempotency: Option<&Idempotency>,
        dependencies: &[Task],
        slots: Option<&Controls>,
    ) -> Result<Created, InfraError>;
    /// Reads one task.
    async fn get(&self, tenant: &Tenant, id: &TaskId) -> Result<Option<Task>, InfraError>;
    /// Reads tasks of one tenant, strongly consistent, in no particular order; missing ones are
    /// left out.
    async fn get_many(&self, tenant: &Tenant, ids: &[TaskId]) -> Result<Vec<Task>, InfraError>;
    /// Tasks whose result names a model, newest result first.
    async fn produced_by(&self, query: &ModelQuery) -> Result<Page, InfraError>;
    /// Writes `next` (its history entry included) if the stored task still has `current`'s
    /// status, version and dependents (a new dependent is added without a transition). A
    /// dispatch (Scheduled → Running) also takes a slot in `next`'s lane, and only while the
    /// lane holds less than its share of the limit by `slots`, the project's controls as the
    /// dispatching batch read them (that batch checks the kill switches, the pause and the
    /// ready set, see [`crate::Gates`]); a task started in the slot held for it keeps that one.
    /// Every move out of Running gives its slot back to the lane it was taken from.
    async fn commit(
        &self,
        current: &Task,
        next: &Task,
        wake: Option<Wake>,
        slots: Option<&Controls>,
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

/// Each project's ready set: the due tasks its gates hold back, in admission order, and the
/// drain that admits them while any wait.
#[async_trait]
pub trait ReadySet: Send + Sync {
    /// Puts `task` (still at its version, and holding a slot or not as it did when read) in its
    /// project's ready set, ordered by priority then due time, after making sure the project has
    /// a drain; a slot held for it is given back in the same write. `false`: the task has moved.
    async fn park(&self, task: &Task, parked: Parked) -> Result<bool, InfraError>;
    /// Takes the task of `timer` (still on its attempt) out of `project`'s ready set together
    /// with a free slot of lane `lane` (below its share by `slots`), in one write: the slot is
    /// held for it until its dispatch runs in it (or any other move gives it back), so no task
    /// that comes later takes it. Its timer is armed next; `wake` lets the sweeper arm it again
    /// should that be lost.
    async fn reserve(
        &self,
        project: &ProjectId,
        timer: &Timer,
        lane: u16,
        slots: &Controls,
        wake: Wake,
    ) -> Result<Reservation, InfraError>;
    /// The timers of the first `limit` tasks of a project's ready set, in admission order.
    async fn ready(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        limit: usize,
    ) -> Result<Vec<Timer>, InfraError>;
    /// A project's drain (`None`: nothing waits in its ready set), strongly consistent.
    async fn drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<Option<Drain>, InfraError>;
    /// How many tasks wait in a project's ready set.
    async fn queued(&self, tenant: &Tenant, project: &ProjectId) -> Result<u64, InfraError>;
    /// Projects whose drain is due by `until`, at most `limit`.
    async fn drains(
        &self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Tenant, ProjectId)>, InfraError>;
    /// Moves a project's drain to `at`.
    async fn reschedule_drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        at: DateTime<Utc>,
    ) -> Result<(), InfraError>;
    /// Ends a project's drain if no task has joined its ready set since `last_park`.
    async fn end_drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        last_park: DateTime<Utc>,
    ) -> Result<bool, InfraError>;
}

/// A project's counters and the controls an operator turns.
#[async_trait]
pub trait ProjectControls: Send + Sync {
    /// A project's counts per status, read from its counters (never by counting tasks).
    async fn project_status(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<ProjectStatus, InfraError>;
    /// A project's controls, strongly consistent, in one read: what a batch of dispatches
    /// reads once.
    async fn controls(&self, tenant: &Tenant, project: &ProjectId) -> Result<Controls, InfraError> {
        Ok(self.project_status(tenant, project).await?.controls())
    }
    /// Sets how many of a project's tasks may run at once.
    async fn set_limit(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        limit: u32,
    ) -> Result<(), InfraError>;
    /// Pauses (`Some`) or resumes (`None`) a project.
    async fn set_paused(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        paused: Option<&Change>,
    ) -> Result<(), InfraError>;
}

/// The kill switches, global and per project.
#[async_trait]
pub trait KillSwitches: Send + Sync {
    /// Reads a kill switch (`None`: missing), strongly consistent.
    async fn kill_switch(&self, scope: &Scope) -> Result<Option<KillSwitch>, InfraError>;
    /// Sets a kill switch and records the change in its history, both or neither.
    async fn set_kill_switch(&self, scope: &Scope, switch: &KillSwitch) -> Result<(), InfraError>;
    /// A kill switch's changes, newest first, at most `limit`.
    async fn kill_switch_history(
        &self,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<KillSwitch>, InfraError>;
}

/// Everything the service keeps in its store: one adapter implements every part.
pub trait Store: TaskStore + ReadySet + ProjectControls + KillSwitches {}

impl<T: TaskStore + ReadySet + ProjectControls + KillSwitches> Store for T {}

/// Where outbound events go.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes `events`, all or an error.
    async fn publish(&self, events: &[Event]) -> Result<(), InfraError>;
    /// Announces that an operator turned a control.
    async fn announce(&self, event: &ControlEvent) -> Result<(), InfraError>;
    /// Sends a cascade's command to each dependent through the queue of the function that
    /// handles it (`CancelTask`, `RollbackRequested`), so a walk of any size goes on one edge
    /// per message.
    async fn cascade(&self, cascade: &Cascade) -> Result<(), InfraError>;
    /// Publishes each group of events (one message's, say), in as few requests as the adapter
    /// can: one answer per group, in order. A group is published whole or answers an error
    /// (some of its events may have gone: events are at least once).
    async fn publish_groups(&self, groups: &[Vec<Event>]) -> Vec<Result<(), InfraError>> {
        let mut answers = Vec::with_capacity(groups.len());
        for events in groups {
            answers.push(self.publish(events).await);
        }
        answers
    }
}

/// Delayed delivery of due timers to `on-due`.
#[async_trait]
pub trait TimerQueue: Send + Sync {
    /// Delivers `timer` after `delay` (at most [`crate::MAX_TIMER_DELAY`]).
    async fn arm(&self, timer: &Timer, delay: Duration) -> Result<(), InfraError>;
    /// Arms each of `timers`, in as few requests as the adapter can: one answer per timer, in
    /// order.
    async fn arm_each(&self, timers: &[(Timer, Duration)]) -> Vec<Result<(), InfraError>> {
        let mut answers = Vec::with_capacity(timers.len());
        for (timer, delay) in timers {
            answers.push(self.arm(timer, *delay).await);
        }
        answers
    }
}

/// Where the service reports what it did, for dashboards and alarms.
pub trait Metrics: Send + Sync {
    /// A task was created (`before` is `None`) or moved from `before` to `after`; a note
    /// (same status) is reported too, and left to the adapter to skip.
    fn moved(&self, before: Option<&Task>, after: &Task);
    /// A command was refused.
    fn rejected(&self, command: &Command, rejection: &Rejection);
}

/// Metrics that go nowhere: the default, for tests and embedded use.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn moved(&self, _: Option<&Task>, _: &Task) {}
    fn rejected(&self, _: &Command, _: &Rejection) {}
}

/// The time. A port so tests can move it.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// A fresh lease for an attempt, from the operating system's cryptographic random source.
/// Without that source no lease is safe to hand out: the failure is an infrastructure error,
/// and the dispatch waits for a later delivery.
pub fn draw_lease() -> Result<Lease, InfraError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| InfraError::new("draw a lease", e.to_string()))?;
    Ok(Lease::from_random(bytes))
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Who is calling: the tenant whose tasks they may see and touch, and their identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The tenant.
    pub tenant: Tenant,
    /// The caller's identity within it (a token's `sub`).
    pub subject: String,
    /// Whether they operate Baton itself (the token's `scope` holds `baton:admin`): only they
    /// may turn the global kill switch.
    #[serde(default)]
    pub admin: bool,
}

/// What a live subscription watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Watch {
    /// One task.
    Task(TaskId),
    /// Every task of a project.
    Project(ProjectId),
}

/// A GraphQL subscription as a client started it; it is run again for every update it watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// The client's id for it, unique within its connection.
    pub id: String,
    /// What it watches.
    pub watch: Watch,
    /// The GraphQL document.
    pub query: String,
    /// Its variables.
    pub variables: serde_json::Value,
    /// The operation to run, when the document has several.
    pub operation_name: Option<String>,
}

/// An open WebSocket connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// The id API Gateway gave it.
    pub id: String,
    /// Who opened it, once they have authenticated.
    pub caller: Option<Caller>,
    /// Its live subscriptions.
    pub subscriptions: Vec<Subscription>,
}

/// WebSocket connections and their subscriptions, kept for the notifier (with an expiry, so a
/// connection that never said goodbye is removed).
#[async_trait]
pub trait Connections: Send + Sync {
    /// Records a new connection, authenticated or not yet.
    async fn open(
        &self,
        id: &str,
        caller: Option<&Caller>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), InfraError>;
    /// Sets the caller of a connection that has none. `false`: it had one already.
    async fn authenticate(&self, id: &str, caller: &Caller) -> Result<bool, InfraError>;
    /// Counts connection `id` among `tenant`'s open connections unless the tenant holds `limit`
    /// live ones already (live: not closed, and not past its `expires_at` at `now`, so a
    /// connection whose close never came stops counting when it expires). `false`: it is full.
    async fn reserve(
        &self,
        tenant: &Tenant,
        id: &str,
        limit: usize,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, InfraError>;
    /// Reads a connection.
    async fn connection(&self, id: &str) -> Result<Option<Connection>, InfraError>;
    /// Adds a subscription to an authenticated connection. `false`: its id is taken.
    async fn subscribe(
        &self,
        connection: &str,
        tenant: &Tenant,
        subscription: &Subscription,
    ) -> Result<bool, InfraError>;
    /// Ends one subscription (nothing if there is none with this id).
    async fn unsubscribe(&self, connection: &str, id: &str) -> Result<(), InfraError>;
    /// Forgets a connection, all its subscriptions, and its place among its tenant's.
    async fn close(&self, connection: &str) -> Result<(), InfraError>;
    /// The connections with a subscription on any of `watches` of `tenant`.
    async fn watchers(&self, tenant: &Tenant, watches: &[Watch])
    -> Result<Vec<String>, InfraError>;
}

/// Whether a message reached its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Sent.
    Sent,
    /// The connection is gone.
    Gone,
}

/// Messages to WebSocket clients (API Gateway's `@connections` API).
#[async_trait]
pub trait Push: Send + Sync {
    /// Sends `message` to `connection`.
    async fn send(&self, connection: &str, message: &str) -> Result<Delivery, InfraError>;
    /// Closes `connection` from the server side.
    async fn disconnect(&self, connection: &str) -> Result<(), InfraError>;
}
