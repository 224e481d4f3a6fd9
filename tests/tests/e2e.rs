//! End-to-end tests against the stack `make test` deployed into the emulator. They act only as
//! clients and workers do: `PutEvents` on the bus, GraphQL over the API Gateway URL, and a worker
//! queue subscribed to `TaskReady` by a rule. Each test uses its own tenant and tier.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use baton_tests::{Stack, WorkerQueue, eventually, unique};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(30);

/// The whole GraphQL response, errors included.
async fn graphql_response(
    stack: &Stack,
    tenant: &str,
    query: &str,
    variables: Value,
) -> Result<Value> {
    Ok(reqwest::Client::new()
        .post(stack.graphql_url())
        .header("x-baton-tenant", tenant)
        .json(&json!({"query": query, "variables": variables}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// The `data` of a GraphQL response that must have no errors.
async fn graphql(stack: &Stack, tenant: &str, query: &str, variables: Value) -> Result<Value> {
    let response = graphql_response(stack, tenant, query, variables).await?;
    if let Some(errors) = response.get("errors") {
        bail!("GraphQL errors: {errors}");
    }
    Ok(response["data"].clone())
}

const TASK: &str = "query($id: ID!) { task(id: $id) { status version attempt output
    history { from to cause version attempt } } }";

async fn task(stack: &Stack, tenant: &str, id: &str) -> Result<Value> {
    Ok(graphql(stack, tenant, TASK, json!({"id": id})).await?["task"].clone())
}

async fn task_reaches(stack: &Stack, tenant: &str, id: &str, status: &str) -> Result<Value> {
    eventually(&format!("task {id} to be {status}"), PATIENCE, || async {
        let task = task(stack, tenant, id).await?;
        Ok((task["status"] == status).then_some(task))
    })
    .await
}

/// Submits a task of `tier` with the extra input fields `fields`; answers its id and status.
async fn submit_through_graphql(
    stack: &Stack,
    tenant: &str,
    tier: &str,
    fields: &str,
) -> Result<(String, String)> {
    let mutation = format!(
        "mutation($tier: String!) {{ submitTask(input: {{projectId: \"e2e\", name: \"gql\", tier: $tier, {fields}}}) {{ id status }} }}"
    );
    let submitted = graphql(stack, tenant, &mutation, json!({"tier": tier})).await?;
    let field = |name: &str| {
        submitted["submitTask"][name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("submitTask.{name} in {submitted}"))
    };
    Ok((field("id")?, field("status")?))
}

/// A task of a fresh tenant and tier submitted through the bus, once its first `TaskReady` reaches
/// the tier's worker queue: `(tenant, worker queue, TaskReady detail)`.
async fn ready_task(stack: &Stack, extra: Value) -> Result<(String, WorkerQueue, Value)> {
    let (tenant, tier) = (unique("acme"), unique("gpu"));
    let worker = stack.worker_queue(&tier).await?;
    stack
        .put_event("SubmitTask", &submission(&tenant, &tier, extra))
        .await?;
    let ready = worker.next_ready(PATIENCE).await?;
    assert_eq!(ready["tier"].as_str(), Some(tier.as_str()));
    Ok((tenant, worker, ready))
}

fn causes(task: &Value) -> Vec<String> {
    task["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| entry["cause"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn result(tenant: &str, ready: &Value, outcome: Value) -> Value {
    let mut detail =
        json!({"tenant": tenant, "task_id": ready["task_id"], "attempt": ready["attempt"]});
    detail
        .as_object_mut()
        .unwrap()
        .extend(outcome.as_object().unwrap().clone());
    detail
}

fn submission(tenant: &str, tier: &str, extra: Value) -> Value {
    let mut detail = json!({"tenant": tenant, "project": "e2e", "name": "render", "tier": tier,
        "input": {"doc": 42}});
    detail
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    detail
}

#[tokio::test]
async fn a_task_driven_by_events_goes_submit_ready_result_succeeded_with_each_transition_once()
-> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, _worker, ready) = ready_task(&stack, json!({})).await?;
    assert_eq!(ready["attempt"], json!(1));
    assert_eq!(ready["input"], json!({"doc": 42}));
    assert_eq!(ready["version"], json!(2));

    let id = ready["task_id"].as_str().context("task_id")?;
    stack
        .put_event(
            "TaskResult",
            &result(
                &tenant,
                &ready,
                json!({"status": "succeeded", "output": {"pages": 3}}),
            ),
        )
        .await?;
    let done = task_reaches(&stack, &tenant, id, "SUCCEEDED").await?;
    assert_eq!(done["output"], json!({"pages": 3}));
    assert_eq!(
        causes(&done),
        ["submitted", "dispatched", "result:succeeded"]
    );
    let versions: Vec<u64> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    stack.teardown().await
}

#[tokio::test]
async fn a_task_submitted_through_graphql_runs_to_success() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, tier) = (unique("acme"), unique("gpu"));
    let worker = stack.worker_queue(&tier).await?;
    let (id, status) = submit_through_graphql(&stack, &tenant, &tier, "input: {a: 1}").await?;
    assert_eq!(status, "SCHEDULED");

    let ready = worker.next_ready(PATIENCE).await?;
    assert_eq!(ready["task_id"].as_str(), Some(id.as_str()));
    stack
        .put_event(
            "TaskResult",
            &result(
                &tenant,
                &ready,
                json!({"status": "succeeded", "output": "ok"}),
            ),
        )
        .await?;
    task_reaches(&stack, &tenant, &id, "SUCCEEDED").await?;

    let listed = graphql(
        &stack,
        &tenant,
        "{ tasks(projectId: \"e2e\", status: SUCCEEDED, first: 5) { edges { node { id } cursor } pageInfo { hasNextPage } } }",
        json!({}),
    )
    .await?;
    assert_eq!(
        listed["tasks"]["edges"][0]["node"]["id"].as_str(),
        Some(id.as_str())
    );
    let refused = graphql_response(
        &stack,
        &tenant,
        "mutation($id: ID!) { cancelTask(id: $id) { status } }",
        json!({"id": id}),
    )
    .await?;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "INVALID_TRANSITION",
        "{refused}"
    );
    // Another tenant sees nothing of it.
    assert_eq!(task(&stack, &unique("other"), &id).await?, Value::Null);
    stack.teardown().await
}

