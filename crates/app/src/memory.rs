//! In-memory adapters behind the same ports as the AWS ones: for tests of the service, and for
//! anyone who wants to run Baton's rules without an AWS account.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use baton_domain::{Event, Task, TaskId, Tenant, Timer};
use chrono::{DateTime, Duration, Utc};

use crate::ports::{
    Clock, Commit, Created, EventBus, InfraError, Page, TaskQuery, TaskStore, TimerQueue, Wake,
    WakeKind,
};

type Key = (Tenant, TaskId);

/// A task store in a map.
#[derive(Default)]
pub struct MemoryStore {
    tasks: Mutex<BTreeMap<Key, (Task, Option<Wake>)>>,
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
        if let Some(rival) = self.rival.lock().unwrap().take() {
            tasks.insert(key.clone(), (rival, None));
        }
        let Some((stored, _)) = tasks.get(&key) else {
            return Ok(Commit::Conflict(None));
        };
        if (stored.status, stored.version) != (current.status, current.version) {
            return Ok(Commit::Conflict(Some(Box::new(stored.clone()))));
        }
        tasks.insert(key, (next.clone(), wake));
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
            .filter(|task| query.status.is_none_or(|status| task.status == status))
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
