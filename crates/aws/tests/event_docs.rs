//! The event documentation in `docs/events` stays true to the code: inbound examples parse with
//! the real parsers, and every outbound event Baton publishes has exactly the fields its schema
//! allows and requires.

use std::collections::BTreeSet;

use baton_aws::inbound::{RollbackRequest, TaskRequest, TaskResult, envelope};
use baton_domain::{
    Change, Command, ControlEvent, Decision, Event, EventKind, Gate, Lease, Outcome, Parked,
    ProjectId, Provenance, Scope, Status, SubmitRequest, Taint, Task, TaskError, TaskId, Tenant,
    decide,
};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/events");

/// The lease the events' attempts are dispatched with.
fn lease() -> Lease {
    Lease::from_random([7; 16])
}

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DOCS}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn schema(detail_type: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let schema: Value = serde_json::from_str(&read(&format!("{detail_type}.schema.json"))).unwrap();
    let allowed = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let required = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    (allowed, required)
}

fn assert_fits(detail_type: &str, detail: &Value, what: &str) {
    let (allowed, required) = schema(detail_type);
    let keys: BTreeSet<String> = detail.as_object().unwrap().keys().cloned().collect();
    assert!(
        keys.is_subset(&allowed),
        "{what}: {:?} not in the {detail_type} schema",
        keys.difference(&allowed).collect::<Vec<_>>()
    );
    assert!(
        required.is_subset(&keys),
        "{what}: lacks {:?} required by the {detail_type} schema",
        required.difference(&keys).collect::<Vec<_>>()
    );
}

#[test]
fn every_inbound_example_parses_with_the_real_parser() {
    let submit = envelope::<SubmitRequest>(&read("SubmitTask.example.json"), "SubmitTask").unwrap();
    submit
        .detail
        .validate(Utc::now())
        .expect("the SubmitTask example is valid");
    envelope::<TaskResult>(&read("TaskResult.example.json"), "TaskResult")
        .unwrap()
        .detail
        .command()
        .expect("the TaskResult example's provenance is valid");
    envelope::<TaskRequest>(&read("CancelTask.example.json"), "CancelTask").unwrap();
    envelope::<RollbackRequest>(&read("RollbackRequested.example.json"), "RollbackRequested")
        .unwrap();
    for inbound in [
        "SubmitTask",
        "TaskResult",
        "CancelTask",
        "RollbackRequested",
    ] {
        let example: Value =
            serde_json::from_str(&read(&format!("{inbound}.example.json"))).unwrap();
        assert_fits(
            inbound,
            &example["detail"],
            &format!("the {inbound} example"),
        );
    }
}

