use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use baton_app::{EventBus, InfraError};
use baton_domain::{Cascade, ControlEvent, Event, EventKind, Step};

use crate::inbound::{RollbackRequest, TaskRequest, TaskResult};

/// The `source` of every event Baton publishes.
pub const SOURCE: &str = "baton";
/// PutEvents takes at most this many entries.
const MAX_ENTRIES: usize = 10;

/// Which lifecycle events go on the bus. Baton itself needs none of them (its notifier reads the
/// table's stream); workers need `TaskReady`, which is always published. Commands Baton sends
/// itself (a cascade's `CancelTask`, `RollbackRequested`) and control events always go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PublishedEvents {
    /// Every lifecycle event.
    #[default]
    All,
    /// `TaskReady` and these.
    Only(Vec<EventKind>),
}

impl PublishedEvents {
    /// `all` (or empty), or a comma-separated list of detail-types (`TaskReady`,
    /// `TaskSucceeded,TaskFailed`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() || text == "all" {
            return Ok(Self::All);
        }
        let mut kinds = vec![EventKind::Ready];
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = EventKind::from_detail_type(name).ok_or_else(|| {
                format!("{name:?} is not a lifecycle event (TaskSubmitted, TaskReady, ...)")
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(Self::Only(kinds))
    }

    fn includes(&self, kind: EventKind) -> bool {
        match self {
            Self::All => true,
            Self::Only(kinds) => kinds.contains(&kind),
        }
    }
}

/// Publishes events on Baton's EventBridge bus.
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: Client,
    bus: String,
    published: PublishedEvents,
}

impl EventBridgeBus {
    /// A bus adapter for the bus named `bus`, publishing every lifecycle event.
    pub fn new(client: Client, bus: &str) -> Self {
        Self {
            client,
            bus: bus.to_owned(),
            published: PublishedEvents::All,
        }
    }

    /// The same adapter publishing only the lifecycle events `published` names.
    pub fn publishing(self, published: PublishedEvents) -> Self {
        Self { published, ..self }
    }
}

impl EventBridgeBus {
    /// Puts a worker's `TaskResult` on the bus from `source`, as any worker does.
    pub async fn report(&self, source: &str, result: &TaskResult) -> Result<(), InfraError> {
        let resource = format!("baton:task:{}", result.task_id);
        let mut entry = self.entry("TaskResult", result, resource)?;
        entry.source = Some(source.to_owned());
        self.put(vec![entry]).await
    }

    fn entry(
        &self,
        detail_type: &str,
        detail: &impl serde::Serialize,
        resource: String,
    ) -> Result<PutEventsRequestEntry, InfraError> {
        let detail =
            serde_json::to_string(detail).map_err(|e| InfraError::new("encode event", e))?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(detail_type)
            .detail(detail)
            .resources(resource)
            .build())
    }

    async fn put(&self, entries: Vec<PutEventsRequestEntry>) -> Result<(), InfraError> {
        for chunk in entries.chunks(MAX_ENTRIES) {
            let output = self
                .client
                .put_events()
                .set_entries(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| InfraError::new("EventBridge PutEvents", e))?;
            if output.failed_entry_count > 0 {
                let reasons: Vec<String> = output
                    .entries()
                    .iter()
                    .filter_map(|entry| entry.error_message().map(str::to_owned))
                    .collect();
                return Err(InfraError::new(
                    "EventBridge PutEvents",
                    format!(
                        "{} entries failed: {}",
                        output.failed_entry_count,
                        reasons.join("; ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn publish(&self, events: &[Event]) -> Result<(), InfraError> {
        let entries = events
            .iter()
            .filter(|event| self.published.includes(event.kind))
            .map(|event| {
                let resource = format!("baton:task:{}", event.task_id);
                self.entry(event.kind.detail_type(), event, resource)
            })
            .collect::<Result<_, _>>()?;
        self.put(entries).await
    }

    async fn announce(&self, event: &ControlEvent) -> Result<(), InfraError> {
        let entry = self.entry(event.detail_type(), event, event.resource())?;
        self.put(vec![entry]).await
    }

    async fn cascade(&self, cascade: &Cascade) -> Result<(), InfraError> {
        let entries = cascade
            .dependents
            .iter()
            .map(|&task_id| {
                let resource = format!("baton:task:{task_id}");
                let tenant = cascade.tenant.clone();
                match &cascade.step {
                    Step::Cancel { reason } => {
                        let request = TaskRequest {
                            tenant,
                            task_id,
                            reason: Some(reason.clone()),
                            correlation_id: Some(cascade.correlation_id.clone()),
                        };
                        self.entry("CancelTask", &request, resource)
                    }
                    Step::Rollback { reason, taint } => {
                        let request = RollbackRequest {
                            tenant,
                            task_id,
                            reason: Some(reason.clone()),
                            root: Some(taint.root),
                            via: taint.via,
                            request: Some(taint.request.clone()),
                            correlation_id: Some(cascade.correlation_id.clone()),
                        };
                        self.entry("RollbackRequested", &request, resource)
                    }
                    Step::Release => Err(InfraError::new(
                        "cascade",
                        "a release is run where the dependency succeeded, not sent",
                    )),
                }
            })
            .collect::<Result<_, _>>()?;
        self.put(entries).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_events_are_all_or_a_list_that_always_holds_task_ready() {
        assert_eq!(PublishedEvents::parse(""), Ok(PublishedEvents::All));
        assert_eq!(PublishedEvents::parse("all"), Ok(PublishedEvents::All));
        let outcomes = PublishedEvents::parse("TaskSucceeded, TaskFailed").unwrap();
        assert_eq!(
            outcomes,
            PublishedEvents::Only(vec![
                EventKind::Ready,
                EventKind::Succeeded,
                EventKind::Failed
            ])
        );
        assert!(outcomes.includes(EventKind::Ready) && !outcomes.includes(EventKind::Submitted));
        let refused = PublishedEvents::parse("TaskReady,TaskDone").unwrap_err();
        assert!(refused.contains("TaskDone"), "{refused}");
    }
}
