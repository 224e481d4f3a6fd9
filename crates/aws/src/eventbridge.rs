use std::ops::Range;

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
/// And at most this many bytes of them (see [`entry_size`]).
const MAX_REQUEST_BYTES: usize = 256 * 1024;

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

    /// Puts `entries`, as few to a request as fit: all or an error.
    async fn put(&self, entries: Vec<PutEventsRequestEntry>) -> Result<(), InfraError> {
        let sizes: Vec<usize> = entries.iter().map(entry_size).collect();
        for range in requests(&sizes) {
            let failed = self.put_request(&entries[range]).await?;
            if let Some((_, reason)) = failed.into_iter().next() {
                return Err(reason);
            }
        }
        Ok(())
    }

    /// One `PutEvents` of `entries`: the entries it refused, by their place, each with why.
    async fn put_request(
        &self,
        entries: &[PutEventsRequestEntry],
    ) -> Result<Vec<(usize, InfraError)>, InfraError> {
        let output = self
            .client
            .put_events()
            .set_entries(Some(entries.to_vec()))
            .send()
            .await
            .map_err(|e| InfraError::new("EventBridge PutEvents", e))?;
        Ok(output
            .entries()
            .iter()
            .enumerate()
            .filter_map(|(place, entry)| {
                let code = entry.error_code()?;
                let reason = format!("{code}: {}", entry.error_message().unwrap_or_default());
                Some((place, InfraError::new("EventBridge PutEvents", reason)))
            })
            .collect())
    }

    fn lifecycle_entry(&self, event: &Event) -> Result<PutEventsRequestEntry, InfraError> {
        let resource = format!("baton:task:{}", event.task_id);
        self.entry(event.kind.detail_type(), event, resource)
    }
}

/// What an entry counts for against a request's size limit, by EventBridge's rule: the UTF-8
/// bytes of its source, detail-type, detail and resources (and 14 for a time, which Baton never
/// sets). The bus name is counted too, to stay on the safe side.
fn entry_size(entry: &PutEventsRequestEntry) -> usize {
    let text = |value: Option<&str>| value.map_or(0, str::len);
    text(entry.source())
        + text(entry.detail_type())
        + text(entry.detail())
        + text(entry.event_bus_name())
        + entry.resources().iter().map(String::len).sum::<usize>()
}

/// The requests entries of `sizes` go in, in order: at most [`MAX_ENTRIES`] and
/// [`MAX_REQUEST_BYTES`] each (an entry larger than that alone gets a request of its own, which
/// EventBridge refuses with why).
fn requests(sizes: &[usize]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start == MAX_ENTRIES || bytes + size > MAX_REQUEST_BYTES) {
            ranges.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        ranges.push(start..sizes.len());
    }
    ranges
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn publish(&self, events: &[Event]) -> Result<(), InfraError> {
        let entries = events
            .iter()
            .filter(|event| self.published.includes(event.kind))
            .map(|event| self.lifecycle_entry(event))
            .collect::<Result<_, _>>()?;
        self.put(entries).await
    }

    /// Every group's events in as few requests as fit; a group answers the first error met by
    /// a request or an entry of its own.
    async fn publish_groups(&self, groups: &[Vec<Event>]) -> Vec<Result<(), InfraError>> {
        let mut answers: Vec<Result<(), InfraError>> = groups.iter().map(|_| Ok(())).collect();
        let mut owners = Vec::new();
        let mut entries = Vec::new();
        for (group, events) in groups.iter().enumerate() {
            for event in events.iter().filter(|e| self.published.includes(e.kind)) {
                match self.lifecycle_entry(event) {
                    Ok(entry) => {
                        owners.push(group);
                        entries.push(entry);
                    }
                    Err(error) => answers[group] = Err(error),
                }
            }
        }
        let sizes: Vec<usize> = entries.iter().map(entry_size).collect();
        for range in requests(&sizes) {
            let refused = match self.put_request(&entries[range.clone()]).await {
                Ok(refused) => refused,
                Err(error) => range
                    .clone()
                    .map(|i| (i - range.start, error.shared()))
                    .collect(),
            };
            for (place, error) in refused {
                let answer = &mut answers[owners[range.start + place]];
                if answer.is_ok() {
                    *answer = Err(error);
                }
            }
        }
        answers
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
    fn requests_hold_at_most_ten_entries_and_256_kb() {
        let kb = 1024;
        assert_eq!(requests(&[]), Vec::<Range<usize>>::new());
        assert_eq!(requests(&[100; 25]), [0..10, 10..20, 20..25]);
        assert_eq!(
            requests(&[100 * kb, 100 * kb, 100 * kb, 10]),
            [0..2, 2..4],
            "a third 100 KB entry would pass 256 KB"
        );
        assert_eq!(
            requests(&[300 * kb, 10, 10]),
            [0..1, 1..3],
            "too large alone: its own request, which EventBridge refuses with why"
        );
        assert_eq!(requests(&[256 * kb, 1]), [0..1, 1..2]);
    }

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
