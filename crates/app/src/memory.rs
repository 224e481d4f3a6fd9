//! In-memory adapters behind the same ports as the AWS ones: for tests of the service, and for
//! anyone who wants to run Baton's rules without an AWS account.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use baton_domain::{
    Cascade, Change, ControlEvent, Controls, DEFAULT_CONCURRENCY_LIMIT, Effects, Event, Gate,
    Idempotency, KillSwitch, Parked, ProjectId, Scope, Status, Task, TaskId, Tenant, Timer,
};
use chrono::{DateTime, Duration, Utc};

use crate::dead_letters::{DeadLetters, Depth, Failure, Letter};
use crate::ports::{
    Caller, Clock, Commit, Connection, Connections, Created, Delivery, Drain, EventBus, Hold,
    InfraError, KillSwitches, ModelQuery, Page, ProjectControls, ProjectStatus, Push, ReadySet,
    Reservation, Subscription, TaskQuery, TaskStore, TimerQueue, Wake, WakeKind, Watch,
};
use crate::service::DRAIN_INTERVAL;

type Key = (Tenant, TaskId);
type ProjectKey = (Tenant, ProjectId);

/// What the store keeps per project besides its counters.
#[derive(Debug, Clone)]
struct Project {
    /// Whether a task has created it (and with it, its kill switch).
    created: bool,
    limit: u32,
    paused: Option<Change>,
    /// Slots held for admitted tasks that have not started.
    reserved: u64,
    drain: Option<Drain>,
}

impl Default for Project {
    fn default() -> Self {
        Self {
            created: false,
            limit: DEFAULT_CONCURRENCY_LIMIT,
            paused: None,
            reserved: 0,
            drain: None,
        }
    }
}

/// A task store in a map, with the same gate, counters and controls as the DynamoDB one. Starts
/// like a deployed stack: the global kill switch present and disengaged.
pub struct MemoryStore {
    tasks: Mutex<BTreeMap<Key, (Task, Option<Wake>)>>,
    counters: Mutex<BTreeMap<(Tenant, ProjectId, Status), u64>>,
    projects: Mutex<BTreeMap<ProjectKey, Project>>,
    switches: Mutex<HashMap<Scope, KillSwitch>>,
    switch_history: Mutex<Vec<(Scope, KillSwitch)>>,
    keys: Mutex<BTreeMap<(Tenant, String), (TaskId, String)>>,
    lose_commit_responses: Mutex<usize>,
    rival: Mutex<Option<Task>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        let installed = KillSwitch {
            engaged: false,
            last: Change {
                by: "baton".to_owned(),
                reason: "installed".to_owned(),
                at: DateTime::UNIX_EPOCH,
            },
        };
        Self {
            tasks: Mutex::default(),
            counters: Mutex::default(),
            projects: Mutex::default(),
            switches: Mutex::new(HashMap::from([(Scope::Global, installed)])),
            switch_history: Mutex::default(),
            keys: Mutex::default(),
            lose_commit_responses: Mutex::default(),
            rival: Mutex::default(),
        }
    }
}

impl MemoryStore {
    /// The next `n` commits are written but answer as a conflict with the written state, as
    /// DynamoDB does when the SDK retries a write whose response was lost.
    pub fn lose_commit_responses(&self, n: usize) {
        *self.lose_commit_responses.lock().unwrap() = n;
    }

    /// Just before the next commit or create, another writer stores `task`, so that commit (or
    /// a create that read `task` as a dependency) loses the race.
    pub fn race_next_commit(&self, task: Task) {
        *self.rival.lock().unwrap() = Some(task);
    }

    /// Stores the rival set by [`MemoryStore::race_next_commit`], if any.
    fn let_rival_win(&self, tasks: &mut BTreeMap<Key, (Task, Option<Wake>)>) {
        if let Some(rival) = self.rival.lock().unwrap().take()
            && let Some((replaced, _)) =
                tasks.insert((rival.tenant.clone(), rival.id), (rival.clone(), None))
        {
            self.count(&rival, Some(replaced.status), rival.status);
        }
    }

    /// Deletes a kill switch, as an operator's mistake or a bad restore would.
    pub fn delete_kill_switch(&self, scope: &Scope) {
        self.switches.lock().unwrap().remove(scope);
    }

