//! Model-based tests of the lifecycle under faults.
//!
//! A reference model (a few lines of rules per message, written apart from `decide`) and the real
//! service run the same random sequences: submissions (half through the `submit` function, which
//! dispatches a task due now itself, half through GraphQL, which arms its timer), timers, worker
//! results, cancels, clock ticks, sweeps and operator controls. The service runs on the in-memory
//! store, bus and timers behind a seeded fault layer (calls that fail, writes whose response is
//! lost, requests sent twice); each message's events and timers are held in an `Outbox` and sent
//! when its handler is done, as the queue functions send them, and a message whose events or
//! timers were not sent counts as failed. Messages are delivered the way SQS does it: in any order, some twice, timers and
//! results some not at all, and a message whose handler failed is delivered again. Now and then
//! a forger answers a `TaskReady` too, with a lease of its own: it must never move the task.
//!
//! After every step every task is compared with the model: a step that succeeded must leave
//! exactly the model's next state; a step that failed may leave the state before or after (the
//! write may have happened; a submission started here, also the task created and not started),
//! and the model follows. Then the invariants: forward-only moves, one
//! history entry per version, counters equal to the tasks they count, no dispatch above the limit
//! or through a closed gate, no `TaskReady` for a finished task. Once the sequence ends the faults
//! stop, the controls open, and the world runs until it settles: every task must be terminal.
//!
//! `BATON_MODEL_SEQUENCES` sets how many sequences run (10,000 by default); a failure prints its
//! seed and the command that replays it with a trace (`BATON_MODEL_SEED`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use baton_app::faults::{Fault, Faults, Faulty};
use baton_app::memory::{ManualClock, MemoryBus, MemoryStore, MemoryTimers};
use baton_app::{
    ADMIT_RATE, Baton, Clock, Gates, Handled, Operator, Outbox, ProjectControls, ReadySet, Start,
    SubmitError, TaskStore,
};
use baton_domain::{
    Command, EventKind, Lease, Outcome, ProjectId, Scope, Status, SubmitRequest, Task, TaskError,
    TaskId, Tenant, Timer,
};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

/// Random steps per sequence, before the world settles.
const STEPS: usize = 40;
/// Tasks per sequence at most.
const MAX_TASKS: usize = 6;
/// Every task's attempt timeout.
const TIMEOUT_SECONDS: u32 = 60;
/// The projects tasks go to; controls act on them.
const PROJECTS: [&str; 2] = ["p1", "p2"];
/// The share of adapter calls that meet a fault while faults are on.
const FAULT_RATE: f64 = 0.08;
/// The share of deliveries that are lost (timers and results only) and duplicated.
const DROP_RATE: f64 = 0.04;
const DUPLICATE_RATE: f64 = 0.08;
/// The share of `TaskReady` events a forger also answers, without the attempt's lease.
const FORGE_RATE: f64 = 0.05;
/// Trace lines kept for a failure's report (a replay keeps them all).
const RECENT: usize = 30;
/// Rounds of deliver, tick, sweep the world gets to settle.
const SETTLE_ROUNDS: usize = 200;

#[test]
fn the_service_follows_the_model_through_faults_and_every_task_finishes() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    if let Some(seed) = env("BATON_MODEL_SEED") {
        let mut sim = Sim::new(seed, true);
        let result = runtime.block_on(sim.run());
        println!("{}", Vec::from(sim.trace).join("\n"));
        result.unwrap_or_else(|failure| panic!("seed {seed}: {failure}"));
        return;
    }
    let sequences = env("BATON_MODEL_SEQUENCES").unwrap_or(10_000);
    let base = fastrand::u64(..u64::MAX / 2);
    let mut totals = Stats::default();
    for seed in base..base + sequences {
        let mut sim = Sim::new(seed, false);
        if let Err(failure) = runtime.block_on(sim.run()) {
            let recent = Vec::from(sim.trace).join("\n");
            panic!(
                "seed {seed}: {failure}\nlast steps:\n{recent}\n\
                 replay with its full trace: BATON_MODEL_SEED={seed} cargo test -p baton-app \
                 --test model -- --nocapture"
            );
        }
        totals.add(&sim.stats, &sim.faults.struck.lock().unwrap());
    }
    println!("model: {sequences} sequences from seed {base}: {totals}");
    assert_eq!(totals.lost, 0);
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}: not a number: {value}"))
    })
}

