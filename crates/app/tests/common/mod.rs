//! The in-memory world the service tests run in.

#![allow(dead_code)]

use std::sync::Arc;

use baton_app::memory::{ManualClock, MemoryBus, MemoryStore, MemoryTimers};
use baton_app::{Baton, Handled};
use baton_domain::{Command, EventKind, Lease, Outcome, SubmitRequest, Task, TaskError, TaskId};
use chrono::{DateTime, Utc};
use serde_json::json;

pub struct World {
    pub baton: Baton,
    pub store: Arc<MemoryStore>,
    pub bus: Arc<MemoryBus>,
    pub timers: Arc<MemoryTimers>,
    pub clock: Arc<ManualClock>,
}

/// The lease every dispatch in these tests draws, so a worker's answer carries it.
pub fn lease() -> Lease {
    Lease::from_random([7; 16])
}

pub fn t0() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

pub fn world() -> World {
    let store = Arc::new(MemoryStore::default());
    let bus = Arc::new(MemoryBus::default());
    let timers = Arc::new(MemoryTimers::default());
    let clock = Arc::new(ManualClock::new(t0()));
    let baton = Baton::new(store.clone(), bus.clone(), timers.clone(), clock.clone());
    World {
        baton,
        store,
        bus,
        timers,
        clock,
    }
}

/// A submission of tenant `acme`, project `p`, with `extra` fields over the defaults.
pub fn request(extra: serde_json::Value) -> SubmitRequest {
    let mut request = json!({"tenant": "acme", "project": "p", "name": "n", "tier": "gpu",
        "timeout_seconds": 60, "retry": {"max_attempts": 2, "backoff_seconds": 10}});
    request
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(request).unwrap()
}

impl World {
    pub async fn submit(&self, extra: serde_json::Value) -> Task {
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        self.baton.submit(&request(extra), id).await.unwrap().task
    }

    pub async fn run(&self, task: &Task, command: Command) -> Handled {
        self.baton
            .execute(&task.tenant, &task.id, &command)
            .await
            .unwrap()
    }

    pub async fn reload(&self, task: &Task) -> Task {
        self.baton
            .task(&task.tenant, &task.id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Delivers every cascade sent so far to its dependents, as the `cancel` and `rollback`
    /// functions do, until none is left; answers how many commands it delivered.
    pub async fn pump(&self) -> usize {
        let mut delivered = 0;
        loop {
            let cascades = self.bus.take_cascades();
            if cascades.is_empty() {
                return delivered;
            }
            for cascade in cascades {
                let command = cascade.step.command().expect("sent through the queue");
                for child in &cascade.dependents {
                    self.baton
                        .execute(&cascade.tenant, child, &command)
                        .await
                        .unwrap();
                    delivered += 1;
                }
            }
        }
    }

    pub fn kinds(&self) -> Vec<EventKind> {
        self.bus.published().iter().map(|e| e.kind).collect()
    }
}

pub fn success(attempt: u32) -> Command {
    Command::Complete {
        lease: Some(lease()),
        attempt,
        outcome: Outcome::Succeeded {
            output: json!({"ok": true}),
        },
        provenance: None,
    }
}

pub fn failure(attempt: u32) -> Command {
    Command::Complete {
        lease: Some(lease()),
        attempt,
        outcome: Outcome::Failed {
            error: TaskError {
                code: "E".into(),
                message: "m".into(),
                retryable: true,
            },
        },
        provenance: None,
    }
}
