use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::graph::MAX_DEPENDENCIES;
use crate::ids::{ProjectId, TaskId, Tenant, Tier};
use crate::payload::check_payload;
use crate::task::{HistoryEntry, RetryPolicy, Status, Task};

/// Largest accepted `input`, in bytes, counted as JSON and as DynamoDB sizes it, whichever is
/// larger. Keeps a task, its output and its history well inside one DynamoDB item (400 KB) and a
/// `TaskReady` event inside EventBridge's 256 KB.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
/// How far ahead a task may be scheduled.
pub const MAX_SCHEDULE_AHEAD_DAYS: i64 = 365;
/// Default time an attempt may run.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 300;

/// A submission as a client or upstream system sends it, before validation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The owner (taken from the event envelope's detail or the caller's identity).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The project.
    #[serde(default)]
    pub project: Option<String>,
    /// A human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    /// The worker tier.
    #[serde(default)]
    pub tier: Option<String>,
    /// What the worker receives.
    #[serde(default)]
    pub input: Option<Value>,
    /// Higher goes first; -1000 to 1000, default 0.
    #[serde(default)]
    pub priority: Option<i64>,
    /// When to run (RFC 3339); default now. Not together with `delay_seconds`.
    #[serde(default)]
    pub due_at: Option<String>,
    /// Run this many seconds from now.
    #[serde(default)]
    pub delay_seconds: Option<i64>,
    /// Per-attempt timeout; 1 to 86400, default 300.
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    /// Retry policy; defaults apply field by field.
    #[serde(default)]
    pub retry: Option<RetryInput>,
    /// Correlation id to carry on every event; generated when absent.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Makes the submission safe to repeat: the same key with the same payload returns the task
    /// the first one created; with a different payload it is refused. 1 to 128 characters.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Ids of tasks (same tenant) that must succeed before this one starts; at most 32.
    #[serde(default)]
    pub depends_on: Option<Vec<String>>,
}

/// The retry part of a submission.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryInput {
    /// Attempts in all, 1 to 100.
    #[serde(default)]
    pub max_attempts: Option<i64>,
    /// First backoff, 1 to 3600 seconds.
    #[serde(default)]
    pub backoff_seconds: Option<i64>,
    /// Backoff cap, at least `backoff_seconds`, at most 86400.
    #[serde(default)]
    pub max_backoff_seconds: Option<i64>,
}

/// One field of a submission that is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's name as the client spelled it (`retry.max_attempts`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// A submission that cannot be accepted; lists every wrong field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidSubmission(pub Vec<FieldError>);

impl fmt::Display for InvalidSubmission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", error.field, error.message)?;
        }
        Ok(())
    }
}

/// A validated submission.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Owner.
    pub tenant: Tenant,
    /// Project.
    pub project: ProjectId,
    /// Name.
    pub name: String,
    /// Worker tier.
    pub tier: Tier,
    /// Worker input.
    pub input: Value,
    /// Priority.
    pub priority: i32,
    /// First due time.
    pub due_at: DateTime<Utc>,
    /// Per-attempt timeout.
    pub timeout_seconds: u32,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Correlation id, if the submitter gave one.
    pub correlation_id: Option<String>,
    /// The idempotency key, if the submitter gave one.
    pub idempotency: Option<Idempotency>,
    /// The tasks that must succeed first.
    pub depends_on: Vec<TaskId>,
}

/// An idempotency key and the fingerprint of the payload it was first used with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The submitter's key.
    pub key: String,
    /// SHA-256 (hex) of the submission without its key: equal payloads, equal fingerprints.
    pub fingerprint: String,
}

struct Checker(Vec<FieldError>);

impl Checker {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    fn required<'a>(&mut self, field: &str, value: &'a Option<String>) -> Option<&'a str> {
        match value.as_deref() {
            Some(text) => Some(text),
            None => {
                self.fail(field, "is required");
                None
            }
        }
    }

    fn parsed<T, E: fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.fail(field, e.to_string())).ok()
    }

    fn in_range(
        &mut self,
        field: &str,
        value: Option<i64>,
        min: i64,
        max: i64,
        default: i64,
    ) -> i64 {
        match value {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(_) => {
                self.fail(field, format!("must be between {min} and {max}"));
                default
            }
        }
    }
}