/// Faults struck at random while enabled, counted by kind.
struct SeededFaults {
    rng: Mutex<fastrand::Rng>,
    enabled: AtomicBool,
    struck: Mutex<BTreeMap<Fault, u64>>,
}

impl Faults for SeededFaults {
    fn strike(&self, _operation: &'static str, write: bool) -> Option<Fault> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let mut rng = self.rng.lock().unwrap();
        if rng.f64() >= FAULT_RATE {
            return None;
        }
        let fault = match rng.u8(0..3) {
            _ if !write => Fault::Fail,
            0 => Fault::Fail,
            1 => Fault::LoseResponse,
            _ => Fault::Retry,
        };
        *self.struck.lock().unwrap().entry(fault).or_default() += 1;
        Some(fault)
    }
}

/// What is delivered to the service.
#[derive(Debug, Clone)]
enum Message {
    /// A client's submission (delivered until it is acknowledged): through the `submit`
    /// function, which dispatches a task due now itself (`here`), or through GraphQL, which arms
    /// its timer.
    Submit {
        id: TaskId,
        project: usize,
        delay_seconds: u32,
        max_attempts: u32,
        here: bool,
    },
    /// A timer, deliverable from `at`.
    Timer { timer: Timer, at: DateTime<Utc> },
    /// A worker's result, with the lease it came with.
    Result {
        id: TaskId,
        attempt: u32,
        succeeded: bool,
        lease: Option<Lease>,
        /// Sent by someone who never received the attempt: the lease is not its own.
        forged: bool,
    },
    /// A client's cancel.
    Cancel { id: TaskId },
}

impl Message {
    /// Whether the infrastructure may lose it (and the service must recover without it).
    fn may_be_lost(&self) -> bool {
        matches!(self, Message::Timer { .. } | Message::Result { .. })
    }
}

/// The model's view of one task.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    id: TaskId,
    project: usize,
    status: Status,
    attempt: u32,
    version: u64,
    max_attempts: u32,
    due_at: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    /// Whether an admission holds a slot for it: not predicted (admissions pick from the ready
    /// set, which the model does not keep) but read from the store after every step, checked
    /// against the counters, and what decides whether its dispatch may take a slot.
    reserved: bool,
}

impl Expected {
    fn moved(&self, status: Status) -> Self {
        Self {
            status,
            version: self.version + 1,
            deadline: None,
            reserved: false,
            ..self.clone()
        }
    }

    /// The attempt failed: retried after the task's backoff while attempts remain.
    fn failed(&self, now: DateTime<Utc>) -> Self {
        if self.attempt < self.max_attempts {
            let policy = baton_domain::RetryPolicy {
                max_attempts: self.max_attempts,
                backoff_seconds: 10,
                max_backoff_seconds: 900,
            };
            Self {
                attempt: self.attempt + 1,
                due_at: now + policy.backoff(&self.id, self.attempt),
                ..self.moved(Status::Scheduled)
            }
        } else {
            self.moved(Status::Failed)
        }
    }

    /// Whether `task` is in this state.
    fn is(&self, task: &Task) -> bool {
        (
            task.status,
            task.attempt,
            task.version,
            task.due_at,
            task.deadline,
        ) == (
            self.status,
            self.attempt,
            self.version,
            self.due_at,
            self.deadline,
        )
    }
}

/// A project's controls as the operator set them.
#[derive(Debug, Clone, Copy)]
struct Controls {
    paused: bool,
    switch: bool,
    limit: u32,
}

type Tasks = BTreeMap<TaskId, Expected>;

/// The reference model.
#[derive(Debug, Clone)]
struct Model {
    tasks: Tasks,
    projects: [Controls; 2],
    global_switch: bool,
    /// Per project, whether tasks wait in its ready set (it has a drain): like reservations,
    /// read from the store after every step. While they wait, a task that comes due joins them
    /// instead of taking a free slot.
    waiting: [bool; 2],
}

