//! Bad input, fuzzed by property: arbitrary and half-valid SQS bodies to every function that
//! consumes events, arbitrary and half-valid GraphQL requests to the gateway. Every one must be
//! acknowledged or failed with a known code (which parks it in its DLQ), or answered with coded
//! GraphQL errors; none may panic. Then the cases a fuzzer finds only by luck: oversized events
//! and outputs, unknown tasks and other tenants' tasks. Needs no emulator. The same harness backs
//! the cargo-fuzz targets in `fuzz/`. `BATON_FUZZ_CASES` sets the cases per property (500).

use std::sync::OnceLock;

use baton_domain::{Status, Task, Tenant};
use baton_tests::eventbridge_event;
use baton_tests::fuzz::Harness;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

/// Stands for the harness's task id in generated input.
const TASK: &str = "$TASK";
/// Stands for the lease of the harness's running attempt.
const LEASE: &str = "$LEASE";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn runner() -> TestRunner {
    let cases = std::env::var("BATON_FUZZ_CASES").map_or(500, |n| n.parse().unwrap());
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `check` on a fresh harness for every input `strategy` makes, `$TASK` and `$LEASE`
/// replaced by the harness's task id and its attempt's lease.
fn fuzz<S: Strategy<Value = String>>(
    strategy: S,
    check: impl AsyncCheck,
) -> Result<(), proptest::test_runner::TestError<String>> {
    runner().run(&strategy, |input| {
        let result = runtime().block_on(async {
            let harness = Harness::new().await;
            let lease = harness
                .task
                .lease
                .as_ref()
                .map_or("", |lease| lease.as_str());
            let input = input
                .replace(TASK, &harness.task.id.to_string())
                .replace(LEASE, lease);
            check.check(&harness, &input).await
        });
        result.map_err(TestCaseError::fail)
    })
}

/// A check of one input against a harness.
trait AsyncCheck {
    async fn check(&self, harness: &Harness, input: &str) -> Result<(), String>;
}

struct Events;
impl AsyncCheck for Events {
    async fn check(&self, harness: &Harness, input: &str) -> Result<(), String> {
        harness.event(input).await.map(drop)
    }
}

struct Graphql;
impl AsyncCheck for Graphql {
    async fn check(&self, harness: &Harness, input: &str) -> Result<(), String> {
        harness.graphql("acme", input).await.map(drop)
    }
}

/// Field names Baton's events and GraphQL inputs use, and a few they do not.
fn key() -> impl Strategy<Value = String> {
    let known = [
        "tenant",
        "task_id",
        "attempt",
        "status",
        "output",
        "error",
        "code",
        "message",
        "reason",
        "provenance",
        "model",
        "artifacts",
        "uri",
        "digest",
        "project",
        "name",
        "tier",
        "input",
        "due_at",
        "delay_seconds",
        "timeout_seconds",
        "retry",
        "max_attempts",
        "backoff_seconds",
        "depends_on",
        "idempotency_key",
        "version",
        "root",
        "via",
        "request",
        "correlation_id",
        "priority",
        "projectId",
        "taskId",
        "id",
        "first",
        "after",
        "statuses",
        "delaySeconds",
        "dependsOn",
        "filter",
        "limit",
        "depth",
        "input",
    ];
    prop_oneof![
        4 => proptest::sample::select(known.to_vec()).prop_map(str::to_owned),
        1 => "[a-zA-Z_]{0,10}",
    ]
}

/// Values: the task's id, other ids, tenants, times, statuses, numbers at their limits, text,
/// and now and then something far too large for an event or an item.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(2),
            Just(u64::from(u32::MAX) + 1),
            any::<u64>()
        ]
        .prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(TASK)),
        Just(json!("019a0000-0000-7000-8000-000000000001")),
        Just(json!("not-a-uuid")),
        Just(json!("acme")),
        Just(json!("globex")),
        Just(json!("fuzz")),
        Just(json!("2026-03-01T12:00:00Z")),
        Just(json!("succeeded")),
        Just(json!("failed")),
        Just(json!("SUCCEEDED")),
        any::<String>().prop_map(Value::from),
        (0usize..3).prop_map(|k| json!("x".repeat([70_000, 270_000, 410_000][k]))),
    ]
}

/// JSON nested a few levels, objects keyed by [`key`].
fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// `base` with a few fields set to other values or removed.
fn mutated(base: Value) -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), prop::option::weighted(0.8, value())), 0..4).prop_map(
        move |changes| {
            let mut object: Map<String, Value> = base.as_object().cloned().unwrap_or_default();
            for (key, value) in changes {
                match value {
                    Some(value) => object.insert(key, value),
                    None => object.remove(&key),
                };
            }
            Value::Object(object)
        },
    )
}

