//! Payloads at and past every documented cap, against the emulator's DynamoDB: each is either
//! stored or refused at the edge with a code, never lost, never `INTERNAL`, never a write the
//! store refuses (`STORE_REJECTED`) or an infrastructure failure.
//!
//! Caps: `input` 64 KiB and a result 192 KiB (the larger of JSON and stored size), 31 levels of
//! nesting, object keys of 1 byte to 64 KB, numbers within DynamoDB's range. A failed attempt's
//! error is cleared by a later success, so the largest input, error and output fit one item.
//! `BATON_PAYLOAD_CASES` sets how many payloads each property tries (24 by default).

use std::sync::Arc;

use anyhow::Result;
use async_graphql::Request;
use baton_app::Caller;
use baton_domain::{ProjectId, Status, Task, Tenant, stored_bytes};
use baton_tests::{Sandbox, eventbridge_event, sqs_batch, unique};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

const KIB: usize = 1024;

fn runner() -> TestRunner {
    let cases = std::env::var("BATON_PAYLOAD_CASES").map_or(24, |n| n.parse().unwrap());
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// `levels` nested arrays or objects around a string.
fn nested(levels: usize, objects: bool) -> Value {
    (0..levels).fold(json!("core"), |inner, _| match objects {
        true => json!({"k": inner}),
        false => json!([inner]),
    })
}

/// Payloads near a cap of `cap` bytes and near every other bound DynamoDB has.
fn payloads(cap: usize) -> impl Strategy<Value = Value> {
    let near = move |width: usize| (cap - width)..=(cap + width);
    prop_oneof![
        // Text around the cap as JSON.
        near(64).prop_map(|n| json!({"text": "x".repeat(n.saturating_sub(12))})),
        // Small numbers: three bytes stored for every two of JSON.
        near(3 * KIB).prop_map(|n| Value::Array(vec![json!(7); n / 3])),
        // Escaped text: larger as JSON than stored.
        near(3 * KIB).prop_map(|n| json!("\"".repeat(n / 2))),
        // Nesting around 31 levels, of arrays or objects.
        (26usize..=36, any::<bool>()).prop_map(|(levels, objects)| nested(levels, objects)),
        // Keys: empty somewhere, or as long as text may be.
        (0usize..8).prop_map(|depth| {
            let mut value = json!({"": "empty key"});
            for _ in 0..depth {
                value = json!({"k": value});
            }
            value
        }),
        // Numbers inside and outside DynamoDB's range.
        prop::sample::select(vec![1e125, 1e126, 1e-129, 1e-131, 1e300, -1e-200, 0.0])
            .prop_map(|n| json!({"n": n})),
        // Many keys.
        (1usize..4000).prop_map(|n| {
            let fields: Map<String, Value> = (0..n).map(|i| (format!("k{i}"), json!(i))).collect();
            Value::Object(fields)
        }),
    ]
}

/// A generated payload, shown by its shape when a case fails (the value itself is too large to
/// print).
#[derive(Clone)]
struct Payload(Value);

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_vec(&self.0).map_or(0, |json| json.len());
        let text = self.0.to_string();
        let start: String = text.chars().take(60).collect();
        write!(
            f,
            "{json} bytes as JSON, {} stored: {start}…",
            stored_bytes(&self.0)
        )
    }
}

/// Runs `check` on every payload near `cap`, all on one sandbox's service.
fn property(cap: usize, check: impl AsyncCheck) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sandbox = Arc::new(runtime.block_on(Sandbox::new()).unwrap());
    let outcome = runner().run(&payloads(cap).prop_map(Payload), |payload| {
        runtime
            .block_on(check.check(&sandbox, payload.0))
            .map_err(|e| TestCaseError::fail(format!("{e:#}")))
    });
    outcome.unwrap();
}

trait AsyncCheck {
    async fn check(&self, sandbox: &Sandbox, payload: Value) -> Result<()>;
}

