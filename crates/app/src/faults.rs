//! A fault layer over any adapter behind the store, bus and timer ports, for tests that show
//! the service survives what at-least-once infrastructure does: calls that fail, writes whose
//! response is lost, requests the SDK sends twice. Which call fails, and how, is decided by a
//! [`Faults`] the test supplies (seeded, so a failing run can be replayed).

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use baton_domain::{
    Cascade, Change, ControlEvent, Controls, Event, Idempotency, KillSwitch, Parked, ProjectId,
    Scope, Task, TaskId, Tenant, Timer,
};
use chrono::{DateTime, Duration, Utc};

use crate::ports::{
    Commit, Created, Drain, EventBus, InfraError, KillSwitches, ModelQuery, Page, ProjectControls,
    ProjectStatus, ReadySet, Reservation, TaskQuery, TaskStore, TimerQueue, Wake, WakeKind,
};

/// What befalls one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// It fails before doing anything, as a throttled request or a 5xx does.
    Fail,
    /// It does its work, then fails: the response was lost and the SDK gave up.
    LoseResponse,
    /// It does its work, the response is lost and the SDK sends the request again: a conditional
    /// write then meets its own condition, anything else is done twice. Writes only.
    Retry,
}

/// Decides the fault, if any, for each call through a [`Faulty`] adapter.
pub trait Faults: Send + Sync {
    /// The fault for this call of `operation` (a write when `write`), or `None`.
    fn strike(&self, operation: &'static str, write: bool) -> Option<Fault>;
}

/// An adapter (`T`: a [`TaskStore`], [`EventBus`] or [`TimerQueue`]) with faults injected into
/// its calls.
pub struct Faulty<T: ?Sized> {
    inner: Arc<T>,
    faults: Arc<dyn Faults>,
}

impl<T: ?Sized> Faulty<T> {
    /// `inner`, its calls struck by `faults`.
    pub fn new(inner: Arc<T>, faults: Arc<dyn Faults>) -> Self {
        Self { inner, faults }
    }

    /// A read: any fault fails it.
    async fn read<R>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<R, InfraError>>,
    ) -> Result<R, InfraError> {
        match self.faults.strike(operation, false) {
            Some(_) => Err(injected(operation, "failed before it was read")),
            None => call.await,
        }
    }

    /// A conditional write: a retry meets the first request's write, and answers as `retried`
    /// makes of the first answer.
    async fn conditional<R>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<R, InfraError>>,
        retried: impl FnOnce(R) -> R,
    ) -> Result<R, InfraError> {
        match self.faults.strike(operation, true) {
            None => call.await,
            Some(Fault::Fail) => Err(injected(operation, "failed before it was applied")),
            Some(Fault::LoseResponse) => {
                call.await?;
                Err(injected(operation, "applied, but its response was lost"))
            }
            Some(Fault::Retry) => call.await.map(retried),
        }
    }

    /// A write with no condition: a retry does it again.
    async fn repeatable<R, F: Future<Output = Result<R, InfraError>>>(
        &self,
        operation: &'static str,
        call: impl Fn() -> F,
    ) -> Result<R, InfraError> {
        match self.faults.strike(operation, true) {
            None => call().await,
            Some(Fault::Fail) => Err(injected(operation, "failed before it was applied")),
            Some(Fault::LoseResponse) => {
                call().await?;
                Err(injected(operation, "applied, but its response was lost"))
            }
            Some(Fault::Retry) => {
                call().await?;
                call().await
            }
        }
    }
}

fn injected(operation: &'static str, what: &str) -> InfraError {
    InfraError::new(operation, format!("injected fault: {what}"))
}

/// A conditional write that answers whether it applied: the retry finds its condition gone.
fn not_again(_: bool) -> bool {
    false
}

#[async_trait]
impl<T: TaskStore + ?Sized> TaskStore for Faulty<T> {
    async fn create(
        &self,
        task: &Task,
        wake: Option<Wake>,
        idempotency: Option<&Idempotency>,
        dependencies: &[Task],
        slots: Option<&Controls>,
    ) -> Result<Created, InfraError> {
        let call = self
            .inner
            .create(task, wake, idempotency, dependencies, slots);
        self.conditional("create", call, |created| match created {
            Created::Created => Created::Exists(Box::new(task.clone())),
            other => other,
        })
        .await
    }

    async fn get(&self, tenant: &Tenant, id: &TaskId) -> Result<Option<Task>, InfraError> {
        self.read("get", self.inner.get(tenant, id)).await
    }

    async fn get_many(&self, tenant: &Tenant, ids: &[TaskId]) -> Result<Vec<Task>, InfraError> {
        self.read("get_many", self.inner.get_many(tenant, ids))
            .await
    }

    async fn produced_by(&self, query: &ModelQuery) -> Result<Page, InfraError> {
        self.read("produced_by", self.inner.produced_by(query))
            .await
    }

    async fn commit(
        &self,
        current: &Task,
        next: &Task,
        wake: Option<Wake>,
        slots: Option<&Controls>,
    ) -> Result<Commit, InfraError> {
        let call = self.inner.commit(current, next, wake, slots);
        self.conditional("commit", call, |commit| match commit {
            Commit::Committed => Commit::Conflict(Some(Box::new(next.clone()))),
            other => other,
        })
        .await
    }