    /// What refuses a dispatch of `current`, as the DynamoDB store's conditions do.
    fn refusal(&self, current: &Task) -> Option<Hold> {
        let status = self.status_of(&current.tenant, &current.project);
        match current.reserved {
            // Its own slot is among those held: it may start unless the limit was lowered
            // below them.
            true if status.paused.is_none() && status.held() > u64::from(status.limit) => {
                Some(Hold::Blocked(Gate::Capacity))
            }
            true => status
                .paused
                .is_some()
                .then_some(Hold::Blocked(Gate::Paused)),
            false => match status.write_gate() {
                None if status.drain.is_some() => Some(Hold::Queued),
                gate => gate.map(Hold::Blocked),
            },
        }
    }

    /// Moves a project's counters as a transition from `from` to `to` does.
    fn count(&self, task: &Task, from: Option<Status>, to: Status) {
        let mut counters = self.counters.lock().unwrap();
        if let Some(from) = from {
            let key = (task.tenant.clone(), task.project.clone(), from);
            let count = counters.entry(key).or_default();
            *count = count.saturating_sub(1);
        }
        *counters
            .entry((task.tenant.clone(), task.project.clone(), to))
            .or_default() += 1;
    }

    /// Gives back the slot held for `task`.
    fn give_back(&self, task: &Task) {
        self.update_project(&task.tenant, &task.project, |project| {
            project.reserved = project.reserved.saturating_sub(1);
        });
    }

    fn counter(&self, tenant: &Tenant, project: &ProjectId, status: Status) -> u64 {
        let key = (tenant.clone(), project.clone(), status);
        self.counters
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// The wake stored with a task.
    pub fn wake(&self, tenant: &Tenant, id: &TaskId) -> Option<Wake> {
        self.tasks
            .lock()
            .unwrap()
            .get(&(tenant.clone(), *id))
            .and_then(|(_, wake)| *wake)
    }

    fn status_of(&self, tenant: &Tenant, project: &ProjectId) -> ProjectStatus {
        let record = self.project(tenant, project);
        let switches = self.switches.lock().unwrap();
        ProjectStatus {
            counts: ProjectStatus::counted(|status| self.counter(tenant, project, status)),
            limit: record.limit,
            paused: record.paused,
            reserved: record.reserved,
            // One lane holds every slot: this store checks its limit as a whole.
            lanes: vec![self.counter(tenant, project, Status::Running) + record.reserved],
            legacy: 0,
            drain: record.drain,
            global_switch: switches.get(&Scope::Global).cloned(),
            project_switch: switches.get(&project_scope(tenant, project)).cloned(),
        }
    }

    fn project(&self, tenant: &Tenant, project: &ProjectId) -> Project {
        let projects = self.projects.lock().unwrap();
        let key = (tenant.clone(), project.clone());
        projects.get(&key).cloned().unwrap_or_default()
    }

    fn update_project(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        change: impl FnOnce(&mut Project),
    ) {
        let mut projects = self.projects.lock().unwrap();
        change(
            projects
                .entry((tenant.clone(), project.clone()))
                .or_default(),
        );
    }

    /// The tasks of a project's ready set in admission order: higher priority, then earlier due.
    fn ready_set(&self, tenant: &Tenant, project: &ProjectId) -> Vec<Task> {
        let tasks = self.tasks.lock().unwrap();
        let mut ready: Vec<Task> = tasks
            .values()
            .map(|(task, _)| task)
            .filter(|task| &task.tenant == tenant && &task.project == project)
            .filter(|task| task.status == Status::Scheduled && task.parked.is_some())
            .cloned()
            .collect();
        ready.sort_by_key(|task| (std::cmp::Reverse(task.priority), task.due_at));
        ready
    }
}

fn project_scope(tenant: &Tenant, project: &ProjectId) -> Scope {
    Scope::Project {
        tenant: tenant.clone(),
        project: project.clone(),
    }
}

#[async_trait]
impl TaskStore for MemoryStore {
    async fn create(
        &self,
        task: &Task,
        wake: Option<Wake>,
        idempotency: Option<&Idempotency>,
        dependencies: &[Task],
        _: Option<&Controls>,
    ) -> Result<Created, InfraError> {
        let mut tasks = self.tasks.lock().unwrap();
        self.let_rival_win(&mut tasks);
        let key = (task.tenant.clone(), task.id);
        if let Some((existing, _)) = tasks.get(&key) {
            return Ok(Created::Exists(Box::new(existing.clone())));
        }
        let moved = dependencies.iter().any(|read| {
            tasks
                .get(&(read.tenant.clone(), read.id))
                .is_none_or(|(stored, _)| stored.version != read.version)
        });
        if moved {
            return Ok(Created::DependencyMoved);
        }
        if task.status == Status::Running
            && let Some(refused) = self.refusal(task)
        {
            return Ok(Created::Held(refused));
        }
        if let Some(idempotency) = idempotency {
            let mut keys = self.keys.lock().unwrap();
            let used = (task.tenant.clone(), idempotency.key.clone());
            if let Some((task_id, fingerprint)) = keys.get(&used) {
                return Ok(Created::KeyUsed {
                    task_id: *task_id,
                    fingerprint: fingerprint.clone(),
                });
            }
            keys.insert(used, (task.id, idempotency.fingerprint.clone()));
        }
        for dependency in dependencies {
            if let Some((stored, _)) = tasks.get_mut(&(dependency.tenant.clone(), dependency.id)) {
                stored.dependents.push(task.id);
            }
        }
        tasks.insert(key, (task.clone(), wake));
        self.count(task, None, task.status);
        let mut new_project = false;
        self.update_project(&task.tenant, &task.project, |project| {
            new_project = !project.created;
            project.created = true;
        });
        if new_project {
            let mut switches = self.switches.lock().unwrap();
            switches
                .entry(project_scope(&task.tenant, &task.project))
                .or_insert_with(|| KillSwitch {
                    engaged: false,
                    last: Change {
                        by: "baton".to_owned(),
                        reason: "project created".to_owned(),
                        at: task.created_at,
                    },
                });
        }
        Ok(Created::Created)
    }

