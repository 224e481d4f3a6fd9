//! The inbound events upstream systems and workers put on the bus, as they arrive in an SQS
//! message body (the EventBridge envelope), parsed into domain commands.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use baton_domain::{
    Command, EventKind, Lease, Outcome, ProjectId, Provenance, SubmitRequest, Taint, TaskId,
    Tenant, Timer, check_reason,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A message that can never be processed: it is failed, so after `maxReceiveCount` deliveries it
/// is parked in the queue's DLQ for inspection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct Malformed {
    /// A stable code: `EVENT_TOO_LARGE`, `MALFORMED_ENVELOPE`, `UNEXPECTED_DETAIL_TYPE`,
    /// `INVALID_DETAIL`, `INVALID_SUBMISSION`, `FORBIDDEN_SOURCE`, `MALFORMED_TIMER`.
    pub code: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl Malformed {
    /// A malformed message with `code` and `reason`.
    pub fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// The parts of an EventBridge envelope Baton uses.
#[derive(Debug, Clone)]
pub struct Envelope<T> {
    /// The event's id, unique per `PutEvents` entry.
    pub id: String,
    /// When it was put.
    pub time: chrono::DateTime<chrono::Utc>,
    /// Who put it: what a producer's IAM policy pins with the `events:source` condition.
    pub source: String,
    /// Its typed detail.
    pub detail: T,
}

/// The sources of the events Baton's own functions put on the bus: its cascading cancels and
/// rollbacks speak for every tenant. No producer's policy may allow them.
pub const BATON_SOURCES: [&str; 2] = [crate::eventbridge::SOURCE, "baton.http"];

impl<T> Envelope<T> {
    /// Checks that the event's source may speak for `tenant`: the tenant's own sources are
    /// `{tenant}` and `{tenant}.{anything}` (a tenant name has no dots), and Baton's own speak
    /// for all. EventBridge lets a producer put any source its IAM policy allows, so an
    /// operator grants a producer its tenants' sources and nothing else (see the README's trust
    /// model); an event from a source that may not speak for the tenant it names is refused.
    pub fn speaks_for(&self, tenant: &str) -> Result<(), Malformed> {
        let own = self
            .source
            .strip_prefix(tenant)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
        match own || BATON_SOURCES.contains(&self.source.as_str()) {
            true => Ok(()),
            false => Err(Malformed::new(
                "FORBIDDEN_SOURCE",
                format!(
                    "source `{}` may not speak for tenant `{tenant}`: use `{tenant}` or \
                     `{tenant}.<name>`",
                    self.source
                ),
            )),
        }
    }
}

/// The largest event EventBridge delivers, in bytes. An SQS message (up to 1 MiB) can carry a
/// larger body only if something other than Baton's rules sent it.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// The body of an SQS message, refused unparsed when no EventBridge event could be that large.
pub fn body(message: &aws_lambda_events::sqs::SqsMessage) -> Result<&str, Malformed> {
    let body = message
        .body
        .as_deref()
        .ok_or_else(|| Malformed::new("MALFORMED_ENVELOPE", "the message has no body"))?;
    if body.len() > MAX_EVENT_BYTES {
        return Err(Malformed::new(
            "EVENT_TOO_LARGE",
            format!(
                "the body is {} bytes; events are at most {MAX_EVENT_BYTES}",
                body.len()
            ),
        ));
    }
    Ok(body)
}

/// Parses an SQS body holding an EventBridge event of `detail_type`.
pub fn envelope<T: DeserializeOwned>(
    body: &str,
    detail_type: &str,
) -> Result<Envelope<T>, Malformed> {
    envelope_of(body, &[detail_type])
}

/// Parses an SQS body holding an EventBridge event of one of `detail_types`.
fn envelope_of<T: DeserializeOwned>(
    body: &str,
    detail_types: &[&str],
) -> Result<Envelope<T>, Malformed> {
    let event: EventBridgeEvent<serde_json::Value> = serde_json::from_str(body).map_err(|e| {
        Malformed::new(
            "MALFORMED_ENVELOPE",
            format!("not an EventBridge event: {e}"),
        )
    })?;
    let detail_type = event.detail_type.as_str();
    if !detail_types.contains(&detail_type) {
        return Err(Malformed::new(
            "UNEXPECTED_DETAIL_TYPE",
            format!("expected {}, got {detail_type}", detail_types.join(" or ")),
        ));
    }
    let (Some(id), Some(time)) = (event.id, event.time) else {
        return Err(Malformed::new(
            "MALFORMED_ENVELOPE",
            "the event has no id or time",
        ));
    };
    let source = event.source;
    let detail = serde_json::from_value(event.detail)
        .map_err(|e| Malformed::new("INVALID_DETAIL", format!("{detail_type}: {e}")))?;
    Ok(Envelope {
        id,
        time,
        source,
        detail,
    })
}

/// Any of Baton's lifecycle events: which task moved.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusChange {
    /// The task's owner.
    pub tenant: Tenant,
    /// The task.
    pub task_id: TaskId,
    /// Its project.
    pub project: ProjectId,
    /// Its version after the transition.
    pub version: u64,
}