/// A valid event of each kind the functions consume, each a few mutations away from invalid.
fn events() -> impl Strategy<Value = String> {
    let details = vec![
        (
            "SubmitTask",
            json!({"tenant": "acme", "project": "fuzz", "name": "n", "tier": "gpu"}),
        ),
        (
            "TaskResult",
            json!({"tenant": "acme", "task_id": TASK, "attempt": 1, "lease": LEASE,
            "status": "succeeded", "output": {"ok": true}}),
        ),
        (
            "TaskResult",
            json!({"tenant": "acme", "task_id": TASK, "attempt": 1, "lease": LEASE,
            "status": "failed", "error": {"code": "E", "message": "m"}}),
        ),
        ("CancelTask", json!({"tenant": "acme", "task_id": TASK})),
        (
            "RollbackRequested",
            json!({"tenant": "acme", "task_id": TASK}),
        ),
        (
            "TaskSucceeded",
            json!({"tenant": "acme", "task_id": TASK, "project": "fuzz",
            "version": 3}),
        ),
    ];
    let detail_types = proptest::sample::select(vec![
        "SubmitTask",
        "TaskResult",
        "CancelTask",
        "RollbackRequested",
        "TaskSucceeded",
        "Unknown",
    ]);
    (
        proptest::sample::select(details),
        prop::option::weighted(0.1, detail_types),
    )
        .prop_flat_map(|((detail_type, base), other_type)| {
            let detail_type = other_type.unwrap_or(detail_type);
            mutated(base).prop_map(move |detail| {
                eventbridge_event(detail_type, &uuid::Uuid::now_v7().to_string(), detail)
            })
        })
}

/// A due timer's message, a few mutations away from valid.
fn timers() -> impl Strategy<Value = String> {
    let timer = json!({"tenant": "acme", "task_id": TASK, "attempt": 1,
        "due_at": "2026-03-01T12:00:00Z"});
    mutated(timer).prop_map(|timer| timer.to_string())
}

/// Envelopes with their own fields mutated.
fn envelopes() -> impl Strategy<Value = String> {
    let envelope: Value = serde_json::from_str(&eventbridge_event(
        "CancelTask",
        "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        json!({"tenant": "acme", "task_id": TASK}),
    ))
    .unwrap();
    let envelope_keys = proptest::sample::select(vec![
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    ]);
    prop::collection::vec((envelope_keys, prop::option::of(value())), 1..3).prop_map(
        move |changes| {
            let mut envelope = envelope.clone();
            for (key, value) in changes {
                match value {
                    Some(value) => envelope[key] = value,
                    None => drop(envelope.as_object_mut().unwrap().remove(key)),
                }
            }
            envelope.to_string()
        },
    )
}

#[test]
fn every_message_to_every_function_is_acknowledged_or_parked_with_a_code() {
    let inputs = prop_oneof![
        3 => events(),
        1 => timers(),
        1 => envelopes(),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..512)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ];
    if let Err(failure) = fuzz(inputs, Events) {
        panic!("{failure}");
    }
}

/// GraphQL operations over every root field a tenant may use, with variables to fill.
fn operations() -> impl Strategy<Value = String> {
    let documents = vec![
        "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id status } }",
        "mutation($id: ID!, $reason: String) { cancelTask(id: $id, reason: $reason) { status } }",
        "mutation($id: ID!, $reason: String) { requestRollback(taskId: $id, reason: $reason) { status } }",
        "query($id: ID!) { task(id: $id) { id status version history { cause } } }",
        "query($id: ID!) { taskHistory(id: $id) { cause } }",
        "query($filter: TaskFilter!, $first: Int!, $after: String) { tasks(filter: $filter, first: $first, after: $after) { pageInfo { hasNextPage } } }",
        "query($projectId: String!) { projectStatus(projectId: $projectId) { limit } }",
        "mutation($projectId: String!, $limit: Int!, $reason: String!) { setProjectLimit(projectId: $projectId, limit: $limit, reason: $reason) { limit } }",
        "query($id: ID!, $depth: Int!) { lineage(taskId: $id, depth: $depth) { __typename } }",
        "query($id: ID!) { provenance(taskId: $id) { model } }",
        "query($model: String!, $first: Int!) { producedBy(model: $model, first: $first) { __typename } }",
        "{ dlqStats { queue } }",
        "{ __schema { types { name } } }",
    ];
    let variables = prop::collection::vec(
        (
            proptest::sample::select(vec![
                "input",
                "id",
                "reason",
                "filter",
                "first",
                "after",
                "projectId",
                "limit",
                "depth",
                "model",
            ]),
            prop_oneof![
                value(),
                mutated(json!({"projectId": "fuzz", "name": "n", "tier": "gpu"}))
            ],
        ),
        0..5,
    );
    (proptest::sample::select(documents), variables).prop_map(|(query, variables)| {
        let variables: Map<String, Value> = variables
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        json!({"query": query, "variables": variables}).to_string()
    })
}