    async fn get(&self, tenant: &Tenant, id: &TaskId) -> Result<Option<Task>, InfraError> {
        let tasks = self.tasks.lock().unwrap();
        Ok(tasks
            .get(&(tenant.clone(), *id))
            .map(|(task, _)| task.clone()))
    }

    async fn get_many(&self, tenant: &Tenant, ids: &[TaskId]) -> Result<Vec<Task>, InfraError> {
        let tasks = self.tasks.lock().unwrap();
        Ok(ids
            .iter()
            .filter_map(|id| tasks.get(&(tenant.clone(), *id)))
            .map(|(task, _)| task.clone())
            .collect())
    }

    async fn produced_by(&self, query: &ModelQuery) -> Result<Page, InfraError> {
        let tasks = self.tasks.lock().unwrap();
        let mut matching: Vec<&Task> = tasks
            .values()
            .map(|(task, _)| task)
            .filter(|task| query.matches(task))
            .collect();
        matching.sort_by_key(|task| std::cmp::Reverse((task.produced_at(), task.id)));
        let start = query.after.map_or(0, |after| {
            matching
                .iter()
                .position(|task| task.id == after)
                .map_or(0, |i| i + 1)
        });
        let page = matching.into_iter().skip(start).cloned().collect();
        Ok(Page::of_first(page, query.first))
    }

    async fn commit(
        &self,
        current: &Task,
        next: &Task,
        wake: Option<Wake>,
        _: Option<&Controls>,
    ) -> Result<Commit, InfraError> {
        let dispatch = current.status == Status::Scheduled && next.status == Status::Running;
        let refused = dispatch.then(|| self.refusal(current)).flatten();
        let mut tasks = self.tasks.lock().unwrap();
        let key = (current.tenant.clone(), current.id);
        self.let_rival_win(&mut tasks);
        let Some((stored, _)) = tasks.get(&key) else {
            return Ok(Commit::Conflict(None));
        };
        let dependents = |task: &Task| task.dependents.len();
        if (
            stored.status,
            stored.version,
            stored.reserved,
            dependents(stored),
        ) != (
            current.status,
            current.version,
            current.reserved,
            dependents(current),
        ) {
            return Ok(Commit::Conflict(Some(Box::new(stored.clone()))));
        }
        if let Some(refused) = refused {
            return Ok(refused.into());
        }
        tasks.insert(key, (next.clone(), wake));
        self.count(next, Some(current.status), next.status);
        if current.reserved {
            self.give_back(current);
        }
        let mut lose = self.lose_commit_responses.lock().unwrap();
        if *lose > 0 {
            *lose -= 1;
            return Ok(Commit::Conflict(Some(Box::new(next.clone()))));
        }
        Ok(Commit::Committed)
    }

