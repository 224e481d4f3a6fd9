//! A batch's commands hold their events, timers and admissions in an [`Outbox`] until the batch
//! is done; the flush names every message whose events or timers did not all go out, and only
//! those.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use baton_app::memory::{ManualClock, MemoryBus, MemoryStore, MemoryTimers};
use baton_app::{Baton, EventBus, Gates, InfraError, Outbox, Start};
use baton_domain::{Cascade, ControlEvent, Event, EventKind, TaskId};
use common::{request, t0};
use serde_json::json;

/// A bus that refuses every event of one project and keeps the rest.
struct Refusing {
    inner: MemoryBus,
    project: &'static str,
}

#[async_trait]
impl EventBus for Refusing {
    async fn publish(&self, events: &[Event]) -> Result<(), InfraError> {
        if events.iter().any(|e| e.project.as_str() == self.project) {
            return Err(InfraError::new("publish", "refused"));
        }
        self.inner.publish(events).await
    }

    async fn announce(&self, event: &ControlEvent) -> Result<(), InfraError> {
        self.inner.announce(event).await
    }

    async fn cascade(&self, cascade: &Cascade) -> Result<(), InfraError> {
        self.inner.cascade(cascade).await
    }
}

fn new_id() -> TaskId {
    TaskId::from_uuid(uuid::Uuid::now_v7())
}

#[tokio::test]
async fn events_and_timers_go_out_at_the_flush_and_a_message_whose_events_failed_is_named() {
    let bus = Arc::new(Refusing {
        inner: MemoryBus::default(),
        project: "refused",
    });
    let timers = Arc::new(MemoryTimers::default());
    let baton = Baton::new(
        Arc::new(MemoryStore::default()),
        bus.clone(),
        timers.clone(),
        Arc::new(ManualClock::new(t0())),
    );
    let outbox = Outbox::new(&baton);
    let switches = Gates::default();
    let submissions = [
        ("now", json!({})),
        ("later", json!({"delay_seconds": 30})),
        ("refused", json!({"project": "refused"})),
    ];
    for (message, extra) in &submissions {
        outbox
            .holding(&baton, message)
            .submit_in(&request(extra.clone()), new_id(), Start::Here(&switches))
            .await
            .unwrap();
    }
    assert!(bus.inner.published().is_empty(), "held until the flush");
    assert!(timers.armed().is_empty(), "held until the flush");

    let failed = outbox.flush().await;
    let named: Vec<&str> = failed.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(named, ["refused"], "only the message whose events failed");
    let kinds: Vec<EventKind> = bus.inner.published().iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::Submitted, EventKind::Ready, EventKind::Submitted],
        "the task due now dispatched, the later one announced"
    );
    assert_eq!(timers.armed().len(), 1, "the later task's timer");
    assert!(outbox.flush().await.is_empty(), "nothing is sent twice");
    assert_eq!(bus.inner.published().len(), 3);
}

#[tokio::test]
async fn slots_a_batch_gives_back_admit_once_the_batch_is_done() {
    let w = common::world();
    let tenant = baton_domain::Tenant::parse("acme").unwrap();
    let project = baton_domain::ProjectId::parse("p").unwrap();
    let ops = baton_app::Operator {
        by: "ops",
        reason: "test",
    };
    w.baton.set_limit(&tenant, &project, 2, &ops).await.unwrap();
    let gates = Gates::default();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let submitted = w
            .baton
            .submit_in(&request(json!({})), new_id(), Start::Here(&gates))
            .await
            .unwrap();
        tasks.push(submitted.task);
    }
    assert_eq!(w.baton.queued(&tenant, &project).await.unwrap(), 2);
    let armed = w.timers.armed().len();

    let outbox = Outbox::new(&w.baton);
    for (message, task) in ["r1", "r2"].iter().zip(&tasks[..2]) {
        let result = baton_domain::Command::Complete {
            lease: w.reload(task).await.lease,
            attempt: 1,
            outcome: baton_domain::Outcome::Succeeded { output: json!({}) },
            provenance: None,
        };
        let handled = outbox
            .holding(&w.baton, message)
            .execute(&tenant, &task.id, &result)
            .await
            .unwrap();
        assert!(
            matches!(handled, baton_app::Handled::Applied(_)),
            "{handled:?}"
        );
    }
    assert_eq!(
        w.baton.queued(&tenant, &project).await.unwrap(),
        2,
        "nothing admitted before the batch is done"
    );
    assert!(outbox.flush().await.is_empty());
    assert_eq!(w.baton.queued(&tenant, &project).await.unwrap(), 0);
    assert_eq!(
        w.timers.armed().len(),
        armed + 2,
        "both admitted tasks' timers"
    );
}