/// Documents made of GraphQL's tokens in any order, nested deep or listed long.
fn documents() -> impl Strategy<Value = String> {
    let tokens = proptest::sample::select(vec![
        "{",
        "}",
        "(",
        ")",
        "task",
        "tasks",
        "id:",
        "\"x\"",
        "$v",
        "...",
        "fragment",
        "on",
        "Task",
        "query",
        "mutation",
        "subscription",
        "@include(if: true)",
        "1",
        ":",
        "a",
        "status",
        "cancelTask",
        "__typename",
        "[",
        "]",
        ",",
    ]);
    prop_oneof![
        prop::collection::vec(tokens, 0..40).prop_map(|tokens| tokens.join(" ")),
        (1usize..2000).prop_map(|depth| format!("{}{}", "{ a ".repeat(depth), "}".repeat(depth))),
        (1usize..3000).prop_map(|n| format!(
            "{{ {} }}",
            (0..n)
                .map(|i| format!("t{i}: __typename"))
                .collect::<Vec<_>>()
                .join(" ")
        )),
    ]
    .prop_map(|query| json!({"query": query}).to_string())
}

#[test]
fn every_graphql_request_gets_data_or_coded_errors() {
    let inputs = prop_oneof![
        4 => operations(),
        2 => documents(),
        1 => value().prop_map(|v| v.to_string()),
        1 => any::<String>(),
    ];
    if let Err(failure) = fuzz(inputs, Graphql) {
        panic!("{failure}");
    }
}

/// Runs `f` on a fresh harness.
fn with_harness<T>(f: impl AsyncFnOnce(&Harness) -> T) -> T {
    runtime().block_on(async {
        let harness = Harness::new().await;
        f(&harness).await
    })
}

async fn stored(harness: &Harness) -> Task {
    harness
        .baton
        .task(&harness.task.tenant, &harness.task.id)
        .await
        .unwrap()
        .unwrap()
}

fn result_of(task: &Task, tenant: &str, output: Value) -> String {
    eventbridge_event(
        "TaskResult",
        &uuid::Uuid::now_v7().to_string(),
        json!({"tenant": tenant, "task_id": task.id, "attempt": 1, "lease": task.lease,
               "status": "succeeded", "output": output}),
    )
}

/// The answer of `function` among `answers`.
fn answer_of(
    answers: &[(&'static str, Option<&'static str>)],
    function: &str,
) -> Option<&'static str> {
    answers.iter().find(|(f, _)| *f == function).unwrap().1
}

#[test]
fn an_event_beyond_eventbridge_s_256_kb_is_parked_as_too_large() {
    with_harness(async |harness| {
        let body = result_of(&harness.task, "acme", json!("x".repeat(300 * 1024)));
        let answers = harness.event(&body).await.unwrap();
        assert!(
            answers
                .iter()
                .all(|(_, code)| *code == Some("EVENT_TOO_LARGE")),
            "{answers:?}"
        );
        assert_eq!(stored(harness).await.status, Status::Running);
    });
}

#[test]
fn an_output_that_would_not_fit_its_events_is_parked_and_the_task_keeps_running() {
    with_harness(async |harness| {
        // Inside EventBridge's limit, yet TaskSucceeded could not carry it with the envelope,
        // and the item would hold it beside the input.
        let body = result_of(&harness.task, "acme", json!("x".repeat(200 * 1024)));
        let answers = harness.event(&body).await.unwrap();
        assert_eq!(answer_of(&answers, "on-result"), Some("INVALID_DETAIL"));
        assert_eq!(stored(harness).await.status, Status::Running);
    });
}

#[test]
fn a_result_for_an_unknown_task_or_another_tenant_s_task_is_acknowledged_and_changes_nothing() {
    with_harness(async |harness| {
        let mut unknown = harness.task.clone();
        unknown.id = baton_domain::TaskId::from_uuid(uuid::Uuid::now_v7());
        for body in [
            result_of(&unknown, "acme", json!(1)),
            result_of(&harness.task, "globex", json!(1)),
        ] {
            let answers = harness.event(&body).await.unwrap();
            assert_eq!(answer_of(&answers, "on-result"), None, "acknowledged");
            let task = stored(harness).await;
            assert_eq!((task.status, task.version), (Status::Running, 2));
        }
        let globex = Tenant::parse("globex").unwrap();
        assert_eq!(
            harness.baton.task(&globex, &harness.task.id).await.unwrap(),
            None
        );
    });
}

#[test]
fn another_tenant_s_task_and_an_unknown_task_are_not_found_through_graphql() {
    with_harness(async |harness| {
        let id = harness.task.id;
        let cancel =
            json!({"query": format!("mutation {{ cancelTask(id: \"{id}\") {{ status }} }}")});
        let (_, answer) = harness
            .graphql("globex", &cancel.to_string())
            .await
            .unwrap();
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{answer}"
        );
        assert_eq!(stored(harness).await.status, Status::Running);
        let unknown = uuid::Uuid::now_v7();
        let read = json!({"query": format!("{{ task(id: \"{unknown}\") {{ status }} }}")});
        let (_, answer) = harness.graphql("acme", &read.to_string()).await.unwrap();
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{answer}"
        );
        // The owner's cancel goes through.
        let (status, answer) = harness.graphql("acme", &cancel.to_string()).await.unwrap();
        assert_eq!(
            (status, &answer["data"]["cancelTask"]["status"]),
            (200, &json!("CANCELLED"))
        );
    });
}