    async fn list(&self, query: &TaskQuery) -> Result<Page, InfraError> {
        self.read("list", self.inner.list(query)).await
    }

    async fn wakes(
        &self,
        kind: WakeKind,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Tenant, TaskId)>, InfraError> {
        self.read("wakes", self.inner.wakes(kind, until, limit))
            .await
    }

    async fn set_wake(&self, task: &Task, wake: Option<Wake>) -> Result<bool, InfraError> {
        let call = self.inner.set_wake(task, wake);
        self.conditional("set_wake", call, not_again).await
    }
}

#[async_trait]
impl<T: ReadySet + ?Sized> ReadySet for Faulty<T> {
    async fn park(&self, task: &Task, parked: Parked) -> Result<bool, InfraError> {
        let call = self.inner.park(task, parked);
        self.conditional("park", call, not_again).await
    }

    async fn reserve(
        &self,
        project: &ProjectId,
        timer: &Timer,
        lane: u16,
        slots: &Controls,
        wake: Wake,
    ) -> Result<Reservation, InfraError> {
        let call = self.inner.reserve(project, timer, lane, slots, wake);
        // A retry meets the task out of the ready set, taken by the first request.
        let retried = |first| match first {
            Reservation::Reserved => Reservation::NotWaiting,
            other => other,
        };
        self.conditional("reserve", call, retried).await
    }

    async fn ready(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        limit: usize,
    ) -> Result<Vec<Timer>, InfraError> {
        self.read("ready", self.inner.ready(tenant, project, limit))
            .await
    }

    async fn drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<Option<Drain>, InfraError> {
        self.read("drain", self.inner.drain(tenant, project)).await
    }

    async fn queued(&self, tenant: &Tenant, project: &ProjectId) -> Result<u64, InfraError> {
        self.read("queued", self.inner.queued(tenant, project))
            .await
    }

    async fn drains(
        &self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Tenant, ProjectId)>, InfraError> {
        self.read("drains", self.inner.drains(until, limit)).await
    }

    async fn reschedule_drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        at: DateTime<Utc>,
    ) -> Result<(), InfraError> {
        self.repeatable("reschedule_drain", || {
            self.inner.reschedule_drain(tenant, project, at)
        })
        .await
    }

    async fn end_drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        last_park: DateTime<Utc>,
    ) -> Result<bool, InfraError> {
        let call = self.inner.end_drain(tenant, project, last_park);
        self.conditional("end_drain", call, not_again).await
    }
}

#[async_trait]
impl<T: ProjectControls + ?Sized> ProjectControls for Faulty<T> {
    async fn project_status(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<ProjectStatus, InfraError> {
        self.read("project_status", self.inner.project_status(tenant, project))
            .await
    }

    async fn controls(&self, tenant: &Tenant, project: &ProjectId) -> Result<Controls, InfraError> {
        self.read("controls", self.inner.controls(tenant, project))
            .await
    }

    async fn set_limit(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        limit: u32,
    ) -> Result<(), InfraError> {
        self.repeatable("set_limit", || self.inner.set_limit(tenant, project, limit))
            .await
    }

    async fn set_paused(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        paused: Option<&Change>,
    ) -> Result<(), InfraError> {
        self.repeatable("set_paused", || {
            self.inner.set_paused(tenant, project, paused)
        })
        .await
    }
}

#[async_trait]
impl<T: KillSwitches + ?Sized> KillSwitches for Faulty<T> {
    async fn kill_switch(&self, scope: &Scope) -> Result<Option<KillSwitch>, InfraError> {
        self.read("kill_switch", self.inner.kill_switch(scope))
            .await
    }

    async fn set_kill_switch(&self, scope: &Scope, switch: &KillSwitch) -> Result<(), InfraError> {
        self.repeatable("set_kill_switch", || {
            self.inner.set_kill_switch(scope, switch)
        })
        .await
    }

    async fn kill_switch_history(
        &self,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<KillSwitch>, InfraError> {
        self.read(
            "kill_switch_history",
            self.inner.kill_switch_history(scope, limit),
        )
        .await
    }
}

#[async_trait]
impl<T: EventBus + ?Sized> EventBus for Faulty<T> {
    async fn publish(&self, events: &[Event]) -> Result<(), InfraError> {
        self.repeatable("publish", || self.inner.publish(events))
            .await
    }

    async fn announce(&self, event: &ControlEvent) -> Result<(), InfraError> {
        self.repeatable("announce", || self.inner.announce(event))
            .await
    }

    async fn cascade(&self, cascade: &Cascade) -> Result<(), InfraError> {
        self.repeatable("cascade", || self.inner.cascade(cascade))
            .await
    }
}

#[async_trait]
impl<T: TimerQueue + ?Sized> TimerQueue for Faulty<T> {
    async fn arm(&self, timer: &Timer, delay: Duration) -> Result<(), InfraError> {
        self.repeatable("arm", || self.inner.arm(timer, delay))
            .await
    }
}