impl SubmitRequest {
    /// Checks every field and returns the task to create, or every field that is wrong.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<NewTask, InvalidSubmission> {
        let mut check = Checker(Vec::new());
        let tenant = check
            .required("tenant", &self.tenant)
            .and_then(|t| check.parsed("tenant", Tenant::parse(t)));
        let project = check
            .required("project", &self.project)
            .and_then(|p| check.parsed("project", ProjectId::parse(p)));
        let tier = check
            .required("tier", &self.tier)
            .and_then(|t| check.parsed("tier", Tier::parse(t)));
        let name = match check.required("name", &self.name) {
            Some(name) if name.trim().is_empty() || name.chars().count() > 128 => {
                check.fail("name", "must be 1 to 128 characters");
                None
            }
            other => other.map(str::to_owned),
        };
        let input = self.input.clone().unwrap_or(Value::Null);
        if let Err(reason) = check_payload(&input, MAX_INPUT_BYTES) {
            check.fail("input", reason);
        }
        let priority = check.in_range("priority", self.priority, -1000, 1000, 0) as i32;
        let due_at = self.due_at(&mut check, now);
        let timeout_seconds = check.in_range(
            "timeout_seconds",
            self.timeout_seconds,
            1,
            86_400,
            i64::from(DEFAULT_TIMEOUT_SECONDS),
        ) as u32;
        let retry = self.retry_policy(&mut check);
        if let Some(id) = &self.correlation_id
            && (id.is_empty() || id.len() > 128)
        {
            check.fail("correlation_id", "must be 1 to 128 characters");
        }
        let idempotency = self.idempotency_key.as_ref().and_then(|key| {
            if key.is_empty() || key.chars().count() > 128 || key.chars().any(char::is_control) {
                check.fail(
                    "idempotency_key",
                    "must be 1 to 128 characters, none of them control characters",
                );
                return None;
            }
            Some(Idempotency {
                key: key.clone(),
                fingerprint: self.fingerprint(),
            })
        });
        let depends_on = self.dependencies(&mut check);

        match (tenant, project, tier, name, check.0.is_empty()) {
            (Some(tenant), Some(project), Some(tier), Some(name), true) => Ok(NewTask {
                tenant,
                project,
                name,
                tier,
                input,
                priority,
                due_at,
                timeout_seconds,
                retry,
                correlation_id: self.correlation_id.clone(),
                idempotency,
                depends_on,
            }),
            _ => Err(InvalidSubmission(check.0)),
        }
    }

    /// The dependencies as task ids: at most [`MAX_DEPENDENCIES`], each once.
    fn dependencies(&self, check: &mut Checker) -> Vec<TaskId> {
        let listed = self.depends_on.as_deref().unwrap_or_default();
        if listed.len() > MAX_DEPENDENCIES {
            check.fail(
                "depends_on",
                format!("must list at most {MAX_DEPENDENCIES} tasks"),
            );
            return Vec::new();
        }
        let mut ids: Vec<TaskId> = Vec::with_capacity(listed.len());
        for (i, id) in listed.iter().enumerate() {
            let field = format!("depends_on[{i}]");
            match TaskId::parse(id) {
                Ok(id) if ids.contains(&id) => check.fail(&field, format!("lists {id} twice")),
                Ok(id) => ids.push(id),
                Err(e) => check.fail(&field, e.to_string()),
            }
        }
        ids
    }

    /// SHA-256 of the submission as canonical JSON (struct fields in declaration order, object
    /// keys sorted), its idempotency key left out.
    fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let payload = SubmitRequest {
            idempotency_key: None,
            ..self.clone()
        };
        let bytes = serde_json::to_vec(&payload).expect("a submission serializes");
        Sha256::digest(bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    fn due_at(&self, check: &mut Checker, now: DateTime<Utc>) -> DateTime<Utc> {
        let latest = now + Duration::days(MAX_SCHEDULE_AHEAD_DAYS);
        let due = match (&self.due_at, self.delay_seconds) {
            (Some(_), Some(_)) => {
                check.fail("due_at", "give either due_at or delay_seconds, not both");
                now
            }
            (Some(text), None) => match DateTime::parse_from_rfc3339(text) {
                Ok(at) => at.with_timezone(&Utc),
                Err(_) => {
                    check.fail(
                        "due_at",
                        "must be an RFC 3339 time, e.g. 2026-01-31T12:00:00Z",
                    );
                    now
                }
            },
            (None, Some(delay)) => {
                let max = latest.signed_duration_since(now).num_seconds();
                now + Duration::seconds(check.in_range("delay_seconds", Some(delay), 0, max, 0))
            }
            (None, None) => now,
        };
        if due > latest {
            check.fail(
                "due_at",
                format!("must be at most {MAX_SCHEDULE_AHEAD_DAYS} days ahead"),
            );
        }
        // A time in the past means "as soon as possible".
        due.max(now)
    }

    fn retry_policy(&self, check: &mut Checker) -> RetryPolicy {
        let defaults = RetryPolicy::default();
        let input = self.retry.clone().unwrap_or_default();
        let max_attempts = check.in_range(
            "retry.max_attempts",
            input.max_attempts,
            1,
            100,
            defaults.max_attempts.into(),
        );
        let backoff = check.in_range(
            "retry.backoff_seconds",
            input.backoff_seconds,
            1,
            3600,
            defaults.backoff_seconds.into(),
        );
        let max_backoff = check.in_range(
            "retry.max_backoff_seconds",
            input.max_backoff_seconds,
            1,
            86_400,
            i64::from(defaults.max_backoff_seconds).max(backoff),
        );
        if max_backoff < backoff {
            check.fail(
                "retry.max_backoff_seconds",
                "must be at least retry.backoff_seconds",
            );
        }
        RetryPolicy {
            max_attempts: max_attempts as u32,
            backoff_seconds: backoff as u32,
            max_backoff_seconds: max_backoff as u32,
        }
    }
}