impl Model {
    /// Whether `task`, due, may start: the gates open, and a slot free with no task waiting
    /// for one, or a slot held for it while the slots taken and held are within the limit (which
    /// may have been lowered since).
    fn may_start(&self, task: &Expected) -> bool {
        let controls = self.projects[task.project];
        let held = held(&self.tasks, task.project);
        !controls.paused
            && !controls.switch
            && !self.global_switch
            && match task.reserved {
                true => held <= controls.limit,
                false => held < controls.limit && !self.waiting[task.project],
            }
    }

    /// The tasks after `message` is handled at `now`.
    fn deliver(&self, message: &Message, now: DateTime<Utc>) -> Tasks {
        let mut tasks = self.tasks.clone();
        let (id, next) = match message {
            Message::Submit {
                id,
                project,
                delay_seconds,
                max_attempts,
                here,
            } => {
                let new = Expected {
                    id: *id,
                    project: *project,
                    status: Status::Scheduled,
                    attempt: 1,
                    version: 1,
                    max_attempts: *max_attempts,
                    due_at: now + Duration::seconds((*delay_seconds).into()),
                    deadline: None,
                    reserved: false,
                };
                let task = self.tasks.get(id).cloned().unwrap_or(new);
                // Started here: dispatched as its timer would be, while it has not moved.
                let start = *here
                    && (task.status, task.version) == (Status::Scheduled, 1)
                    && task.due_at <= now
                    && self.may_start(&task);
                let next = match start {
                    true => Expected {
                        deadline: Some(now + Duration::seconds(TIMEOUT_SECONDS.into())),
                        ..task.moved(Status::Running)
                    },
                    false => task,
                };
                (*id, next)
            }
            Message::Timer { timer, .. } => {
                let Some(task) = self.tasks.get(&timer.task_id) else {
                    return tasks;
                };
                let due = task.status == Status::Scheduled
                    && task.attempt == timer.attempt
                    && task.due_at <= now;
                let next = match due && self.may_start(task) {
                    true => Expected {
                        deadline: Some(now + Duration::seconds(TIMEOUT_SECONDS.into())),
                        ..task.moved(Status::Running)
                    },
                    false => task.clone(),
                };
                (task.id, next)
            }
            Message::Result {
                id,
                attempt,
                succeeded,
                forged,
                ..
            } => {
                let task = &self.tasks[id];
                let next = match (task.status, task.attempt == *attempt, succeeded, forged) {
                    (_, _, _, true) => task.clone(),
                    (Status::Running, true, true, false) => task.moved(Status::Succeeded),
                    (Status::Running, true, false, false) => task.failed(now),
                    _ => task.clone(),
                };
                (*id, next)
            }
            Message::Cancel { id } => {
                let task = &self.tasks[id];
                let next = match task.status.is_terminal() {
                    true => task.clone(),
                    false => task.moved(Status::Cancelled),
                };
                (*id, next)
            }
        };
        tasks.insert(id, next);
        tasks
    }

    /// The tasks after a sweep at `now`: every running attempt past its deadline timed out.
    fn sweep(&self, now: DateTime<Utc>) -> Tasks {
        let mut tasks = self.tasks.clone();
        for task in tasks.values_mut() {
            if task.status == Status::Running && task.deadline.is_some_and(|at| at <= now) {
                *task = task.failed(now);
            }
        }
        tasks
    }
}

#[derive(Debug, Default)]
struct Stats {
    sequences: u64,
    steps: u64,
    deliveries: u64,
    redeliveries: u64,
    dropped: u64,
    duplicated: u64,
    forged: u64,
    sweeps: u64,
    controls: u64,
    tasks: u64,
    finished: BTreeMap<&'static str, u64>,
    faults: BTreeMap<Fault, u64>,
    /// Tasks not terminal once the world settled.
    lost: u64,
}

impl Stats {
    fn add(&mut self, run: &Stats, faults: &BTreeMap<Fault, u64>) {
        self.sequences += 1;
        self.steps += run.steps;
        self.deliveries += run.deliveries;
        self.redeliveries += run.redeliveries;
        self.dropped += run.dropped;
        self.duplicated += run.duplicated;
        self.forged += run.forged;
        self.sweeps += run.sweeps;
        self.controls += run.controls;
        self.tasks += run.tasks;
        self.lost += run.lost;
        for (status, n) in &run.finished {
            *self.finished.entry(status).or_default() += n;
        }
        for (fault, n) in faults {
            *self.faults.entry(*fault).or_default() += n;
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} steps, {} deliveries ({} again after a failed handler, {} lost, {} duplicated, \
             {} forged results), {} sweeps, {} controls; faults injected {:?}; {} tasks, finished {:?}, \
             {} not finished",
            self.steps,
            self.deliveries,
            self.redeliveries,
            self.dropped,
            self.duplicated,
            self.forged,
            self.sweeps,
            self.controls,
            self.faults,
            self.tasks,
            self.finished,
            self.lost,
        )
    }
}