/// Whether two values are the same JSON, numbers compared by value: DynamoDB keeps a number, not
/// its spelling (`0.0` comes back as `0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The one task of `tenant` in the sandbox, if it has one.
async fn only_task(sandbox: &Sandbox, tenant: &str) -> Result<Option<Task>> {
    let query = baton_app::TaskQuery::project(Tenant::parse(tenant)?, ProjectId::parse("p")?, 2);
    let mut page = sandbox.baton.tasks(&query).await?;
    assert!(page.tasks.len() <= 1);
    Ok(page.tasks.pop())
}

struct SubmitEvents;

impl AsyncCheck for SubmitEvents {
    async fn check(&self, sandbox: &Sandbox, input: Value) -> Result<()> {
        let tenant = unique("t");
        let detail = json!({"tenant": tenant, "project": "p", "name": "n", "tier": "gpu",
            "input": input});
        let event = eventbridge_event("SubmitTask", &unique("e"), detail);
        let batch = baton_fn_submit::handle(&sandbox.baton, sqs_batch(&[event])).await;
        let stored = only_task(sandbox, &tenant).await?;
        match (batch.failed.as_slice(), stored) {
            ([], Some(task)) => anyhow::ensure!(same(&task.input, &input), "the input changed"),
            ([refused], None) => {
                let code = refused.error.code();
                anyhow::ensure!(code == "INVALID_SUBMISSION", "refused as {code}");
            }
            (failed, stored) => {
                let codes: Vec<&str> = failed.iter().map(|f| f.error.code()).collect();
                anyhow::bail!("failed {codes:?}, stored: {}", stored.is_some())
            }
        }
        Ok(())
    }
}

struct SubmitThroughGraphql;

impl AsyncCheck for SubmitThroughGraphql {
    async fn check(&self, sandbox: &Sandbox, input: Value) -> Result<()> {
        let tenant = unique("t");
        let schema = baton_graphql::schema(sandbox.baton.clone(), Default::default());
        let caller = Caller {
            tenant: Tenant::parse(&tenant)?,
            subject: "ada".into(),
            admin: false,
        };
        let mutation = "mutation($input: JSON) { submitTask(input: {projectId: \"p\", \
            name: \"n\", tier: \"gpu\", input: $input}) { id } }";
        let request = Request::new(mutation)
            .variables(async_graphql::Variables::from_json(json!({"input": input})))
            .data(caller);
        let response = serde_json::to_value(schema.execute(request).await)?;
        let stored = only_task(sandbox, &tenant).await?;
        let code = response["errors"][0]["extensions"]["code"].as_str();
        match (code, stored) {
            (None, Some(task)) => anyhow::ensure!(same(&task.input, &input), "the input changed"),
            (Some("INVALID_INPUT"), None) => {
                let field = &response["errors"][0]["extensions"]["field"];
                anyhow::ensure!(field == "input", "{response}");
            }
            (code, stored) => {
                let message = &response["errors"][0]["message"];
                anyhow::bail!("{code:?} ({message}), stored: {}", stored.is_some())
            }
        }
        Ok(())
    }
}

/// A result for the sandbox's running task: `output` as a success, or as an error's message.
struct Results;

impl AsyncCheck for Results {
    async fn check(&self, sandbox: &Sandbox, output: Value) -> Result<()> {
        // A project of its own: a refused result leaves its task running, holding a slot.
        let task = sandbox.running(&unique("p")).await?;
        let answer = |detail: Value| {
            let mut base = json!({"tenant": "acme", "task_id": task.id, "attempt": 1,
                "lease": task.lease});
            base.as_object_mut()
                .unwrap()
                .extend(detail.as_object().unwrap().clone());
            eventbridge_event("TaskResult", &unique("e"), base)
        };
        let message = output.to_string();
        for detail in [
            json!({"status": "succeeded", "output": output}),
            json!({"status": "failed", "error": {"code": "E", "message": message}}),
        ] {
            let batch =
                baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[answer(detail)])).await;
            let now = sandbox.reload(&task).await?;
            match batch.failed.as_slice() {
                [] => {
                    anyhow::ensure!(now.version == task.version + 1, "acknowledged, not stored");
                    let kept = now.output.as_ref().is_none_or(|kept| same(kept, &output));
                    anyhow::ensure!(kept, "the output changed");
                }
                [refused] => {
                    // Out of bounds, or larger than any event EventBridge delivers.
                    let code = refused.error.code();
                    let coded = ["INVALID_DETAIL", "EVENT_TOO_LARGE"].contains(&code);
                    anyhow::ensure!(coded, "refused as {code}");
                    anyhow::ensure!(now == task, "a refused result moved the task");
                }
                failed => {
                    let codes: Vec<&str> = failed.iter().map(|f| f.error.code()).collect();
                    anyhow::bail!("failed {codes:?}")
                }
            }
            if now.status != Status::Running {
                break;
            }
        }
        Ok(())
    }
}

