//! The event documentation in `docs/events` stays true to the code: inbound examples parse with
//! the real parsers, and every outbound event Baton publishes has exactly the fields its schema
//! allows and requires.

use std::collections::BTreeSet;

use baton_aws::inbound::{TaskRequest, TaskResult, envelope};
use baton_domain::{
    Command, Decision, Event, EventKind, Outcome, SubmitRequest, Task, TaskError, TaskId, decide,
};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/events");

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
    envelope::<TaskResult>(&read("TaskResult.example.json"), "TaskResult").unwrap();
    envelope::<TaskRequest>(&read("CancelTask.example.json"), "CancelTask").unwrap();
    envelope::<TaskRequest>(&read("RollbackRequested.example.json"), "RollbackRequested").unwrap();
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
    );
    let running = step(&submitted, Command::Dispatch { attempt: 1 });
    let error = TaskError {
        code: "E".into(),
        message: "m".into(),
    };
    let failed = |attempt| Command::Complete {
        attempt,
        outcome: Outcome::Failed {
            error: error.clone(),
        },
    };
    let retrying = step(&running, failed(1));
    let failed_for_good = step(
        &step(&retrying, Command::Dispatch { attempt: 2 }),
        failed(2),
    );
    let succeeded = step(
        &running,
        Command::Complete {
            attempt: 1,
            outcome: Outcome::Succeeded { output: json!(1) },
        },
    );
    let tasks = [
        submitted.clone(),
        running,
        succeeded.clone(),
        failed_for_good,
        retrying,
        step(&submitted, Command::Cancel { reason: "r".into() }),
        step(&succeeded, Command::Rollback { reason: "r".into() }),
    ];
    let kinds: Vec<EventKind> = tasks
        .iter()
        .map(|t| Event::announcing(t).unwrap().kind)
        .collect();
    assert_eq!(kinds, EventKind::ALL, "one task per kind of event");
    for task in &tasks {
        let event = Event::announcing(task).unwrap();
        let detail_type = event.kind.detail_type();
        assert_fits(
            detail_type,
            &serde_json::to_value(&event).unwrap(),
            &format!("a real {detail_type}"),
        );
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
}
