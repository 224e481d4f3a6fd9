//! In-memory adapters behind the same ports as the AWS ones: for tests of the service, and for
//! anyone who wants to run Baton's rules without an AWS account.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use baton_domain::{Event, ProjectId, Status, Task, TaskId, Tenant, Timer};
use chrono::{DateTime, Duration, Utc};

use crate::ports::{
    Caller, Clock, Commit, Connection, Connections, Created, Delivery, EventBus, InfraError, Page,
    ProjectStatus, Push, Subscription, TaskQuery, TaskStore, TimerQueue, Wake, WakeKind, Watch,
};

type Key = (Tenant, TaskId);

/// A task store in a map.
#[derive(Default)]
pub struct MemoryStore {
    tasks: Mutex<BTreeMap<Key, (Task, Option<Wake>)>>,
    counters: Mutex<BTreeMap<(Tenant, ProjectId, Status), u64>>,
    lose_commit_responses: Mutex<usize>,
    rival: Mutex<Option<Task>>,
}

impl MemoryStore {
    /// The next `n` commits are written but answer as a conflict with the written state, as
    /// DynamoDB does when the SDK retries a write whose response was lost.
    pub fn lose_commit_responses(&self, n: usize) {
        *self.lose_commit_responses.lock().unwrap() = n;
    }

    /// Just before the next commit, another writer stores `task`, so that commit loses the race.
    pub fn race_next_commit(&self, task: Task) {
        *self.rival.lock().unwrap() = Some(task);
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

    /// The wake stored with a task.
    pub fn wake(&self, tenant: &Tenant, id: &TaskId) -> Option<Wake> {
        self.tasks
            .lock()
            .unwrap()
            .get(&(tenant.clone(), *id))
            .and_then(|(_, wake)| *wake)
    }
}

#[async_trait]
impl TaskStore for MemoryStore {
    async fn create(&self, task: &Task, wake: Option<Wake>) -> Result<Created, InfraError> {
        let mut tasks = self.tasks.lock().unwrap();
        let key = (task.tenant.clone(), task.id);
        if let Some((existing, _)) = tasks.get(&key) {
            return Ok(Created::Exists(Box::new(existing.clone())));
        }
        tasks.insert(key, (task.clone(), wake));
        self.count(task, None, task.status);
        Ok(Created::Created)
    }

    async fn get(&self, tenant: &Tenant, id: &TaskId) -> Result<Option<Task>, InfraError> {
        let tasks = self.tasks.lock().unwrap();
        Ok(tasks
            .get(&(tenant.clone(), *id))
            .map(|(task, _)| task.clone()))
    }

    async fn commit(
        &self,
        current: &Task,
        next: &Task,
        wake: Option<Wake>,
    ) -> Result<Commit, InfraError> {
        let mut tasks = self.tasks.lock().unwrap();
        let key = (current.tenant.clone(), current.id);
        if let Some(rival) = self.rival.lock().unwrap().take()
            && let Some((replaced, _)) = tasks.insert(key.clone(), (rival.clone(), None))
        {
            self.count(&rival, Some(replaced.status), rival.status);
        }
        let Some((stored, _)) = tasks.get(&key) else {
            return Ok(Commit::Conflict(None));
        };
        if (stored.status, stored.version) != (current.status, current.version) {
            return Ok(Commit::Conflict(Some(Box::new(stored.clone()))));
        }
        tasks.insert(key, (next.clone(), wake));
        self.count(next, Some(current.status), next.status);
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

    async fn project_status(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<ProjectStatus, InfraError> {
        let counters = self.counters.lock().unwrap();
        Ok(ProjectStatus::from_counts(|status| {
            let key = (tenant.clone(), project.clone(), status);
            counters.get(&key).copied().unwrap_or(0)
        }))
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

/// A bus that keeps what it is given.
#[derive(Default)]
pub struct MemoryBus {
    events: Mutex<Vec<Event>>,
}

impl MemoryBus {
    /// Everything published so far, oldest first.
    pub fn published(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, events: &[Event]) -> Result<(), InfraError> {
        self.events.lock().unwrap().extend_from_slice(events);
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
