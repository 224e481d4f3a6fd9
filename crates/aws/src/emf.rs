//! Metrics as CloudWatch Embedded Metric Format: one JSON line per sample on stdout, which
//! CloudWatch Logs turns into metrics in namespace [`NAMESPACE`] with no API call. Every line
//! also carries the function's name and, where there is one, the task and its correlation id.
//!
//! | metric | unit | dimensions | when |
//! |---|---|---|---|
//! | `Transitions` | Count | (project, from, to), (from, to) | a task is created (`from` = `NONE`) or moves |
//! | `DispatchLatency` | Milliseconds | (project) | Scheduled → Running: start time minus due time |
//! | `EndToEndDuration` | Milliseconds | (project, status) | a task reaches a terminal status: since it was submitted |
//! | `Retries` | Count | (project) | a failed attempt is scheduled again |
//! | `Rejections` | Count | (function, reason) | a command is refused (`STALE_ATTEMPT`, ...) or a message is malformed (`INVALID_DETAIL`, ...) |
//! | `DlqSends` | Count | (function, code) | a function parks a message in its DLQ |

use std::io::Write;
use std::sync::Mutex;

use baton_app::Metrics;
use baton_domain::{Command, Rejection, Status, Task};
use chrono::Utc;
use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Baton";

/// One sample: a metric's value with its dimensions and extra properties.
struct Sample<'a> {
    name: &'static str,
    unit: &'static str,
    value: f64,
    /// Dimension names and values; every dimension set below names some of these.
    dimensions: Vec<(&'static str, String)>,
    dimension_sets: &'a [&'a [&'static str]],
    task: Option<&'a Task>,
}

/// Writes EMF lines to stdout (or any writer, for tests).
pub struct EmfMetrics {
    function: String,
    out: Mutex<Box<dyn Write + Send>>,
}

impl EmfMetrics {
    /// Metrics of `function`, on stdout.
    pub fn stdout(function: &str) -> Self {
        Self::to(function, Box::new(std::io::stdout()))
    }

    /// Metrics of `function`, written to `out`.
    pub fn to(function: &str, out: Box<dyn Write + Send>) -> Self {
        Self {
            function: function.to_owned(),
            out: Mutex::new(out),
        }
    }

    /// Metrics of the running Lambda function (`AWS_LAMBDA_FUNCTION_NAME`), on stdout.
    pub fn from_env() -> Self {
        let function =
            std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".to_owned());
        Self::stdout(&function)
    }

    /// A message of this function was malformed (`code`), whatever became of it.
    pub fn malformed(&self, code: &str) {
        self.per_function("Rejections", "reason", code);
    }

    /// This function parked a message in its DLQ, having failed it with `code`.
    pub fn dlq_sent(&self, code: &str) {
        self.per_function("DlqSends", "code", code);
    }

    /// One count of `name` by (function, `dimension` = `value`).
    fn per_function(&self, name: &'static str, dimension: &'static str, value: &str) {
        self.emit(Sample {
            name,
            unit: "Count",
            value: 1.0,
            dimensions: vec![
                ("function", self.function.clone()),
                (dimension, value.to_owned()),
            ],
            dimension_sets: &[&["function", dimension]],
            task: None,
        });
    }

    fn emit(&self, sample: Sample<'_>) {
        let mut line = Map::new();
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": Utc::now().timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": sample.dimension_sets,
                    "Metrics": [{"Name": sample.name, "Unit": sample.unit}],
                }],
            }),
        );
        line.insert("function".into(), Value::from(self.function.as_str()));
        for (name, value) in sample.dimensions {
            line.insert(name.into(), Value::from(value));
        }
        if let Some(task) = sample.task {
            line.insert("task_id".into(), Value::from(task.id.to_string()));
            line.insert("tenant".into(), Value::from(task.tenant.as_str()));
            line.insert(
                "correlation_id".into(),
                Value::from(task.correlation_id.as_str()),
            );
        }
        line.insert(sample.name.into(), Value::from(sample.value));
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // A metric that cannot be written is not worth failing the task for.
        let _ = writeln!(out, "{}", Value::Object(line)).and_then(|()| out.flush());
    }
}

fn millis(duration: chrono::Duration) -> f64 {
    duration.num_milliseconds().max(0) as f64
}

impl Metrics for EmfMetrics {
    fn moved(&self, before: Option<&Task>, after: &Task) {
        let from = before.map(|b| b.status);
        if from == Some(after.status) {
            return; // a note, not a move
        }
        let project = after.project.to_string();
        self.emit(Sample {
            name: "Transitions",
            unit: "Count",
            value: 1.0,
            dimensions: vec![
                ("project", project.clone()),
                ("from", from.map_or("NONE", Status::as_str).to_owned()),
                ("to", after.status.as_str().to_owned()),
            ],
            dimension_sets: &[&["project", "from", "to"], &["from", "to"]],
            task: Some(after),
        });
        let per_project = |name, unit, value| Sample {
            name,
            unit,
            value,
            dimensions: vec![("project", project.clone())],
            dimension_sets: &[&["project"]],
            task: Some(after),
        };
        match (from, after.status) {
            (Some(Status::Scheduled), Status::Running) => self.emit(per_project(
                "DispatchLatency",
                "Milliseconds",
                millis(after.updated_at - after.due_at),
            )),
            (Some(Status::Running), Status::Scheduled) => {
                self.emit(per_project("Retries", "Count", 1.0))
            }
            (_, status) if status.is_terminal() => self.emit(Sample {
                name: "EndToEndDuration",
                unit: "Milliseconds",
                value: millis(after.updated_at - after.created_at),
                dimensions: vec![
                    ("project", project.clone()),
                    ("status", status.as_str().to_owned()),
                ],
                dimension_sets: &[&["project", "status"]],
                task: Some(after),
            }),
            _ => {}
        }
    }