#[tokio::test]
async fn a_result_delivered_twice_makes_one_transition_and_one_history_entry() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, _worker, ready) = ready_task(&stack, json!({})).await?;
    let id = ready["task_id"].as_str().context("task_id")?;
    let done = result(&tenant, &ready, json!({"status": "succeeded", "output": 1}));
    stack.put_event("TaskResult", &done).await?;
    stack.put_event("TaskResult", &done).await?;
    task_reaches(&stack, &tenant, id, "SUCCEEDED").await?;
    // Give the duplicate time to be processed, then check nothing moved twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let task = task(&stack, &tenant, id).await?;
    assert_eq!(task["version"], json!(3));
    assert_eq!(
        causes(&task),
        ["submitted", "dispatched", "result:succeeded"]
    );
    stack.teardown().await
}

#[tokio::test]
async fn a_failed_attempt_is_retried_after_backoff_and_then_succeeds() -> Result<()> {
    let stack = Stack::deployed().await?;
    let retry = json!({"retry": {"max_attempts": 3, "backoff_seconds": 2}});
    let (tenant, worker, first) = ready_task(&stack, retry).await?;
    let failed = json!({"status": "failed", "error": {"code": "FLAKY", "message": "try again"}});
    stack
        .put_event("TaskResult", &result(&tenant, &first, failed))
        .await?;

    let second = worker.next_ready(PATIENCE).await?;
    assert_eq!(
        (second["attempt"].as_u64(), second["version"].as_u64()),
        (Some(2), Some(4))
    );
    stack
        .put_event(
            "TaskResult",
            &result(&tenant, &second, json!({"status": "succeeded"})),
        )
        .await?;
    let id = second["task_id"].as_str().context("task_id")?;
    let done = task_reaches(&stack, &tenant, id, "SUCCEEDED").await?;
    assert_eq!(
        causes(&done),
        [
            "submitted",
            "dispatched",
            "result:failed",
            "dispatched",
            "result:succeeded"
        ]
    );
    stack.teardown().await
}

#[tokio::test]
async fn a_task_cancelled_before_its_due_time_is_never_dispatched() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, tier) = (unique("acme"), unique("gpu"));
    let worker = stack.worker_queue(&tier).await?;
    let (id, _) = submit_through_graphql(&stack, &tenant, &tier, "delaySeconds: 8").await?;
    stack
        .put_event(
            "CancelTask",
            &json!({"tenant": tenant, "task_id": id, "reason": "not needed"}),
        )
        .await?;
    let cancelled = task_reaches(&stack, &tenant, &id, "CANCELLED").await?;
    assert_eq!(causes(&cancelled), ["submitted", "cancelled"]);

    // Wait past the due time: the timer fires, and is rejected.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(
        worker.all_ready().await?.is_empty(),
        "no TaskReady for a cancelled task"
    );
    assert_eq!(task(&stack, &tenant, &id).await?["version"], json!(2));

    // Cancelling again through GraphQL is a no-op that returns the task.
    let again = graphql(
        &stack,
        &tenant,
        "mutation($id: ID!) { cancelTask(id: $id) { status version } }",
        json!({"id": id}),
    )
    .await?;
    assert_eq!(
        again["cancelTask"],
        json!({"status": "CANCELLED", "version": 2})
    );
    stack.teardown().await
}

#[tokio::test]
async fn a_malformed_event_ends_in_the_dlq_while_the_next_good_event_is_processed() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, _worker, ready) = ready_task(&stack, json!({})).await?;
    let id = ready["task_id"].as_str().context("task_id")?;

    let marker = unique("malformed");
    stack
        .put_raw(
            "CancelTask",
            &json!({"tenant": marker, "task_id": 42}).to_string(),
        )
        .await?;
    stack
        .put_event("CancelTask", &json!({"tenant": tenant, "task_id": id}))
        .await?;
    task_reaches(&stack, &tenant, id, "CANCELLED").await?;

    let parked = eventually(
        "the malformed event in the cancel DLQ",
        Duration::from_secs(60),
        || async {
            let parked = stack.take_from("CancelDlqUrl").await?;
            Ok(parked.into_iter().find(|body| body.contains(&marker)))
        },
    )
    .await?;
    let envelope: Value = serde_json::from_str(&parked)?;
    assert_eq!(envelope["detail-type"], "CancelTask");
    stack.teardown().await
}