impl Task {
    /// The task a validated submission creates: Scheduled, version 1, attempt 1.
    ///
    /// `status` is Scheduled, or Pending while dependencies are open (see
    /// [`crate::check_dependencies`]).
    pub fn submitted(new: NewTask, id: TaskId, now: DateTime<Utc>, status: Status) -> Task {
        let correlation_id = new.correlation_id.unwrap_or_else(|| id.to_string());
        let idempotency_key = new.idempotency.map(|idempotency| idempotency.key);
        Task {
            id,
            tenant: new.tenant,
            project: new.project,
            name: new.name,
            tier: new.tier,
            input: new.input,
            priority: new.priority,
            due_at: new.due_at,
            timeout_seconds: new.timeout_seconds,
            retry: new.retry,
            status,
            version: 1,
            attempt: 1,
            deadline: None,
            output: None,
            error: None,
            reason: None,
            correlation_id,
            created_at: now,
            updated_at: now,
            history: vec![HistoryEntry {
                version: 1,
                from: None,
                to: status,
                at: now,
                cause: "submitted".to_owned(),
                attempt: 1,
            }],
            parked: None,
            reserved: false,
            lane: None,
            idempotency_key,
            depends_on: new.depends_on,
            dependents: Vec::new(),
            provenance: None,
            taint: None,
            lease: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn request(value: Value) -> SubmitRequest {
        serde_json::from_value(value).unwrap()
    }

    fn valid() -> Value {
        json!({"tenant": "acme", "project": "reports", "name": "render", "tier": "gpu"})
    }

    #[test]
    fn a_minimal_submission_gets_defaults_and_is_due_now() {
        let task = request(valid()).validate(now()).unwrap();
        assert_eq!(task.due_at, now());
        assert_eq!(task.priority, 0);
        assert_eq!(task.timeout_seconds, DEFAULT_TIMEOUT_SECONDS);
        assert_eq!(task.retry, RetryPolicy::default());
    }

    #[test]
    fn every_wrong_field_is_named_with_its_reason() {
        let err = request(json!({
            "tenant": "acme", "project": "bad project", "tier": "gpu",
            "priority": 5000, "delay_seconds": 10, "due_at": "2026-01-01T00:00:00Z",
            "retry": {"max_attempts": 0, "backoff_seconds": 60, "max_backoff_seconds": 30}
        }))
        .validate(now())
        .unwrap_err();
        let fields: Vec<&str> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "project",
                "name",
                "priority",
                "due_at",
                "retry.max_attempts",
                "retry.max_backoff_seconds"
            ]
        );
        assert!(
            err.to_string()
                .contains("priority: must be between -1000 and 1000")
        );
    }

