//! A batch's commands hold their events and timers in an [`Outbox`] until the batch is done;
//! the flush names every message whose events or timers did not all go out, and only those.

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