/// `TaskReady`, as a worker reads it: which attempt of which task to run, with what input, by
/// when.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ready {
    /// The task's owner.
    pub tenant: Tenant,
    /// The task.
    pub task_id: TaskId,
    /// The attempt to run; the result names it.
    pub attempt: u32,
    /// The task's input.
    #[serde(default)]
    pub input: serde_json::Value,
    /// When the attempt times out.
    pub deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// The attempt's lease: the result must carry it back.
    #[serde(default)]
    pub lease: Option<Lease>,
    /// The task's correlation id.
    pub correlation_id: String,
}

/// Parses an SQS body holding one of Baton's lifecycle events (any outbound detail-type).
pub fn status_change(body: &str) -> Result<Envelope<StatusChange>, Malformed> {
    let kinds = EventKind::ALL.map(EventKind::detail_type);
    envelope_of(body, &kinds)
}

/// `SubmitTask`: the detail is a submission.
pub type SubmitTask = SubmitRequest;

/// `TaskResult`: a worker's outcome for one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// The task's owner.
    pub tenant: Tenant,
    /// The task.
    pub task_id: TaskId,
    /// The attempt the result is for, as given in `TaskReady`.
    pub attempt: u32,
    /// The attempt's lease, as given in `TaskReady`: without it the result moves nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// `status: succeeded` with `output`, or `status: failed` with `error {code, message}`.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// How the result was produced; committed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// `CancelTask`: a request to stop a task (from a client, or from Baton when a dependency did not
/// succeed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// The task's owner.
    pub tenant: Tenant,
    /// The task.
    pub task_id: TaskId,
    /// Why; recorded on the task.
    #[serde(default)]
    pub reason: Option<String>,
    /// The correlation id of whatever asked (Baton sets its dependency's), for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// `RollbackRequested`: a request to undo a succeeded task and everything built on it. Baton
/// sends one to each dependent of a rolled-back task, naming the rollback's root, the dependency
/// it came through and the request it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The task's owner.
    pub tenant: Tenant,
    /// The task.
    pub task_id: TaskId,
    /// Why; recorded on every task it reaches.
    #[serde(default)]
    pub reason: Option<String>,
    /// The task the rollback was requested on (default: this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<TaskId>,
    /// The dependency it reached this task through (none on the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<TaskId>,
    /// The request's id (default: the event's id). A second request on a rolled-back task
    /// changes nothing; a redelivery of the same one repeats its effects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The correlation id of whatever asked (Baton sets its dependency's), for logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