    fn rejected(&self, _command: &Command, rejection: &Rejection) {
        self.per_function("Rejections", "reason", rejection.code());
    }
}

#[cfg(test)]
mod tests {
    use baton_domain::{SubmitRequest, TaskId, decide};

    use super::*;
    use crate::captured::Captured;

    /// Checks `line` against the EMF specification: `_aws.Timestamp` in epoch milliseconds,
    /// `CloudWatchMetrics` directives whose dimension sets name string members (at most 30
    /// each) and whose metrics name numeric members with a CloudWatch unit. Answers the names of
    /// the metrics the line carries.
    fn valid_emf(line: &Value) -> Vec<String> {
        const UNITS: [&str; 3] = ["Count", "Milliseconds", "None"];
        let aws = &line["_aws"];
        assert!(
            aws["Timestamp"].as_i64().unwrap() > 1_600_000_000_000,
            "{line}"
        );
        let mut names = Vec::new();
        for directive in aws["CloudWatchMetrics"].as_array().unwrap() {
            let namespace = directive["Namespace"].as_str().unwrap();
            assert!(!namespace.is_empty() && namespace.len() <= 255);
            for set in directive["Dimensions"].as_array().unwrap() {
                let set = set.as_array().unwrap();
                assert!(set.len() <= 30);
                for dimension in set {
                    let name = dimension.as_str().unwrap();
                    assert!(
                        line[name].is_string(),
                        "dimension {name} must be a string member"
                    );
                }
            }
            for metric in directive["Metrics"].as_array().unwrap() {
                let name = metric["Name"].as_str().unwrap();
                assert!(
                    line[name].is_number(),
                    "metric {name} must be a number member"
                );
                assert!(UNITS.contains(&metric["Unit"].as_str().unwrap()));
                names.push(name.to_owned());
            }
        }
        names
    }

    fn task() -> Task {
        let request: SubmitRequest = serde_json::from_value(json!({
            "tenant": "acme", "project": "reports", "name": "n", "tier": "gpu",
            "correlation_id": "corr-1", "retry": {"max_attempts": 2, "backoff_seconds": 1}
        }))
        .unwrap();
        let now = Utc::now();
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        Task::submitted(request.validate(now).unwrap(), id, now, Status::Scheduled)
    }

    fn next(task: &Task, command: Command) -> Task {
        match decide(task, &command, Utc::now() + chrono::Duration::seconds(2)) {
            Ok(baton_domain::Decision::Apply(transition)) => transition.task,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lifecycle_writes_valid_emf_lines_for_every_documented_metric() {
        let captured = Captured::default();
        let metrics = EmfMetrics::to("baton-on-result", Box::new(captured.clone()));
        let scheduled = task();
        metrics.moved(None, &scheduled);
        let running = next(
            &scheduled,
            Command::Dispatch {
                attempt: 1,
                lease: baton_domain::Lease::from_random([7; 16]),
            },
        );
        metrics.moved(Some(&scheduled), &running);
        let failed = baton_domain::Outcome::Failed {
            error: baton_domain::TaskError {
                code: "E".into(),
                message: "m".into(),
                retryable: true,
            },
        };
        let retrying = next(
            &running,
            Command::Complete {
                lease: Some(baton_domain::Lease::from_random([7; 16])),
                attempt: 1,
                outcome: failed,
                provenance: None,
            },
        );
        metrics.moved(Some(&running), &retrying);
        let cancelled = next(&retrying, Command::Cancel { reason: "r".into() });
        metrics.moved(Some(&retrying), &cancelled);
        let noted = next(
            &cancelled,
            Command::Note {
                cause: "redriven:x".into(),
            },
        );
        metrics.moved(Some(&cancelled), &noted);
        let stale = Rejection::StaleAttempt {
            current: 2,
            received: 1,
        };
        metrics.rejected(&Command::TimeOut { attempt: 1 }, &stale);
        metrics.malformed("INVALID_DETAIL");
        metrics.dlq_sent("INVALID_DETAIL");

        let lines = captured.lines();
        let names: Vec<String> = lines.iter().flat_map(valid_emf).collect();
        assert_eq!(
            names,
            [
                "Transitions",
                "Transitions",
                "DispatchLatency",
                "Transitions",
                "Retries",
                "Transitions",
                "EndToEndDuration",
                "Rejections",
                "Rejections",
                "DlqSends"
            ],
            "a note is not a transition"
        );
        let first = &lines[0];
        assert_eq!(
            (&first["from"], &first["to"], &first["project"]),
            (&json!("NONE"), &json!("SCHEDULED"), &json!("reports"))
        );
        assert_eq!(first["correlation_id"], "corr-1");
        assert_eq!(first["function"], "baton-on-result");
        assert!(lines[2]["DispatchLatency"].as_f64().unwrap() >= 0.0);
        assert_eq!(lines[6]["status"], "CANCELLED");
        assert_eq!(lines[7]["reason"], "STALE_ATTEMPT");
        assert_eq!(lines[9]["code"], "INVALID_DETAIL");
    }
}