#[test]
fn submissions_on_the_bus_are_stored_whole_or_refused_with_a_code() {
    property(64 * KIB, SubmitEvents);
}

#[test]
fn submissions_through_graphql_are_stored_whole_or_refused_with_a_code() {
    property(64 * KIB, SubmitThroughGraphql);
}

#[test]
fn results_are_committed_or_refused_with_a_code_and_the_task_stays_open() {
    property(192 * KIB, Results);
}

/// Submits `input` (two attempts), fails the first attempt with `error`'s text as its message
/// and succeeds the second with `output`: every step must commit.
async fn in_turn(sandbox: &Sandbox, input: Value, error: String, output: Value) -> Result<()> {
    let tenant = unique("t");
    let detail = json!({"tenant": tenant, "project": "p", "name": "n", "tier": "gpu",
        "input": input, "retry": {"max_attempts": 2, "backoff_seconds": 1}});
    let event = eventbridge_event("SubmitTask", &unique("e"), detail);
    let batch = baton_fn_submit::handle(&sandbox.baton, sqs_batch(&[event])).await;
    anyhow::ensure!(batch.failed.is_empty(), "the submission failed");
    let task = only_task(sandbox, &tenant).await?.expect("stored");
    let answer = |attempt: u32, lease: Option<baton_domain::Lease>, outcome: Value| {
        let mut detail = json!({"tenant": tenant, "task_id": task.id, "attempt": attempt,
            "lease": lease});
        detail
            .as_object_mut()
            .unwrap()
            .extend(outcome.as_object().unwrap().clone());
        eventbridge_event("TaskResult", &unique("e"), detail)
    };
    let outcomes = [
        json!({"status": "failed", "error": {"code": "BIG", "message": error}}),
        json!({"status": "succeeded", "output": output}),
    ];
    for (attempt, outcome) in (1..).zip(outcomes) {
        // The first attempt was dispatched at submission; the retry's timer is delivered here.
        let dispatch = baton_domain::Command::Dispatch {
            attempt,
            lease: baton_domain::Lease::from_random([attempt as u8; 16]),
        };
        sandbox.clock.advance(chrono::Duration::seconds(5));
        sandbox.run(&task, &dispatch).await?;
        let lease = sandbox.reload(&task).await?.lease;
        let batch = baton_fn_on_result::handle(
            &sandbox.baton,
            sqs_batch(&[answer(attempt, lease, outcome)]),
        )
        .await;
        let codes: Vec<&str> = batch.failed.iter().map(|f| f.error.code()).collect();
        anyhow::ensure!(codes.is_empty(), "attempt {attempt} failed {codes:?}");
    }
    let task = sandbox.reload(&task).await?;
    anyhow::ensure!(task.status == Status::Succeeded && task.error.is_none());
    Ok(())
}

#[tokio::test]
async fn the_largest_input_error_and_output_fit_one_task_in_turn() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let text = |c: &str, n: usize| c.repeat(n);
    // As text, near every cap.
    let input = json!({"text": text("i", 60 * KIB)});
    in_turn(
        &sandbox,
        input,
        text("e", 180 * KIB),
        json!(text("o", 180 * KIB)),
    )
    .await?;
    // As small numbers, which DynamoDB sizes at half as much again as their JSON.
    let numbers = |stored: usize| Value::Array(vec![json!(7); stored / 3]);
    in_turn(
        &sandbox,
        numbers(63 * KIB),
        text("e", 180 * KIB),
        numbers(190 * KIB),
    )
    .await?;
    Ok(())
}