impl RollbackRequest {
    /// The rollback command this request asks for; `event_id` names the request if it does not.
    /// A reason out of bounds is refused.
    pub fn command(self, event_id: &str) -> Result<Addressed, Malformed> {
        let taint = Taint {
            root: self.root.unwrap_or(self.task_id),
            via: self.via,
            request: self.request.unwrap_or_else(|| event_id.to_owned()),
        };
        let reason = self
            .reason
            .unwrap_or_else(|| "rollback requested".to_owned());
        check_reason(&reason).map_err(|e| invalid("RollbackRequested", &format!("reason {e}")))?;
        Ok((
            self.tenant,
            self.task_id,
            Command::Rollback { reason, taint },
        ))
    }
}

/// A command addressed to one task.
pub type Addressed = (Tenant, TaskId, Command);

impl TaskResult {
    /// The completion this result reports; a result or provenance out of bounds is refused.
    pub fn command(self) -> Result<Addressed, Malformed> {
        self.outcome
            .check(self.provenance.as_ref())
            .map_err(|reason| invalid("TaskResult", &reason))?;
        Ok((
            self.tenant,
            self.task_id,
            Command::Complete {
                attempt: self.attempt,
                lease: self.lease,
                outcome: self.outcome,
                provenance: self.provenance,
            },
        ))
    }
}

impl TaskRequest {
    /// The cancel command this request asks for; a reason out of bounds is refused.
    pub fn cancel(self) -> Result<Addressed, Malformed> {
        let reason = self.reason.unwrap_or_else(|| "cancel requested".to_owned());
        check_reason(&reason).map_err(|e| invalid("CancelTask", &format!("reason {e}")))?;
        Ok((self.tenant, self.task_id, Command::Cancel { reason }))
    }
}

/// A detail of `detail_type` that parsed but is out of bounds.
fn invalid(detail_type: &str, reason: &str) -> Malformed {
    Malformed::new("INVALID_DETAIL", format!("{detail_type}: {reason}"))
}