fn step(task: &Task, command: Command) -> Task {
    match decide(task, &command, task.updated_at + Duration::hours(1)) {
        Ok(Decision::Apply(transition)) => transition.task,
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_outbound_event_matches_its_schema_and_example() {
    let request: SubmitRequest = serde_json::from_value(json!({
        "tenant": "acme", "project": "p", "name": "n", "tier": "gpu", "input": {"a": 1},
        "retry": {"max_attempts": 2}
    }))
    .unwrap();
    let submitted = Task::submitted(
        request.validate(Utc::now()).unwrap(),
        TaskId::from_uuid(uuid::Uuid::now_v7()),
        Utc::now(),
        Status::Scheduled,
    );
    let dependency = TaskId::from_uuid(uuid::Uuid::now_v7());
    let pending = Task {
        status: Status::Pending,
        depends_on: vec![dependency],
        ..submitted.clone()
    };
    let released = step(
        &pending,
        Command::Release {
            dependencies: vec![(dependency, Status::Succeeded)],
        },
    );
    let running = step(
        &submitted,
        Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
    );
    let error = TaskError {
        code: "E".into(),
        message: "m".into(),
        retryable: true,
    };
    let failed = |attempt| Command::Complete {
        lease: Some(lease()),
        attempt,
        outcome: Outcome::Failed {
            error: error.clone(),
        },
        provenance: None,
    };
    let retrying = step(&running, failed(1));
    let failed_for_good = step(
        &step(
            &retrying,
            Command::Dispatch {
                attempt: 2,
                lease: lease(),
            },
        ),
        failed(2),
    );
    let succeeded = step(
        &running,
        Command::Complete {
            lease: Some(lease()),
            attempt: 1,
            outcome: Outcome::Succeeded { output: json!(1) },
            provenance: Some(Provenance {
                model: Some("m".into()),
                tokens_in: Some(3),
                ..Provenance::default()
            }),
        },
    );
    let taint = Taint {
        root: dependency,
        via: Some(dependency),
        request: "r1".into(),
    };
    let rollback = Command::Rollback {
        reason: "r".into(),
        taint: taint.clone(),
    };
    let tasks = [
        pending,
        released,
        running,
        succeeded.clone(),
        failed_for_good,
        retrying.clone(),
        step(&submitted, Command::Cancel { reason: "r".into() }),
        step(&succeeded, rollback),
    ];
    let waiting = Task {
        parked: Some(Parked {
            gate: Gate::Capacity,
            since: submitted.updated_at,
        }),
        ..retrying
    };
    let mut events: Vec<Event> = tasks
        .iter()
        .map(|t| Event::announcing(t).unwrap())
        .collect();
    events.push(Event::parked(&waiting).unwrap());
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, EventKind::ALL, "one task per kind of event");
    for event in &events {
        let detail_type = event.kind.detail_type();
        assert_documented(detail_type, &serde_json::to_value(event).unwrap());
    }
    // What Baton sends to dependents while it walks a graph fits the inbound contracts.
    let cascaded = RollbackRequest {
        tenant: submitted.tenant.clone(),
        task_id: submitted.id,
        reason: Some("r".into()),
        root: Some(taint.root),
        via: taint.via,
        request: Some(taint.request),
        correlation_id: Some(submitted.correlation_id.clone()),
    };
    let detail = serde_json::to_value(&cascaded).unwrap();
    assert_fits("RollbackRequested", &detail, "a cascaded RollbackRequested");
    let cancel = TaskRequest {
        tenant: submitted.tenant.clone(),
        task_id: submitted.id,
        reason: Some("dependency failed".into()),
        correlation_id: Some(submitted.correlation_id.clone()),
    };
    let detail = serde_json::to_value(&cancel).unwrap();
    assert_fits("CancelTask", &detail, "a cascaded CancelTask");
}

/// A real event fits its schema, and so does its example.
fn assert_documented(detail_type: &str, detail: &Value) {
    assert_fits(detail_type, detail, &format!("a real {detail_type}"));
    let example: Value =
        serde_json::from_str(&read(&format!("{detail_type}.example.json"))).unwrap();
    assert_eq!(example["detail-type"], detail_type);
    assert_eq!(example["source"], baton_aws::SOURCE);
    assert_fits(
        detail_type,
        &example["detail"],
        &format!("the {detail_type} example"),
    );
}

#[test]
fn every_control_event_matches_its_schema_and_example() {
    let change = Change {
        by: "ada".into(),
        reason: "r".into(),
        at: Utc::now(),
    };
    let (tenant, project) = (
        Tenant::parse("acme").unwrap(),
        ProjectId::parse("p").unwrap(),
    );
    let events = [
        ControlEvent::KillSwitch {
            scope: Scope::Global,
            engaged: true,
            change: change.clone(),
        },
        ControlEvent::KillSwitch {
            scope: Scope::Project {
                tenant: tenant.clone(),
                project: project.clone(),
            },
            engaged: false,
            change: change.clone(),
        },
        ControlEvent::Pause {
            tenant: tenant.clone(),
            project: project.clone(),
            paused: true,
            change: change.clone(),
        },
        ControlEvent::Limit {
            tenant,
            project,
            limit: 3,
            change,
        },
    ];
    for event in &events {
        assert_documented(event.detail_type(), &serde_json::to_value(event).unwrap());
    }
}