    #[test]
    fn a_delay_or_a_due_time_sets_when_it_runs_and_the_past_means_now() {
        let mut delayed = valid();
        delayed["delay_seconds"] = json!(1200);
        assert_eq!(
            request(delayed).validate(now()).unwrap().due_at,
            now() + Duration::minutes(20)
        );
        let mut past = valid();
        past["due_at"] = json!("2020-01-01T00:00:00Z");
        assert_eq!(request(past).validate(now()).unwrap().due_at, now());
        let mut too_far = valid();
        too_far["due_at"] = json!("2030-01-01T00:00:00Z");
        assert_eq!(
            request(too_far).validate(now()).unwrap_err().0[0].field,
            "due_at"
        );
    }

    #[test]
    fn an_oversized_input_is_refused() {
        let mut big = valid();
        big["input"] = json!("x".repeat(MAX_INPUT_BYTES));
        assert_eq!(
            request(big).validate(now()).unwrap_err().0[0].field,
            "input"
        );
    }

    #[test]
    fn equal_payloads_share_a_fingerprint_whatever_their_key_or_key_order() {
        let keyed = |key: &str, input: Value| {
            let mut request = valid();
            request["idempotency_key"] = json!(key);
            request["input"] = input;
            self::request(request)
                .validate(now())
                .unwrap()
                .idempotency
                .unwrap()
        };
        let first = keyed("k1", json!({"a": 1, "b": 2}));
        let reordered = keyed("k2", serde_json::from_str(r#"{"b": 2, "a": 1}"#).unwrap());
        let other = keyed("k1", json!({"a": 1, "b": 3}));
        assert_eq!(first.key, "k1");
        assert_eq!(first.fingerprint, reordered.fingerprint);
        assert_ne!(first.fingerprint, other.fingerprint);
        assert_eq!(first.fingerprint.len(), 64);
        let mut bad = valid();
        bad["idempotency_key"] = json!("");
        assert_eq!(
            request(bad).validate(now()).unwrap_err().0[0].field,
            "idempotency_key"
        );
    }

    #[test]
    fn dependencies_are_task_ids_each_listed_once_and_at_most_32() {
        let id = "019a0000-0000-7000-8000-000000000001";
        let mut listed = valid();
        listed["depends_on"] = json!([id]);
        let new = request(listed).validate(now()).unwrap();
        assert_eq!(new.depends_on, [TaskId::parse(id).unwrap()]);
        let mut wrong = valid();
        wrong["depends_on"] = json!([id, "nope", id]);
        let fields: Vec<String> = request(wrong)
            .validate(now())
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        assert_eq!(fields.len(), 2, "{fields:?}");
        assert!(fields[0].starts_with("depends_on[1]"), "{fields:?}");
        assert_eq!(fields[1], format!("depends_on[2]: lists {id} twice"));
        let mut many = valid();
        many["depends_on"] = json!(vec![id; MAX_DEPENDENCIES + 1]);
        assert_eq!(
            request(many).validate(now()).unwrap_err().0[0].field,
            "depends_on"
        );
    }

    #[test]
    fn unknown_fields_are_refused_when_parsing() {
        let mut odd = valid();
        odd["colour"] = json!("red");
        assert!(serde_json::from_value::<SubmitRequest>(odd).is_err());
    }

    #[test]
    fn a_submitted_task_is_scheduled_at_version_one_with_one_history_entry() {
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        let new = request(valid()).validate(now()).unwrap();
        let task = Task::submitted(new, id, now(), Status::Scheduled);
        assert_eq!(
            (task.status, task.version, task.attempt),
            (Status::Scheduled, 1, 1)
        );
        assert_eq!(task.history.len(), 1);
        assert_eq!(task.correlation_id, id.to_string());
    }
}