/// Parses a due-queue message into the dispatch it asks for, which takes `lease` if it starts
/// the attempt.
pub fn timer(body: &str, lease: Lease) -> Result<Addressed, Malformed> {
    let timer: Timer = serde_json::from_str(body)
        .map_err(|e| Malformed::new("MALFORMED_TIMER", format!("not a timer: {e}")))?;
    Ok((
        timer.tenant,
        timer.task_id,
        Command::Dispatch {
            attempt: timer.attempt,
            lease,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wrap(detail_type: &str, detail: serde_json::Value) -> String {
        json!({
            "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": detail_type, "source": "acme.billing", "account": "000000000000",
            "time": "2026-03-01T12:00:00Z", "region": "us-east-1", "resources": [],
            "detail": detail
        })
        .to_string()
    }

    #[test]
    fn a_task_result_parses_into_a_complete_command() {
        let body = wrap(
            "TaskResult",
            json!({"tenant": "acme", "task_id": "019a0000-0000-7000-8000-000000000001",
                   "attempt": 2, "status": "failed", "error": {"code": "E", "message": "m"}}),
        );
        let (tenant, _, command) = envelope::<TaskResult>(&body, "TaskResult")
            .unwrap()
            .detail
            .command()
            .unwrap();
        assert_eq!(tenant.as_str(), "acme");
        assert!(matches!(
            command,
            Command::Complete {
                attempt: 2,
                lease: None,
                outcome: Outcome::Failed { .. },
                provenance: None,
            }
        ));
    }

    #[test]
    fn a_result_carries_its_provenance_and_bad_provenance_is_refused() {
        let result = |provenance: serde_json::Value| {
            let body = wrap(
                "TaskResult",
                json!({"tenant": "acme", "task_id": "019a0000-0000-7000-8000-000000000001",
                       "attempt": 1, "status": "succeeded", "output": 1, "provenance": provenance}),
            );
            envelope::<TaskResult>(&body, "TaskResult").and_then(|result| result.detail.command())
        };
        let (_, _, command) = result(json!({"model": "m-1", "tokens_in": 3})).unwrap();
        let Command::Complete { provenance, .. } = command else {
            panic!("{command:?}");
        };
        assert_eq!(provenance.unwrap().model.as_deref(), Some("m-1"));
        let err = result(json!({"model": ""})).unwrap_err();
        assert_eq!(err.code, "INVALID_DETAIL");
        assert!(err.reason.contains("provenance.model"), "{err}");
        assert_eq!(
            result(json!({"colour": 1})).unwrap_err().code,
            "INVALID_DETAIL"
        );
    }

    #[test]
    fn a_rollback_request_is_named_by_its_event_unless_it_names_itself() {
        let task = "019a0000-0000-7000-8000-000000000002";
        let body = wrap(
            "RollbackRequested",
            json!({"tenant": "acme", "task_id": task}),
        );
        let request = envelope::<RollbackRequest>(&body, "RollbackRequested").unwrap();
        let (_, id, command) = request.detail.command("event-1").unwrap();
        let Command::Rollback { taint, .. } = command else {
            panic!("{command:?}");
        };
        assert_eq!(
            (taint.root, taint.via, taint.request.as_str()),
            (id, None, "event-1")
        );
    }

    #[test]
    fn a_source_speaks_for_its_own_tenant_and_baton_for_all() {
        let from = |source: &str| Envelope {
            id: "e".into(),
            time: chrono::Utc::now(),
            source: source.into(),
            detail: (),
        };
        for (source, tenant) in [
            ("acme", "acme"),
            ("acme.billing", "acme"),
            ("acme.a.b", "acme"),
            ("baton", "acme"),
            ("baton.http", "globex"),
        ] {
            assert_eq!(
                from(source).speaks_for(tenant),
                Ok(()),
                "{source} for {tenant}"
            );
        }
        for (source, tenant) in [
            ("globex", "acme"),
            ("acme-evil", "acme"),
            ("acmeco.app", "acme"),
            ("evil.acme", "acme"),
            ("baton.tests", "acme"),
            ("", "acme"),
        ] {
            let refused = from(source).speaks_for(tenant).unwrap_err();
            assert_eq!(refused.code, "FORBIDDEN_SOURCE", "{source} for {tenant}");
        }
    }

    #[test]
    fn a_result_carries_its_lease_into_the_command() {
        let lease = "0123456789abcdef0123456789abcdef";
        let body = wrap(
            "TaskResult",
            json!({"tenant": "acme", "task_id": "019a0000-0000-7000-8000-000000000001",
                   "attempt": 1, "lease": lease, "status": "succeeded", "output": 1}),
        );
        let (_, _, command) = envelope::<TaskResult>(&body, "TaskResult")
            .unwrap()
            .detail
            .command()
            .unwrap();
        let Command::Complete { lease: given, .. } = command else {
            panic!("{command:?}");
        };
        assert_eq!(given, Some(Lease::parse(lease).unwrap()));
        let bad = wrap(
            "TaskResult",
            json!({"tenant": "acme", "task_id": "019a0000-0000-7000-8000-000000000001",
                   "attempt": 1, "lease": "x", "status": "succeeded"}),
        );
        let err = envelope::<TaskResult>(&bad, "TaskResult").unwrap_err();
        assert_eq!(err.code, "INVALID_DETAIL");
    }

    #[test]
    fn malformed_messages_say_what_is_wrong_with_a_code() {
        assert_eq!(
            envelope::<TaskResult>("{", "TaskResult").unwrap_err().code,
            "MALFORMED_ENVELOPE"
        );
        let wrong_type = wrap("CancelTask", json!({}));
        assert_eq!(
            envelope::<TaskResult>(&wrong_type, "TaskResult")
                .unwrap_err()
                .code,
            "UNEXPECTED_DETAIL_TYPE"
        );
        let bad_id = wrap("CancelTask", json!({"tenant": "acme", "task_id": "42"}));
        let err = envelope::<TaskRequest>(&bad_id, "CancelTask").unwrap_err();
        assert_eq!(err.code, "INVALID_DETAIL");
        assert!(err.reason.contains("not a UUID"), "{err}");
    }
}