    async fn list(&self, query: &TaskQuery) -> Result<Page, InfraError> {
        let tasks = self.tasks.lock().unwrap();
        let mut matching: Vec<Task> = tasks
            .values()
            .map(|(task, _)| task)
            .filter(|task| task.tenant == query.tenant && task.project == query.project)
            .filter(|task| query.matches(task))
            .filter(|task| query.after.is_none_or(|after| task.id < after))
            .cloned()
            .collect();
        matching.sort_by_key(|task| std::cmp::Reverse(task.id));
        Ok(Page::of_first(matching, query.first))
    }

    async fn wakes(
        &self,
        kind: WakeKind,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Tenant, TaskId)>, InfraError> {
        let tasks = self.tasks.lock().unwrap();
        Ok(tasks
            .iter()
            .filter(|(_, (_, wake))| wake.is_some_and(|w| w.kind == kind && w.at <= until))
            .map(|(key, _)| key.clone())
            .take(limit)
            .collect())
    }

    async fn set_wake(&self, task: &Task, wake: Option<Wake>) -> Result<bool, InfraError> {
        let mut tasks = self.tasks.lock().unwrap();
        match tasks.get_mut(&(task.tenant.clone(), task.id)) {
            Some((stored, stored_wake)) if stored.version == task.version => {
                *stored_wake = wake;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl ReadySet for MemoryStore {
    async fn park(&self, task: &Task, parked: Parked) -> Result<bool, InfraError> {
        self.update_project(&task.tenant, &task.project, |project| {
            let at = project
                .drain
                .map_or(parked.since + DRAIN_INTERVAL, |d| d.at);
            project.drain = Some(Drain {
                at,
                last_park: parked
                    .since
                    .max(project.drain.map_or(parked.since, |d| d.last_park)),
            });
        });
        let mut tasks = self.tasks.lock().unwrap();
        match tasks.get_mut(&(task.tenant.clone(), task.id)) {
            Some((stored, wake))
                if (stored.version, stored.reserved) == (task.version, task.reserved) =>
            {
                stored.parked = Some(parked);
                *wake = None;
                if stored.reserved {
                    stored.reserved = false;
                    self.give_back(task);
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn reserve(
        &self,
        project: &ProjectId,
        timer: &Timer,
        _: u16,
        _: &Controls,
        wake: Wake,
    ) -> Result<Reservation, InfraError> {
        let mut tasks = self.tasks.lock().unwrap();
        let Some((task, stored_wake)) = tasks.get_mut(&(timer.tenant.clone(), timer.task_id))
        else {
            return Ok(Reservation::NotWaiting);
        };
        if task.parked.is_none() || task.attempt != timer.attempt || &task.project != project {
            return Ok(Reservation::NotWaiting);
        }
        let status = self.status_of(&task.tenant, &task.project);
        if status.held() >= u64::from(status.limit) {
            return Ok(Reservation::Full);
        }
        task.parked = None;
        task.reserved = true;
        *stored_wake = Some(wake);
        self.update_project(&task.tenant, &task.project, |project| project.reserved += 1);
        Ok(Reservation::Reserved)
    }

    async fn ready(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        limit: usize,
    ) -> Result<Vec<Timer>, InfraError> {
        Ok(self
            .ready_set(tenant, project)
            .iter()
            .take(limit)
            .filter_map(|task| Effects::of(task).timer)
            .collect())
    }

    async fn drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<Option<Drain>, InfraError> {
        Ok(self.project(tenant, project).drain)
    }

    async fn queued(&self, tenant: &Tenant, project: &ProjectId) -> Result<u64, InfraError> {
        Ok(self.ready_set(tenant, project).len() as u64)
    }

    async fn drains(
        &self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Tenant, ProjectId)>, InfraError> {
        let projects = self.projects.lock().unwrap();
        Ok(projects
            .iter()
            .filter(|(_, project)| project.drain.is_some_and(|drain| drain.at <= until))
            .map(|(key, _)| key.clone())
            .take(limit)
            .collect())
    }

    async fn reschedule_drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        at: DateTime<Utc>,
    ) -> Result<(), InfraError> {
        self.update_project(tenant, project, |project| {
            if let Some(drain) = &mut project.drain {
                drain.at = at;
            }
        });
        Ok(())
    }

    async fn end_drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        last_park: DateTime<Utc>,
    ) -> Result<bool, InfraError> {
        let mut ended = false;
        self.update_project(tenant, project, |project| {
            if project
                .drain
                .is_some_and(|drain| drain.last_park == last_park)
            {
                project.drain = None;
                ended = true;
            }
        });
        Ok(ended)
    }
}

#[async_trait]
impl ProjectControls for MemoryStore {
    async fn project_status(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<ProjectStatus, InfraError> {
        Ok(self.status_of(tenant, project))
    }

    async fn set_limit(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        limit: u32,
    ) -> Result<(), InfraError> {
        self.update_project(tenant, project, |project| project.limit = limit);
        Ok(())
    }

    async fn set_paused(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        paused: Option<&Change>,
    ) -> Result<(), InfraError> {
        self.update_project(tenant, project, |project| project.paused = paused.cloned());
        Ok(())
    }
}

#[async_trait]
impl KillSwitches for MemoryStore {
    async fn kill_switch(&self, scope: &Scope) -> Result<Option<KillSwitch>, InfraError> {
        Ok(self.switches.lock().unwrap().get(scope).cloned())
    }

    async fn set_kill_switch(&self, scope: &Scope, switch: &KillSwitch) -> Result<(), InfraError> {
        self.switches
            .lock()
            .unwrap()
            .insert(scope.clone(), switch.clone());
        self.switch_history
            .lock()
            .unwrap()
            .push((scope.clone(), switch.clone()));
        Ok(())
    }

    async fn kill_switch_history(
        &self,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<KillSwitch>, InfraError> {
        let history = self.switch_history.lock().unwrap();
        Ok(history
            .iter()
            .rev()
            .filter(|(s, _)| s == scope)
            .map(|(_, switch)| switch.clone())
            .take(limit)
            .collect())
    }
}

/// A bus that keeps what it is given.
#[derive(Default)]
pub struct MemoryBus {
    events: Mutex<Vec<Event>>,
    controls: Mutex<Vec<ControlEvent>>,
    cascades: Mutex<Vec<Cascade>>,
}

impl MemoryBus {
    /// Every task event published so far, oldest first.
    pub fn published(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Every control event announced so far, oldest first.
    pub fn announced(&self) -> Vec<ControlEvent> {
        self.controls.lock().unwrap().clone()
    }

    /// The cascades sent since the last call, oldest first: what the queue would deliver next.
    pub fn take_cascades(&self) -> Vec<Cascade> {
        std::mem::take(&mut *self.cascades.lock().unwrap())
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, events: &[Event]) -> Result<(), InfraError> {
        self.events.lock().unwrap().extend_from_slice(events);
        Ok(())
    }

    async fn announce(&self, event: &ControlEvent) -> Result<(), InfraError> {
        self.controls.lock().unwrap().push(event.clone());
        Ok(())
    }

    async fn cascade(&self, cascade: &Cascade) -> Result<(), InfraError> {
        self.cascades.lock().unwrap().push(cascade.clone());
        Ok(())
    }
}

/// A timer queue that keeps what it is given.
#[derive(Default)]
pub struct MemoryTimers {
    armed: Mutex<Vec<(Timer, Duration)>>,
}

impl MemoryTimers {
    /// Every timer armed so far with its delay, oldest first.
    pub fn armed(&self) -> Vec<(Timer, Duration)> {
        self.armed.lock().unwrap().clone()
    }
}

#[async_trait]
impl TimerQueue for MemoryTimers {
    async fn arm(&self, timer: &Timer, delay: Duration) -> Result<(), InfraError> {
        self.armed.lock().unwrap().push((timer.clone(), delay));
        Ok(())
    }
}

/// A clock that moves only when told.
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        Self(Mutex::new(now))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// Connections and subscriptions in a map.
#[derive(Default)]
pub struct MemoryConnections {
    connections: Mutex<BTreeMap<String, (Connection, DateTime<Utc>)>>,
    /// Each tenant's reserved connections, with their expiry.
    tenants: Mutex<BTreeMap<Tenant, BTreeMap<String, DateTime<Utc>>>>,
}

#[async_trait]
impl Connections for MemoryConnections {
    async fn open(
        &self,
        id: &str,
        caller: Option<&Caller>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), InfraError> {
        let connection = Connection {
            id: id.to_owned(),
            caller: caller.cloned(),
            subscriptions: Vec::new(),
        };
        let mut connections = self.connections.lock().unwrap();
        connections.insert(id.to_owned(), (connection, expires_at));
        Ok(())
    }

    async fn authenticate(&self, id: &str, caller: &Caller) -> Result<bool, InfraError> {
        let mut connections = self.connections.lock().unwrap();
        match connections.get_mut(id) {
            Some((connection, _)) if connection.caller.is_none() => {
                connection.caller = Some(caller.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn reserve(
        &self,
        tenant: &Tenant,
        id: &str,
        limit: usize,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, InfraError> {
        let mut tenants = self.tenants.lock().unwrap();
        let held = tenants.entry(tenant.clone()).or_default();
        held.retain(|connection, expires| *expires > now && connection != id);
        if held.len() >= limit {
            return Ok(false);
        }
        held.insert(id.to_owned(), expires_at);
        Ok(true)
    }

    async fn connection(&self, id: &str) -> Result<Option<Connection>, InfraError> {
        let connections = self.connections.lock().unwrap();
        Ok(connections
            .get(id)
            .map(|(connection, _)| connection.clone()))
    }

    async fn subscribe(
        &self,
        connection: &str,
        _tenant: &Tenant,
        subscription: &Subscription,
    ) -> Result<bool, InfraError> {
        let mut connections = self.connections.lock().unwrap();
        let Some((connection, _)) = connections.get_mut(connection) else {
            return Ok(false);
        };
        if connection
            .subscriptions
            .iter()
            .any(|s| s.id == subscription.id)
        {
            return Ok(false);
        }
        connection.subscriptions.push(subscription.clone());
        Ok(true)
    }

    async fn unsubscribe(&self, connection: &str, id: &str) -> Result<(), InfraError> {
        let mut connections = self.connections.lock().unwrap();
        if let Some((connection, _)) = connections.get_mut(connection) {
            connection.subscriptions.retain(|s| s.id != id);
        }
        Ok(())
    }

    async fn close(&self, connection: &str) -> Result<(), InfraError> {
        self.connections.lock().unwrap().remove(connection);
        for held in self.tenants.lock().unwrap().values_mut() {
            held.remove(connection);
        }
        Ok(())
    }

    async fn watchers(
        &self,
        tenant: &Tenant,
        watches: &[Watch],
    ) -> Result<Vec<String>, InfraError> {
        let connections = self.connections.lock().unwrap();
        Ok(connections
            .values()
            .filter(|(c, _)| {
                c.caller
                    .as_ref()
                    .is_some_and(|caller| &caller.tenant == tenant)
            })
            .filter(|(c, _)| c.subscriptions.iter().any(|s| watches.contains(&s.watch)))
            .map(|(c, _)| c.id.clone())
            .collect())
    }
}

/// A push channel that keeps what it sends; connections in `gone` answer [`Delivery::Gone`].
#[derive(Default)]
pub struct MemoryPush {
    sent: Mutex<Vec<(String, String)>>,
    gone: Mutex<Vec<String>>,
}

impl MemoryPush {
    /// Every message sent so far, with its connection.
    pub fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().unwrap().clone()
    }

    /// From now on `connection` is gone (or closed by the server).
    pub fn hang_up(&self, connection: &str) {
        self.gone.lock().unwrap().push(connection.to_owned());
    }

    /// Whether `connection` is gone.
    pub fn is_gone(&self, connection: &str) -> bool {
        self.gone.lock().unwrap().iter().any(|c| c == connection)
    }
}

#[async_trait]
impl Push for MemoryPush {
    async fn send(&self, connection: &str, message: &str) -> Result<Delivery, InfraError> {
        if self.is_gone(connection) {
            return Ok(Delivery::Gone);
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push((connection.to_owned(), message.to_owned()));
        Ok(Delivery::Sent)
    }

    async fn disconnect(&self, connection: &str) -> Result<(), InfraError> {
        self.hang_up(connection);
        Ok(())
    }
}

/// One DLQ and its source queue, in memory.
#[derive(Debug, Default)]
struct LetterQueue {
    /// Parked letters and whether a reader holds them.
    parked: Vec<(Letter, bool)>,
    /// Messages sent back to the source queue: the letter's id and the redrive's.
    sent_back: Vec<(String, String)>,
}

/// Dead-letter queues in memory. A letter a reader holds stays hidden until it is released,
/// deleted, or the hold ends ([`MemoryDeadLetters::end_holds`]); sends back can be made to
/// fail, as an interrupted redrive would.
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    queues: Mutex<BTreeMap<String, LetterQueue>>,
    sends_left: Mutex<Option<usize>>,
}

impl MemoryDeadLetters {
    /// DLQs for `queues`, empty.
    pub fn new(queues: &[&str]) -> Self {
        let queues = queues
            .iter()
            .map(|q| ((*q).to_owned(), LetterQueue::default()))
            .collect();
        Self {
            queues: Mutex::new(queues),
            sends_left: Mutex::new(None),
        }
    }

    /// Parks a message that failed with `failure`, first sent at `sent_at`; returns its id.
    pub fn park(&self, queue: &str, failure: Failure, sent_at: DateTime<Utc>) -> String {
        let mut queues = self.queues.lock().unwrap();
        let parked = &mut queues.get_mut(queue).expect("known queue").parked;
        let id = format!("m{}", parked.len() + 1);
        let letter = Letter {
            id: id.clone(),
            receipt: String::new(),
            body: format!("message {id}"),
            sent_at,
            failure,
        };
        parked.push((letter, false));
        id
    }

    /// The ids of the letters in `queue`'s DLQ, held or not.
    pub fn parked(&self, queue: &str) -> Vec<String> {
        let queues = self.queues.lock().unwrap();
        queues[queue]
            .parked
            .iter()
            .map(|(l, _)| l.id.clone())
            .collect()
    }

    /// What went back to `queue`: (letter id, redrive id), in order.
    pub fn sent_back(&self, queue: &str) -> Vec<(String, String)> {
        self.queues.lock().unwrap()[queue].sent_back.clone()
    }

    /// Every hold ends: held letters are visible again.
    pub fn end_holds(&self) {
        for queue in self.queues.lock().unwrap().values_mut() {
            queue.parked.iter_mut().for_each(|(_, held)| *held = false);
        }
    }

    /// After `sends` more successful sends back, every send fails.
    pub fn fail_sends_after(&self, sends: usize) {
        *self.sends_left.lock().unwrap() = Some(sends);
    }
}

#[async_trait]
impl DeadLetters for MemoryDeadLetters {
    fn queues(&self) -> Vec<String> {
        self.queues.lock().unwrap().keys().cloned().collect()
    }

    async fn depth(&self, queue: &str) -> Result<Depth, InfraError> {
        let queues = self.queues.lock().unwrap();
        let parked = &queues[queue].parked;
        let in_flight = parked.iter().filter(|(_, held)| *held).count() as u64;
        Ok(Depth {
            visible: parked.len() as u64 - in_flight,
            in_flight,
        })
    }

    async fn receive(&self, queue: &str, _hold: Duration) -> Result<Vec<Letter>, InfraError> {
        let mut queues = self.queues.lock().unwrap();
        let parked = &mut queues.get_mut(queue).expect("known queue").parked;
        Ok(parked
            .iter_mut()
            .filter(|(_, held)| !*held)
            .take(10)
            .map(|(letter, held)| {
                *held = true;
                letter.clone()
            })
            .collect())
    }

    async fn release(&self, queue: &str, letters: &[Letter]) -> Result<(), InfraError> {
        let mut queues = self.queues.lock().unwrap();
        for (letter, held) in &mut queues.get_mut(queue).expect("known queue").parked {
            if letters.iter().any(|l| l.id == letter.id) {
                *held = false;
            }
        }
        Ok(())
    }

    async fn send_back(
        &self,
        queue: &str,
        letter: &Letter,
        redrive: &str,
    ) -> Result<(), InfraError> {
        if let Some(left) = self.sends_left.lock().unwrap().as_mut() {
            if *left == 0 {
                return Err(InfraError::new("send back", "the queue is unreachable"));
            }
            *left -= 1;
        }
        let mut queues = self.queues.lock().unwrap();
        let sent_back = &mut queues.get_mut(queue).expect("known queue").sent_back;
        sent_back.push((letter.id.clone(), redrive.to_owned()));
        Ok(())
    }

    async fn delete(&self, queue: &str, letter: &Letter) -> Result<(), InfraError> {
        let mut queues = self.queues.lock().unwrap();
        let parked = &mut queues.get_mut(queue).expect("known queue").parked;
        parked.retain(|(l, _)| l.id != letter.id);
        Ok(())
    }
}