/// One sequence: the service on faulty adapters, its inbox, and the model.
struct Sim {
    rng: fastrand::Rng,
    faults: Arc<SeededFaults>,
    baton: Baton,
    store: Arc<MemoryStore>,
    bus: Arc<MemoryBus>,
    timers: Arc<MemoryTimers>,
    clock: Arc<ManualClock>,
    tenant: Tenant,
    inbox: Vec<Message>,
    events_seen: usize,
    timers_seen: usize,
    model: Model,
    /// Whether the world is settling: no faults, no losses, every worker answers with success.
    settling: bool,
    verbose: bool,
    trace: VecDeque<String>,
    stats: Stats,
}

type Failure = String;

impl Sim {
    fn new(seed: u64, verbose: bool) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let faults = Arc::new(SeededFaults {
            rng: Mutex::new(fastrand::Rng::with_seed(rng.u64(..))),
            enabled: AtomicBool::new(true),
            struck: Mutex::default(),
        });
        let store = Arc::new(MemoryStore::default());
        let bus = Arc::new(MemoryBus::default());
        let timers = Arc::new(MemoryTimers::default());
        let clock = Arc::new(ManualClock::new("2026-03-01T12:00:00Z".parse().unwrap()));
        let baton = Baton::new(
            Arc::new(Faulty::new(store.clone(), faults.clone())),
            Arc::new(Faulty::new(bus.clone(), faults.clone())),
            Arc::new(Faulty::new(timers.clone(), faults.clone())),
            clock.clone(),
        );
        let controls = Controls {
            paused: false,
            switch: false,
            limit: rng.u32(1..=3),
        };
        Self {
            rng,
            faults,
            baton,
            store,
            bus,
            timers,
            clock,
            tenant: Tenant::parse("acme").unwrap(),
            inbox: Vec::new(),
            events_seen: 0,
            timers_seen: 0,
            model: Model {
                tasks: Tasks::new(),
                projects: [controls; 2],
                global_switch: false,
                waiting: [false; 2],
            },
            settling: false,
            verbose,
            trace: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Adds a line to the trace: all of it when replaying one seed, else the last few.
    fn note(&mut self, line: String) {
        if !self.verbose && self.trace.len() == RECENT {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("[{}] {line}", self.clock.now().time()));
    }

    async fn run(&mut self) -> Result<(), Failure> {
        for project in 0..PROJECTS.len() {
            let limit = self.model.projects[project].limit;
            self.control(Control::Limit(project, limit)).await?;
        }
        for _ in 0..STEPS {
            self.stats.steps += 1;
            match self.rng.u8(0..100) {
                0..15 if self.model.tasks.len() < MAX_TASKS => self.submit(),
                0..60 => self.deliver_one().await?,
                60..65 if !self.model.tasks.is_empty() => {
                    let ids: Vec<TaskId> = self.model.tasks.keys().copied().collect();
                    let id = ids[self.rng.usize(..ids.len())];
                    self.inbox.push(Message::Cancel { id });
                }
                65..80 => {
                    let seconds = self.rng.i64(1..=90);
                    self.clock.advance(Duration::seconds(seconds));
                    self.note(format!("tick {seconds} s"));
                }
                80..90 => self.sweep().await?,
                _ => {
                    let control = Control::random(&mut self.rng);
                    self.control(control).await?;
                }
            }
        }
        self.settle().await
    }

    fn submit(&mut self) {
        let message = Message::Submit {
            id: TaskId::from_uuid(uuid::Uuid::from_u128(self.rng.u128(..))),
            project: self.rng.usize(..PROJECTS.len()),
            // Half due now, so that half the submissions through `submit` start there.
            delay_seconds: self.rng.u32(0..=30) * u32::from(self.rng.bool()),
            max_attempts: self.rng.u32(1..=3),
            here: self.rng.bool(),
        };
        self.inbox.push(message);
    }

    /// Delivers a random deliverable message, if any; it may be lost or duplicated on the way.
    async fn deliver_one(&mut self) -> Result<(), Failure> {
        let now = self.clock.now();
        let deliverable: Vec<usize> = (0..self.inbox.len())
            .filter(|&i| !matches!(&self.inbox[i], Message::Timer { at, .. } if *at > now))
            .collect();
        if deliverable.is_empty() {
            return Ok(());
        }
        let index = deliverable[self.rng.usize(..deliverable.len())];
        let message = match !self.settling && self.rng.f64() < DUPLICATE_RATE {
            true => {
                self.stats.duplicated += 1;
                self.inbox[index].clone()
            }
            false => self.inbox.swap_remove(index),
        };
        if !self.settling && message.may_be_lost() && self.rng.f64() < DROP_RATE {
            self.stats.dropped += 1;
            self.note(format!("lost {message:?}"));
            return Ok(());
        }
        self.deliver(message).await
    }

    /// Hands `message` to the service and checks the outcome against the model; a failed
    /// handler's message goes back to the inbox.
    async fn deliver(&mut self, message: Message) -> Result<(), Failure> {
        self.stats.deliveries += 1;
        let now = self.clock.now();
        let predicted = self.model.deliver(&message, now);
        // A submission started here that fails may have created its task and not started it.
        let created = match &message {
            Message::Submit { here: true, .. } => {
                let mut through_timer = message.clone();
                if let Message::Submit { here, .. } = &mut through_timer {
                    *here = false;
                }
                Some(self.model.deliver(&through_timer, now))
            }
            _ => None,
        };
        // As a queue function runs it: its events and timers held until it is done.
        let outbox = Outbox::new(&self.baton);
        let baton = outbox.holding(&self.baton, "message");
        let handled = match &message {
            Message::Submit {
                id,
                project,
                delay_seconds,
                max_attempts,
                here,
            } => {
                let request: SubmitRequest = serde_json::from_value(json!({
                    "tenant": "acme", "project": PROJECTS[*project], "name": "n", "tier": "gpu",
                    "timeout_seconds": TIMEOUT_SECONDS, "delay_seconds": delay_seconds,
                    "retry": {"max_attempts": max_attempts, "backoff_seconds": 10}
                }))
                .unwrap();
                let switches = Gates::default();
                let start = match here {
                    true => Start::Here(&switches),
                    false => Start::Timer,
                };
                match baton.submit_in(&request, *id, start).await {
                    Ok(submitted) => Ok(format!("duplicate: {}", submitted.duplicate)),
                    Err(SubmitError::Infra(error)) => Err(format!("{error}: {}", error.source)),
                    Err(refused) => return Err(format!("submission refused: {refused}")),
                }
            }
            Message::Timer { timer, .. } => {
                let command = Command::Dispatch {
                    attempt: timer.attempt,
                    lease: Lease::from_random(self.rng.u128(..).to_le_bytes()),
                };
                self.execute(&baton, &timer.task_id, &command).await
            }
            Message::Result {
                id,
                attempt,
                succeeded,
                lease,
                ..
            } => {
                let outcome = match succeeded {
                    true => Outcome::Succeeded {
                        output: json!({"ok": true}),
                    },
                    false => Outcome::Failed {
                        error: TaskError {
                            code: "E".into(),
                            message: "worker failed".into(),
                            retryable: true,
                        },
                    },
                };
                let command = Command::Complete {
                    lease: lease.clone(),
                    attempt: *attempt,
                    outcome,
                    provenance: None,
                };
                self.execute(&baton, id, &command).await
            }
            Message::Cancel { id } => {
                let command = Command::Cancel {
                    reason: "changed my mind".into(),
                };
                self.execute(&baton, id, &command).await
            }
        };
        let unsent = outbox.flush().await.into_iter().next();
        let handled = match unsent {
            Some((_, error)) if handled.is_ok() => Err(format!("not sent: {}", error.source)),
            _ => handled,
        };
        self.note(format!("deliver {message:?} → {handled:?}"));
        if handled.is_err() {
            self.stats.redeliveries += 1;
            self.inbox.push(message);
        }
        self.settled(predicted, created, handled.is_ok()).await
    }

    async fn execute(
        &self,
        baton: &Baton,
        id: &TaskId,
        command: &Command,
    ) -> Result<String, String> {
        baton
            .execute(&self.tenant, id, command)
            .await
            .map(|handled| match handled {
                Handled::Applied(task) => format!("applied: {:?} v{}", task.status, task.version),
                Handled::AlreadyApplied(_) => "already applied".to_owned(),
                Handled::LostRace(rejection) => format!("lost a race: {}", rejection.code()),
                Handled::Rejected(rejection) => format!("rejected: {}", rejection.code()),
                Handled::Rearmed(_) => "not due yet: armed again".to_owned(),
                Handled::Parked(gate) => format!("parked: {gate:?}"),
                Handled::NotFound => "not found".to_owned(),
            })
            .map_err(|error| format!("{error}: {}", error.source))
    }

    async fn sweep(&mut self) -> Result<(), Failure> {
        self.stats.sweeps += 1;
        let predicted = self.model.sweep(self.clock.now());
        let swept = self.baton.sweep().await;
        self.note(format!("sweep → {swept:?}"));
        self.settled(predicted, None, swept.is_ok()).await
    }

    /// Sets a control (retried until it goes through, as an operator would) and records it in
    /// the model.
    async fn control(&mut self, control: Control) -> Result<(), Failure> {
        self.stats.controls += 1;
        let operator = Operator {
            by: "model",
            reason: "testing",
        };
        let tenant = &self.tenant;
        let mut tries = 0;
        loop {
            tries += 1;
            let set = match control {
                Control::Pause(p) => self
                    .baton
                    .pause(tenant, &project_id(p), &operator)
                    .await
                    .map(drop),
                Control::Resume(p) => self
                    .baton
                    .resume(tenant, &project_id(p), &operator, ADMIT_RATE)
                    .await
                    .map(drop),
                Control::Limit(p, limit) => self
                    .baton
                    .set_limit(tenant, &project_id(p), limit, &operator)
                    .await
                    .map(drop),
                Control::ProjectSwitch(p, engaged) => {
                    let scope = Scope::Project {
                        tenant: tenant.clone(),
                        project: project_id(p),
                    };
                    self.baton
                        .set_kill_switch(&scope, engaged, &operator)
                        .await
                        .map(drop)
                }
                Control::GlobalSwitch(engaged) => self
                    .baton
                    .set_kill_switch(&Scope::Global, engaged, &operator)
                    .await
                    .map(drop),
            };
            match set {
                Ok(()) => break,
                Err(_) if tries < 100 => {}
                Err(error) => return Err(format!("{control:?} kept failing: {error}")),
            }
        }
        match control {
            Control::Pause(p) => self.model.projects[p].paused = true,
            Control::Resume(p) => self.model.projects[p].paused = false,
            Control::Limit(p, limit) => self.model.projects[p].limit = limit,
            Control::ProjectSwitch(p, engaged) => self.model.projects[p].switch = engaged,
            Control::GlobalSwitch(engaged) => self.model.global_switch = engaged,
        }
        self.note(format!("{control:?} after {tries} tries"));
        // Controls move no task; they may arm timers.
        let unchanged = self.model.tasks.clone();
        self.settled(unchanged, None, true).await
    }

    /// After a step: compares every task with the model (`predicted`, or when the step failed,
    /// either that or the state before), checks the invariants, and collects what the step sent.
    async fn settled(
        &mut self,
        predicted: Tasks,
        created: Option<Tasks>,
        succeeded: bool,
    ) -> Result<(), Failure> {
        let mut tasks = Tasks::new();
        let mut moved_to_running = Vec::new();
        let ids: Vec<TaskId> = predicted.keys().copied().collect();
        for id in ids {
            let before = self.model.tasks.get(&id);
            let after = &predicted[&id];
            let real = self
                .store
                .get(&self.tenant, &id)
                .await
                .map_err(|e| e.to_string())?;
            let expected = match real {
                None if before.is_none() && !succeeded => continue,
                None => return Err(format!("task {id} is missing; the model has {after:?}")),
                Some(ref task) if after.is(task) => after.clone(),
                Some(ref task) if !succeeded && before.is_some_and(|b| b.is(task)) => {
                    before.unwrap().clone()
                }
                Some(ref task)
                    if !succeeded
                        && let Some(created) = created.as_ref().and_then(|c| c.get(&id))
                        && created.is(task) =>
                {
                    created.clone()
                }
                Some(task) => {
                    return Err(format!(
                        "task {id} is {:?} attempt {} version {} due {} deadline {:?}; the model \
                         has {after:?} (before the step: {before:?})",
                        task.status, task.attempt, task.version, task.due_at, task.deadline
                    ));
                }
            };
            let task = real.unwrap();
            check_history(&task)?;
            if task.reserved && task.status != Status::Scheduled {
                return Err(format!("task {id} is {:?} and holds a slot", task.status));
            }
            let expected = Expected {
                reserved: task.reserved,
                ..expected
            };
            if expected.status == Status::Running
                && before.is_none_or(|b| b.status != Status::Running)
            {
                moved_to_running.push(expected.project);
            }
            tasks.insert(id, expected);
        }
        for project in moved_to_running {
            let controls = self.model.projects[project];
            if controls.paused || controls.switch || self.model.global_switch {
                return Err(format!(
                    "a task of {} was dispatched through a closed gate: {controls:?}, global \
                     switch {}",
                    PROJECTS[project], self.model.global_switch
                ));
            }
        }
        let before = std::mem::replace(&mut self.model.tasks, tasks);
        for (project, name) in PROJECTS.iter().enumerate() {
            let (now, limit) = (
                held(&self.model.tasks, project),
                self.model.projects[project].limit,
            );
            // A lowered limit leaves running tasks above it; none may start (or be given a
            // slot) until they end.
            if now > limit && now > held(&before, project) {
                return Err(format!(
                    "{name} runs or holds slots for {now} tasks, above its limit {limit}"
                ));
            }
            self.check_counters(project).await?;
            self.model.waiting[project] = self
                .store
                .drain(&self.tenant, &project_id(project))
                .await
                .map_err(|e| e.to_string())?
                .is_some();
        }
        self.collect(&before)
    }

    /// The project's counters must equal the tasks they count.
    async fn check_counters(&self, project: usize) -> Result<(), Failure> {
        let status = self
            .store
            .project_status(&self.tenant, &project_id(project))
            .await
            .map_err(|e| e.to_string())?;
        for (state, count) in &status.counts {
            let tasks = self
                .model
                .tasks
                .values()
                .filter(|task| task.project == project && task.status == *state)
                .count() as u64;
            if *count != tasks {
                return Err(format!(
                    "{} counts {count} {state:?} tasks; it has {tasks}",
                    PROJECTS[project]
                ));
            }
        }
        let reserved = reserved(&self.model.tasks, project);
        if status.reserved != u64::from(reserved) {
            return Err(format!(
                "{} counts {} held slots; {reserved} tasks hold one",
                PROJECTS[project], status.reserved
            ));
        }
        Ok(())
    }

    /// Takes what the step published and armed: timers join the inbox, `TaskReady` reaches a
    /// worker, who answers (or, outside settling, sometimes never does).
    fn collect(&mut self, before: &Tasks) -> Result<(), Failure> {
        let now = self.clock.now();
        let armed = self.timers.armed();
        for (timer, delay) in &armed[self.timers_seen..] {
            self.inbox.push(Message::Timer {
                timer: timer.clone(),
                at: now + *delay,
            });
        }
        self.timers_seen = armed.len();
        let published = self.bus.published();
        for event in &published[self.events_seen..] {
            if event.kind != EventKind::Ready {
                continue;
            }
            if before
                .get(&event.task_id)
                .is_some_and(|task| task.status.is_terminal())
            {
                return Err(format!(
                    "TaskReady for task {}, which had finished",
                    event.task_id
                ));
            }
            if self.settling || self.rng.f64() < 0.9 {
                self.inbox.push(Message::Result {
                    id: event.task_id,
                    attempt: event.attempt,
                    succeeded: self.settling || self.rng.f64() < 0.7,
                    lease: event.lease.clone(),
                    forged: false,
                });
            }
            if !self.settling && self.rng.f64() < FORGE_RATE {
                self.stats.forged += 1;
                let lease = match self.rng.bool() {
                    true => Some(Lease::from_random(self.rng.u128(..).to_le_bytes())),
                    false => None,
                };
                self.inbox.push(Message::Result {
                    id: event.task_id,
                    attempt: event.attempt,
                    succeeded: true,
                    lease,
                    forged: true,
                });
            }
        }
        self.events_seen = published.len();
        Ok(())
    }

    /// Stops the faults, opens every gate and runs the world until every task is terminal.
    async fn settle(&mut self) -> Result<(), Failure> {
        self.settling = true;
        self.faults.enabled.store(false, Ordering::Relaxed);
        self.control(Control::GlobalSwitch(false)).await?;
        for project in 0..PROJECTS.len() {
            self.control(Control::ProjectSwitch(project, false)).await?;
            self.control(Control::Resume(project)).await?;
        }
        for _ in 0..SETTLE_ROUNDS {
            while self
                .inbox
                .iter()
                .any(|m| !matches!(m, Message::Timer { at, .. } if *at > self.clock.now()))
            {
                self.deliver_one().await?;
            }
            if self.model.tasks.values().all(|t| t.status.is_terminal()) {
                break;
            }
            self.clock.advance(Duration::seconds(61));
            self.sweep().await?;
        }
        self.stats.tasks = self.model.tasks.len() as u64;
        for task in self.model.tasks.values() {
            match task.status.is_terminal() {
                true => *self.stats.finished.entry(task.status.as_str()).or_default() += 1,
                false => self.stats.lost += 1,
            }
        }
        match self.stats.lost {
            0 => Ok(()),
            lost => Err(format!(
                "{lost} tasks never finished after {SETTLE_ROUNDS} rounds: {:?}",
                self.model
                    .tasks
                    .values()
                    .filter(|t| !t.status.is_terminal())
                    .collect::<Vec<_>>()
            )),
        }
    }
}

/// How many of `tasks` of `project` are running.
fn running(tasks: &Tasks, project: usize) -> u32 {
    tasks
        .values()
        .filter(|task| task.project == project && task.status == Status::Running)
        .count() as u32
}

/// The slots of `project` taken by running tasks and held for admitted ones.
fn held(tasks: &Tasks, project: usize) -> u32 {
    running(tasks, project) + reserved(tasks, project)
}

fn reserved(tasks: &Tasks, project: usize) -> u32 {
    tasks
        .values()
        .filter(|task| task.project == project && task.reserved)
        .count() as u32
}

fn project_id(index: usize) -> ProjectId {
    ProjectId::parse(PROJECTS[index]).unwrap()
}

/// The domain's history invariants, and here, where nothing is rolled back, only the
/// lifecycle's forward moves.
fn check_history(task: &Task) -> Result<(), Failure> {
    let fail = |what: String| Err(format!("task {}: {what}: {:#?}", task.id, task.history));
    if let Err(what) = task.check_history() {
        return fail(what);
    }
    for entry in &task.history {
        let forward = matches!(
            (entry.from, entry.to),
            (None, Status::Scheduled)
                | (Some(Status::Scheduled), Status::Running | Status::Cancelled)
                | (
                    Some(Status::Running),
                    Status::Succeeded | Status::Failed | Status::Scheduled | Status::Cancelled
                )
        );
        if !forward {
            return fail(format!("{:?} → {:?} is not a move", entry.from, entry.to));
        }
    }
    Ok(())
}

/// An operator's control.
#[derive(Debug, Clone, Copy)]
enum Control {
    Pause(usize),
    Resume(usize),
    Limit(usize, u32),
    ProjectSwitch(usize, bool),
    GlobalSwitch(bool),
}

impl Control {
    fn random(rng: &mut fastrand::Rng) -> Self {
        let project = rng.usize(..PROJECTS.len());
        match rng.u8(0..9) {
            0 => Control::Pause(project),
            1 | 2 => Control::Resume(project),
            3 | 4 => Control::Limit(project, rng.u32(1..=3)),
            5 => Control::ProjectSwitch(project, true),
            6 | 7 => Control::ProjectSwitch(project, false),
            _ => Control::GlobalSwitch(rng.bool()),
        }
    }
}
