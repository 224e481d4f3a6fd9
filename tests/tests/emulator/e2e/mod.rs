//! End-to-end tests against the stack `make test` deployed into the emulator. They act only as
//! clients and workers do: `PutEvents` on the bus, GraphQL over the API Gateway URL, and a worker
//! queue subscribed to `TaskReady` by a rule. Each test uses its own tenant and tier.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use baton_tests::{LiveClient, Stack, WorkerQueue, eventually, unique};
use serde_json::{Value, json};

mod trust;

const PATIENCE: Duration = Duration::from_secs(30);

/// The whole GraphQL response, errors included.
async fn graphql_response(
    stack: &Stack,
    tenant: &str,
    query: &str,
    variables: Value,
) -> Result<Value> {
    stack.graphql_response(tenant, query, variables).await
}

/// The `data` of a GraphQL response that must have no errors.
async fn graphql(stack: &Stack, tenant: &str, query: &str, variables: Value) -> Result<Value> {
    stack.graphql(tenant, query, variables).await
}

const TASK: &str = "query($id: ID!) { task(id: $id) { status version attempt output
    history { from to cause version attempt } } }";

/// The task, or null while the caller cannot see it (not yet created, or not theirs).
async fn task(stack: &Stack, tenant: &str, id: &str) -> Result<Value> {
    let response = graphql_response(stack, tenant, TASK, json!({"id": id})).await?;
    match code(&response) {
        "" => Ok(response["data"]["task"].clone()),
        "NOT_FOUND" => Ok(Value::Null),
        _ => bail!("GraphQL errors: {response}"),
    }
}

/// The `extensions.code` of a response's first error ("" when there is none).
fn code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
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

/// A fresh tenant, a fresh tier, and a worker queue of that tier: each test's own corner of the
/// shared stack.
async fn fresh_worker(stack: &Stack) -> Result<(String, String, WorkerQueue)> {
    let (tenant, tier) = (unique("acme"), unique("gpu"));
    let worker = stack.worker_queue(&tier).await?;
    Ok((tenant, tier, worker))
}

/// A task of a fresh tenant and tier submitted through the bus, once its first `TaskReady` reaches
/// the tier's worker queue: `(tenant, worker queue, TaskReady detail)`.
async fn ready_task(stack: &Stack, extra: Value) -> Result<(String, WorkerQueue, Value)> {
    let (tenant, tier, worker) = fresh_worker(stack).await?;
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

/// A worker's answer to `ready`, with the attempt's lease.
fn result(tenant: &str, ready: &Value, outcome: Value) -> Value {
    let mut detail = json!({"tenant": tenant, "task_id": ready["task_id"],
        "attempt": ready["attempt"], "lease": ready["lease"]});
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
    Ok(())
}

#[tokio::test]
async fn a_task_submitted_through_graphql_runs_to_success() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, tier, worker) = fresh_worker(&stack).await?;
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
        "{ tasks(filter: {projectId: \"e2e\", statuses: [SUCCEEDED]}, first: 5) { edges { node { id } cursor } pageInfo { hasNextPage } } }",
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
    Ok(())
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
    Ok(())
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
    Ok(())
}

#[tokio::test]
async fn a_task_cancelled_before_its_due_time_is_never_dispatched() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, tier, worker) = fresh_worker(&stack).await?;
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
    Ok(())
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
    Ok(())
}

#[tokio::test]
async fn every_query_and_mutation_answers_its_tenant_and_no_other() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, stranger, tier) = (unique("acme"), unique("globex"), unique("gpu"));
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let (kept, _) = submit_through_graphql(&stack, &tenant, &tier, "delaySeconds: 3600").await?;
    let (cancelled, _) =
        submit_through_graphql(&stack, &tenant, &tier, "delaySeconds: 3600").await?;
    let cancel =
        "mutation($id: ID!) { cancelTask(id: $id, reason: \"not needed\") { status reason } }";
    let done = graphql(&stack, &tenant, cancel, json!({"id": cancelled})).await?;
    assert_eq!(
        done["cancelTask"],
        json!({"status": "CANCELLED", "reason": "not needed"})
    );

    let tasks = "query($filter: TaskFilter!) { tasks(filter: $filter, first: 10) {
        edges { cursor node { id status } } pageInfo { hasNextPage endCursor } } }";
    let filter = |statuses: Value| {
        json!({"filter": {"projectId": "e2e", "statuses": statuses,
        "tier": tier, "submittedAfter": before.to_rfc3339()}})
    };
    let scheduled = graphql(&stack, &tenant, tasks, filter(json!(["SCHEDULED"]))).await?;
    let edges = scheduled["tasks"]["edges"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(edges.len(), 1, "{scheduled}");
    assert_eq!(edges[0]["node"]["id"], json!(kept));
    let all = graphql(&stack, &tenant, tasks, filter(Value::Null)).await?;
    assert_eq!(
        all["tasks"]["edges"].as_array().map(Vec::len),
        Some(2),
        "{all}"
    );

    // The counters follow the table's stream, a moment behind the moves.
    let status = "query { projectStatus(projectId: \"e2e\") { total counts { status count } } }";
    let counts = eventually("the project's counters", PATIENCE, || async {
        let counts = graphql(&stack, &tenant, status, json!({})).await?;
        let counted = count_of(&counts, "CANCELLED") == 1;
        Ok(counted.then_some(counts))
    })
    .await?;
    assert_eq!(count_of(&counts, "SCHEDULED"), 1, "{counts}");
    assert_eq!(counts["projectStatus"]["total"], 2);

    let history = "query($id: ID!) { taskHistory(id: $id) { from to cause version } }";
    let entries = graphql(&stack, &tenant, history, json!({"id": cancelled})).await?;
    assert_eq!(
        entries["taskHistory"],
        json!([
        {"from": null, "to": "SCHEDULED", "cause": "submitted", "version": 1},
        {"from": "SCHEDULED", "to": "CANCELLED", "cause": "cancelled", "version": 2}])
    );

    // Another tenant sees and touches nothing of it.
    for (query, variables) in [
        (TASK, json!({"id": kept})),
        (history, json!({"id": kept})),
        (cancel, json!({"id": kept})),
    ] {
        let response = graphql_response(&stack, &stranger, query, variables).await?;
        assert_eq!(code(&response), "NOT_FOUND", "{response}");
    }
    let theirs = graphql(&stack, &stranger, tasks, filter(Value::Null)).await?;
    assert_eq!(theirs["tasks"]["edges"], json!([]));
    let theirs = graphql(&stack, &stranger, status, json!({})).await?;
    assert_eq!(theirs["projectStatus"]["total"], 0);
    assert_eq!(task(&stack, &tenant, &kept).await?["status"], "SCHEDULED");

    // No token: nothing. Introspection is off outside the local stage; limits hold.
    let anonymous: Value = reqwest::Client::new()
        .post(stack.graphql_url())
        .json(&json!({"query": TASK, "variables": {"id": kept}}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(code(&anonymous), "UNAUTHENTICATED", "{anonymous}");
    let introspection = graphql_response(
        &stack,
        &tenant,
        "{ __schema { queryType { name } } }",
        json!({}),
    )
    .await?;
    assert!(
        introspection["data"]["__schema"].is_null(),
        "{introspection}"
    );
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }";
    let refused = graphql_response(&stack, &tenant, deep, json!({})).await?;
    assert_eq!(code(&refused), "LIMIT_EXCEEDED", "{refused}");
    assert_eq!(refused["errors"][0]["extensions"]["limit"], "depth");
    Ok(())
}

#[tokio::test]
async fn a_websocket_subscriber_sees_its_task_move_and_another_tenant_sees_nothing() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, _worker, ready) = ready_task(&stack, json!({})).await?;
    let id = ready["task_id"].as_str().unwrap().to_owned();
    let stranger = unique("globex");
    let mut ours = LiveClient::connect(&stack.websocket_url(), &stack.token(&tenant)).await?;
    let mut theirs = LiveClient::connect(&stack.websocket_url(), &stack.token(&stranger)).await?;
    let updated = "subscription($id: ID!) { taskUpdated(id: $id) { id status version } }";
    let project =
        "subscription { projectTasks(projectId: \"e2e\", statuses: [SUCCEEDED]) { id status } }";
    ours.subscribe("task", updated, json!({"id": id})).await?;
    let current = ours.next(PATIENCE).await?;
    assert_eq!(
        current["payload"]["data"]["taskUpdated"]["status"], "RUNNING",
        "{current}"
    );
    ours.subscribe("project", project, json!({})).await?;
    theirs.subscribe("task", updated, json!({"id": id})).await?;
    let refused = theirs.next(PATIENCE).await?;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "NOT_FOUND");
    theirs.subscribe("project", project, json!({})).await?;

    stack
        .put_event(
            "TaskResult",
            &result(
                &tenant,
                &ready,
                json!({"status": "succeeded", "output": {"ok": true}}),
            ),
        )
        .await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = ours.next(PATIENCE).await?;
        assert_eq!(message["type"], "next", "{message}");
        seen.push(message);
    }
    let task = seen
        .iter()
        .find(|m| m["id"] == "task")
        .context("a taskUpdated message")?;
    assert_eq!(
        task["payload"]["data"]["taskUpdated"]["status"], "SUCCEEDED",
        "{task}"
    );
    assert_eq!(task["payload"]["data"]["taskUpdated"]["version"], 3);
    let listed = seen
        .iter()
        .find(|m| m["id"] == "project")
        .context("a projectTasks message")?;
    assert_eq!(listed["payload"]["data"]["projectTasks"]["id"], json!(id));
    assert!(
        theirs.stays_quiet(Duration::from_secs(2)).await,
        "another tenant got an update"
    );
    Ok(())
}

const DISPATCHES: &str = "query($id: ID!) { task(id: $id) { status history { to cause at } } }";

/// When a task was dispatched and when it finished, from its history.
async fn run_span(stack: &Stack, tenant: &str, id: &str) -> Result<(String, String)> {
    let task = graphql(stack, tenant, DISPATCHES, json!({"id": id})).await?;
    let at = |cause: &str| {
        task["task"]["history"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["cause"] == cause)
            .and_then(|entry| entry["at"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("{cause} in {task}"))
    };
    Ok((at("dispatched")?, at("result:succeeded")?))
}

/// A worker that answers every `TaskReady` of its queue with success after `hold`, until
/// `count` distinct tasks are answered; `watch` runs between polls.
async fn answer_slowly<F, Fut>(
    stack: &Stack,
    tenant: &str,
    worker: &WorkerQueue,
    count: usize,
    hold: Duration,
    mut watch: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let started = std::time::Instant::now();
    let mut holding: Vec<(std::time::Instant, Value)> = Vec::new();
    let mut answered = std::collections::HashSet::new();
    while answered.len() < count {
        if started.elapsed() > Duration::from_secs(240) {
            bail!("only {} of {count} tasks answered", answered.len());
        }
        for ready in worker.all_ready().await? {
            holding.push((std::time::Instant::now() + hold, ready));
        }
        let (done, waiting): (Vec<_>, Vec<_>) = holding
            .into_iter()
            .partition(|(until, _)| *until <= std::time::Instant::now());
        holding = waiting;
        for (_, ready) in done {
            let outcome = json!({"status": "succeeded", "output": {}});
            stack
                .put_event("TaskResult", &result(tenant, &ready, outcome))
                .await?;
            answered.insert(ready["task_id"].as_str().unwrap_or_default().to_owned());
        }
        watch().await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    Ok(())
}

const PROJECT_STATUS: &str = "{ projectStatus(projectId: \"e2e\") { running limit queued paused
    heldBy total counts { status count } killSwitch { engaged present } } }";

fn count_of(status: &Value, name: &str) -> u64 {
    status["projectStatus"]["counts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["status"] == name)
        .and_then(|c| c["count"].as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_project_limited_to_three_never_runs_more_and_a_late_urgent_task_goes_first() -> Result<()>
{
    let stack = Stack::deployed().await?;
    let (tenant, tier, worker) = fresh_worker(&stack).await?;
    let limit = graphql(
        &stack,
        &tenant,
        "mutation { setProjectLimit(projectId: \"e2e\", limit: 3, reason: \"e2e\") { limit } }",
        json!({}),
    )
    .await?;
    assert_eq!(limit["setProjectLimit"]["limit"], 3);
    // All due at one instant a few seconds ahead, so the urgent one, submitted last, waits with
    // the others.
    let due = (chrono::Utc::now() + chrono::Duration::seconds(8)).to_rfc3339();
    let fields = format!("dueAt: \"{due}\"");
    let submits = (0..30).map(|_| submit_through_graphql(&stack, &tenant, &tier, &fields));
    let normal: Vec<String> = futures_util::future::join_all(submits)
        .await
        .into_iter()
        .map(|submitted| submitted.map(|(id, _)| id))
        .collect::<Result<_>>()?;
    let urgent_fields = format!("{fields}, priority: 500");
    let (urgent, _) = submit_through_graphql(&stack, &tenant, &tier, &urgent_fields).await?;
    assert!(
        chrono::Utc::now().to_rfc3339() < due,
        "submitted before they are due"
    );

    // The worker answers nothing until all but the first three wait, the urgent one with them:
    // its place among them is what this test is about, not how fast on-due is.
    eventually("28 tasks to wait in the ready set", PATIENCE, || async {
        let status = graphql(&stack, &tenant, PROJECT_STATUS, json!({})).await?;
        Ok((status["projectStatus"]["queued"].as_u64() == Some(28)).then_some(()))
    })
    .await?;
    // Watch both the project's counter and the tasks' own states between the worker's polls.
    let running_tasks = "{ tasks(filter: {projectId: \"e2e\", statuses: [RUNNING]}, first: 100)
        { edges { node { id } } } }";
    let most = std::cell::Cell::new(0);
    answer_slowly(
        &stack,
        &tenant,
        &worker,
        31,
        // Long enough for the watch to see three running at once.
        Duration::from_millis(1500),
        || async {
            let status = graphql(&stack, &tenant, PROJECT_STATUS, json!({})).await?;
            let counted = status["projectStatus"]["running"].as_u64().unwrap_or(0);
            let listed = graphql(&stack, &tenant, running_tasks, json!({})).await?;
            let running = listed["tasks"]["edges"].as_array().map_or(0, Vec::len) as u64;
            most.set(most.get().max(running).max(counted));
            if running > 3 || counted > 3 {
                bail!("{running} tasks running ({counted} counted) at once");
            }
            Ok(())
        },
    )
    .await?;
    assert!(
        most.get() >= 2,
        "the limit was used: at most {} seen",
        most.get()
    );
    eventually("all 31 to succeed", PATIENCE, || async {
        let status = graphql(&stack, &tenant, PROJECT_STATUS, json!({})).await?;
        Ok((count_of(&status, "SUCCEEDED") == 31).then_some(()))
    })
    .await?;

    let mut spans = Vec::new();
    for id in normal.iter().chain([&urgent]) {
        spans.push((run_span(&stack, &tenant, id).await?, id == &urgent));
    }
    spans.sort();
    let position = spans.iter().position(|(_, urgent)| *urgent).unwrap();
    assert!(
        position < 4,
        "the urgent task ran {position}th; only the first three may precede it"
    );
    Ok(())
}

#[tokio::test]
async fn a_project_kill_switch_holds_its_tasks_even_when_deleted_until_disengaged() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, tier, worker) = fresh_worker(&stack).await?;
    // The project exists (its switch is created with its first task) before it is stopped.
    let (first, _) = submit_through_graphql(&stack, &tenant, &tier, "input: {n: 0}").await?;
    let ready = worker.next_ready(PATIENCE).await?;
    assert_eq!(ready["task_id"].as_str(), Some(first.as_str()));

    let engage = "mutation { engageKillSwitch(scope: {projectId: \"e2e\"}, reason: \"bad deploy\")
        { engaged present lastChange { by reason } } }";
    let engaged = graphql(&stack, &tenant, engage, json!({})).await?;
    assert_eq!(engaged["engageKillSwitch"]["engaged"], true);
    assert_eq!(
        engaged["engageKillSwitch"]["lastChange"]["reason"],
        "bad deploy"
    );
    let (held, _) = submit_through_graphql(&stack, &tenant, &tier, "input: {n: 1}").await?;
    let parked = "query($id: ID!) { task(id: $id) { status parked { gate } } }";
    eventually("the task to be parked", PATIENCE, || async {
        let task = graphql(&stack, &tenant, parked, json!({"id": held})).await?;
        Ok((task["task"]["parked"]["gate"] == "PROJECT_KILL_SWITCH").then_some(()))
    })
    .await?;

    stack
        .delete_item(&format!("KILL#{tenant}#e2e"), "SWITCH")
        .await?;
    let status = graphql(&stack, &tenant, PROJECT_STATUS, json!({})).await?;
    assert_eq!(
        status["projectStatus"]["killSwitch"],
        json!({"engaged": true, "present": false})
    );
    assert_eq!(status["projectStatus"]["heldBy"], "PROJECT_KILL_SWITCH");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        worker.all_ready().await?.is_empty(),
        "a missing switch stops dispatch"
    );
    assert_eq!(task(&stack, &tenant, &held).await?["status"], "SCHEDULED");

    let disengage = "mutation { disengageKillSwitch(scope: {projectId: \"e2e\"}, reason: \"fixed\")
        { engaged history { engaged change { reason } } } }";
    let released = graphql(&stack, &tenant, disengage, json!({})).await?;
    assert_eq!(released["disengageKillSwitch"]["engaged"], false);
    let ready = worker.next_ready(PATIENCE).await?;
    assert_eq!(ready["task_id"].as_str(), Some(held.as_str()));
    let history = graphql(
        &stack,
        &tenant,
        "{ killSwitch(scope: {projectId: \"e2e\"}) { history { engaged change { reason } } } }",
        json!({}),
    )
    .await?;
    assert_eq!(
        history["killSwitch"]["history"],
        json!([{"engaged": false, "change": {"reason": "fixed"}},
               {"engaged": true, "change": {"reason": "bad deploy"}}])
    );
    Ok(())
}

#[tokio::test]
async fn a_paused_project_parks_its_due_tasks_and_resume_drains_them_at_the_given_rate()
-> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, tier, worker) = fresh_worker(&stack).await?;
    let pause = "mutation { pauseProject(projectId: \"e2e\", reason: \"maintenance\")
        { paused pause { reason } } }";
    let paused = graphql(&stack, &tenant, pause, json!({})).await?;
    assert_eq!(paused["pauseProject"]["pause"]["reason"], "maintenance");
    let mut ids = Vec::new();
    for n in 0..6 {
        let input = format!("input: {{n: {n}}}");
        ids.push(
            submit_through_graphql(&stack, &tenant, &tier, &input)
                .await?
                .0,
        );
    }
    let status = eventually("six parked tasks", PATIENCE, || async {
        let status = graphql(&stack, &tenant, PROJECT_STATUS, json!({})).await?;
        Ok((status["projectStatus"]["queued"] == 6).then_some(status))
    })
    .await?;
    assert_eq!(status["projectStatus"]["heldBy"], "PAUSED");
    assert!(
        worker.all_ready().await?.is_empty(),
        "nothing runs while paused"
    );

    let resume = "mutation { resumeProject(projectId: \"e2e\", reason: \"done\", ratePerSecond: 2)
        { paused } }";
    let resumed = graphql(&stack, &tenant, resume, json!({})).await?;
    assert_eq!(resumed["resumeProject"]["paused"], false);
    answer_slowly(&stack, &tenant, &worker, 6, Duration::ZERO, || async {
        Ok(())
    })
    .await?;
    let mut starts = Vec::new();
    for id in &ids {
        let (start, _) = eventually("a finished task", PATIENCE, || async {
            Ok(run_span(&stack, &tenant, id).await.ok())
        })
        .await?;
        starts.push(chrono::DateTime::parse_from_rfc3339(&start)?);
    }
    starts.sort();
    let spread = starts[5] - starts[0];
    // Two per second: the six start over at least two seconds, not at once.
    assert!(
        spread >= chrono::Duration::milliseconds(1900),
        "six resumed tasks started within {spread}"
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_graphql_submits_with_one_idempotency_key_create_one_task() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, tier) = (unique("acme"), unique("gpu"));
    let fields = "input: {order: 17}, idempotencyKey: \"order-17\"";
    let submits = (0..5).map(|_| submit_through_graphql(&stack, &tenant, &tier, fields));
    let ids: std::collections::BTreeSet<String> = futures_util::future::join_all(submits)
        .await
        .into_iter()
        .map(|submitted| submitted.map(|(id, _)| id))
        .collect::<Result<_>>()?;
    assert_eq!(ids.len(), 1, "{ids:?}");

    let mutation =
        "mutation($tier: String!) { submitTask(input: {projectId: \"e2e\", name: \"gql\",
        tier: $tier, input: {order: 18}, idempotencyKey: \"order-17\"}) { id } }";
    let refused = graphql_response(&stack, &tenant, mutation, json!({"tier": tier})).await?;
    assert_eq!(code(&refused), "IDEMPOTENCY_CONFLICT");
    assert_eq!(
        refused["errors"][0]["extensions"]["existingTaskId"].as_str(),
        ids.first().map(String::as_str)
    );
    // The counters other than Running follow the table's stream: one task, once they caught up.
    eventually("the project's counters", PATIENCE, || async {
        let status = graphql(&stack, &tenant, PROJECT_STATUS, json!({})).await?;
        Ok((status["projectStatus"]["total"] == 1).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn every_queue_has_its_dlq_and_every_event_the_code_consumes_is_routed_to_its_queue()
-> Result<()> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let stack = Stack::deployed().await?;
    for queue in ["Submit", "Result", "Cancel", "Rollback", "Due", "Http"] {
        let redrive = stack
            .queue_attribute(
                &format!("{queue}QueueUrl"),
                QueueAttributeName::RedrivePolicy,
            )
            .await?;
        let redrive: Value = serde_json::from_str(&redrive)?;
        let dlq = stack
            .queue_attribute(&format!("{queue}DlqUrl"), QueueAttributeName::QueueArn)
            .await?;
        assert_eq!(
            redrive["deadLetterTargetArn"].as_str(),
            Some(dlq.as_str()),
            "{queue}"
        );
    }
    let rules = stack.rules().await?;
    let routed = |detail_type: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|(pattern, _)| {
                pattern["detail-type"]
                    .as_array()
                    .is_some_and(|types| types.iter().any(|t| t == detail_type))
                    && pattern["source"]
                        .as_array()
                        .is_none_or(|s| s.iter().any(|s| s != "baton"))
            })
            .flat_map(|(_, targets)| targets.clone())
            .collect()
    };
    let inbound = [
        ("SubmitTask", "Submit"),
        ("TaskResult", "Result"),
        ("CancelTask", "Cancel"),
        ("RollbackRequested", "Rollback"),
    ];
    for (detail_type, queue) in inbound {
        let arn = stack
            .queue_attribute(&format!("{queue}QueueUrl"), QueueAttributeName::QueueArn)
            .await?;
        assert_eq!(routed(detail_type), [arn], "{detail_type}");
    }
    Ok(())
}

/// Submits a task of `tier` in project `graph` after `depends_on`, through GraphQL; answers its id.
async fn submit_after(
    stack: &Stack,
    tenant: &str,
    tier: &str,
    depends_on: &[&str],
) -> Result<String> {
    let mutation =
        "mutation($tier: String!, $after: [ID!]) { submitTask(input: {projectId: \"graph\",
        name: \"step\", tier: $tier, dependsOn: $after, retry: {maxAttempts: 1}}) { id } }";
    let submitted = graphql(
        stack,
        tenant,
        mutation,
        json!({"tier": tier, "after": depends_on}),
    )
    .await?;
    submitted["submitTask"]["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no id in {submitted}"))
}

/// The next `n` `TaskReady` details on `worker` (several may arrive in one receive).
async fn next_ready(worker: &WorkerQueue, n: usize) -> Result<Vec<Value>> {
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut ready = Vec::new();
    while ready.len() < n {
        if std::time::Instant::now() > deadline {
            bail!("timed out with {} of {n} TaskReady events", ready.len());
        }
        ready.extend(worker.all_ready().await?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(ready)
}

/// Answers a `TaskReady` with `outcome`, with provenance naming `model`; answers the task's id.
async fn answer(
    stack: &Stack,
    tenant: &str,
    ready: &Value,
    outcome: Value,
    model: &str,
) -> Result<String> {
    let mut detail = result(tenant, ready, outcome);
    detail["provenance"] = json!({"model": model, "tokens_in": 100, "tokens_out": 10,
        "worker_id": "e2e", "artifacts": [{"uri": format!("s3://out/{}", ready["task_id"])}]});
    stack.put_event("TaskResult", &detail).await?;
    Ok(ready["task_id"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_diamond_starts_its_join_once_after_both_branches_and_a_failed_branch_cancels_it()
-> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, tier, worker) = fresh_worker(&stack).await?;
    let succeed = || json!({"status": "succeeded", "output": {"ok": true}});
    let a = submit_after(&stack, &tenant, &tier, &[]).await?;
    let b = submit_after(&stack, &tenant, &tier, &[&a]).await?;
    let c = submit_after(&stack, &tenant, &tier, &[&a]).await?;
    let d = submit_after(&stack, &tenant, &tier, &[&b, &c]).await?;
    assert_eq!(task(&stack, &tenant, &d).await?["status"], "PENDING");

    let first = next_ready(&worker, 1).await?;
    assert_eq!(answer(&stack, &tenant, &first[0], succeed(), "m").await?, a);
    let mut branches = Vec::new();
    for ready in next_ready(&worker, 2).await? {
        branches.push(answer(&stack, &tenant, &ready, succeed(), "m").await?);
    }
    branches.sort();
    let mut expected = vec![b.clone(), c.clone()];
    expected.sort();
    assert_eq!(
        branches, expected,
        "B and C run once A succeeded, D does not"
    );
    let ready = next_ready(&worker, 1).await?;
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0]["task_id"], d.as_str(), "D runs after both");
    let d_task = task(&stack, &tenant, &d).await?;
    assert_eq!(
        causes(&d_task),
        ["submitted", "released", "dispatched"],
        "released once"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(worker.all_ready().await?.is_empty(), "D is dispatched once");

    // A second diamond whose branch fails: its join and what waits on the join are cancelled.
    let a = submit_after(&stack, &tenant, &tier, &[]).await?;
    answer(
        &stack,
        &tenant,
        &next_ready(&worker, 1).await?[0],
        succeed(),
        "m",
    )
    .await?;
    task_reaches(&stack, &tenant, &a, "SUCCEEDED").await?;
    let b = submit_after(&stack, &tenant, &tier, &[&a]).await?;
    let c = submit_after(&stack, &tenant, &tier, &[&a]).await?;
    let d = submit_after(&stack, &tenant, &tier, &[&b, &c]).await?;
    let e = submit_after(&stack, &tenant, &tier, &[&d]).await?;
    for ready in next_ready(&worker, 2).await? {
        let outcome = if ready["task_id"] == b.as_str() {
            json!({"status": "failed", "error": {"code": "BROKEN", "message": "bad input"}})
        } else {
            succeed()
        };
        stack
            .put_event("TaskResult", &result(&tenant, &ready, outcome))
            .await?;
    }
    let cancelled = task_reaches(&stack, &tenant, &d, "CANCELLED").await?;
    assert_eq!(causes(&cancelled), ["submitted", "cancelled"]);
    task_reaches(&stack, &tenant, &e, "CANCELLED").await?;
    let reason = graphql(
        &stack,
        &tenant,
        "query($id: ID!) { task(id: $id) { reason } }",
        json!({"id": d}),
    )
    .await?;
    assert_eq!(
        reason["task"]["reason"],
        format!("dependency {b} failed").as_str()
    );
    Ok(())
}

#[tokio::test]
async fn a_rollback_requested_twice_rolls_back_a_three_level_chain_and_announces_each_once()
-> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, tier, worker) = fresh_worker(&stack).await?;
    let rolled_back = stack
        .listener(json!({"detail-type": ["TaskRolledBack"], "detail": {"tenant": [tenant]}}))
        .await?;
    let succeed = || json!({"status": "succeeded", "output": {"rows": 3}});
    let a = submit_after(&stack, &tenant, &tier, &[]).await?;
    let b = submit_after(&stack, &tenant, &tier, &[&a]).await?;
    let c = submit_after(&stack, &tenant, &tier, &[&b]).await?;
    for expected in [&a, &b, &c] {
        let ready = next_ready(&worker, 1).await?;
        let answered = answer(&stack, &tenant, &ready[0], succeed(), "m-7").await?;
        assert_eq!(&answered, expected);
        task_reaches(&stack, &tenant, expected, "SUCCEEDED").await?;
    }

    let preview = graphql(
        &stack,
        &tenant,
        "query($id: ID!) { rollbackPreview(taskId: $id) { rolledBack { id } cancelled { id }
            byStatus { status count } projects totalTokens } }",
        json!({"id": a}),
    )
    .await?["rollbackPreview"]
        .clone();
    let previewed: Vec<&str> = preview["rolledBack"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(previewed, [a.as_str(), b.as_str(), c.as_str()]);
    assert_eq!(preview["totalTokens"], 330);
    assert_eq!(preview["projects"], json!(["graph"]));
    assert_eq!(
        preview["byStatus"],
        json!([{"status": "SUCCEEDED", "count": 3}])
    );

    let request = json!({"tenant": tenant, "task_id": a, "reason": "model m-7 was miscalibrated"});
    stack.put_event("RollbackRequested", &request).await?;
    stack.put_event("RollbackRequested", &request).await?;
    let last = task_reaches(&stack, &tenant, &c, "ROLLED_BACK").await?;
    assert_eq!(
        causes(&last).last().map(String::as_str),
        Some("rolled_back")
    );
    let view = graphql(
        &stack,
        &tenant,
        "query($id: ID!) { task(id: $id) { tainted taint { root via } }
            provenance(taskId: $id) { model tokensIn tainted artifacts { uri } } }",
        json!({"id": c}),
    )
    .await?;
    assert_eq!(view["task"]["tainted"], true);
    assert_eq!(view["task"]["taint"]["root"], a.as_str());
    assert_eq!(view["task"]["taint"]["via"], b.as_str());
    assert_eq!(view["provenance"]["model"], "m-7");
    assert_eq!(view["provenance"]["tainted"], true);

    // Every event has arrived once the last task moved, and a bit of patience later no other.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = rolled_back.all_ready().await?;
    let mut announced: Vec<&str> = events
        .iter()
        .filter_map(|e| e["task_id"].as_str())
        .collect();
    announced.sort();
    let mut expected = vec![a.as_str(), b.as_str(), c.as_str()];
    expected.sort();
    assert_eq!(announced, expected, "one TaskRolledBack per task");
    assert!(events.iter().all(|e| e["provenance"]["model"] == "m-7"));
    let preview = graphql(
        &stack,
        &tenant,
        "query($id: ID!) { rollbackPreview(taskId: $id) { rolledBack { id } } }",
        json!({"id": a}),
    )
    .await?;
    assert_eq!(preview["rollbackPreview"]["rolledBack"], json!([]));
    Ok(())
}

#[tokio::test]
async fn unknown_or_foreign_dependencies_are_refused_by_name() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, tier, _worker) = fresh_worker(&stack).await?;
    let mine = submit_after(&stack, &tenant, &tier, &[]).await?;
    let other = unique("globex");
    let missing = "019a0000-0000-7000-8000-0000000000ff";
    let response = graphql_response(
        &stack,
        &other,
        "mutation($after: [ID!]) { submitTask(input: {projectId: \"graph\", name: \"x\",
            tier: \"cpu\", dependsOn: $after}) { id } }",
        json!({"after": [mine, missing]}),
    )
    .await?;
    assert_eq!(code(&response), "INVALID_INPUT");
    let extensions = &response["errors"][0]["extensions"];
    assert_eq!(extensions["field"], "dependsOn");
    assert_eq!(extensions["reason"], "UNKNOWN_DEPENDENCY");
    assert_eq!(extensions["taskIds"], json!([mine, missing]));
    Ok(())
}

const HTTP_TASK: &str = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";

/// Submits a task of tier `http` whose input is `request`; answers its id.
async fn submit_http(stack: &Stack, tenant: &str, request: Value, extra: Value) -> Result<String> {
    let mut input = json!({"projectId": "e2e-http", "name": "call", "tier": "http",
        "input": request});
    input
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let data = graphql(stack, tenant, HTTP_TASK, json!({"input": input})).await?;
    Ok(data["submitTask"]["id"].as_str().context("id")?.to_owned())
}

#[tokio::test]
async fn http_tasks_run_in_the_built_in_executor_with_retries_timeouts_and_a_size_cap() -> Result<()>
{
    let stack = Stack::deployed().await?;
    let server = baton_tests::echo_server();
    let tenant = unique("acme");
    let retry = json!({"retry": {"maxAttempts": 2, "backoffSeconds": 1}});
    let once = json!({"retry": {"maxAttempts": 1}});
    let ok = submit_http(
        &stack,
        &tenant,
        json!({"url": format!("{}/ok", server.url)}),
        once.clone(),
    )
    .await?;
    let flaky = format!("{}/flaky/{}", server.url, unique("k"));
    let flaky = submit_http(&stack, &tenant, json!({"url": flaky}), retry).await?;
    let slow = json!({"url": format!("{}/slow", server.url), "timeout_seconds": 1});
    let slow = submit_http(&stack, &tenant, slow, once.clone()).await?;
    let big = submit_http(
        &stack,
        &tenant,
        json!({"url": format!("{}/big", server.url)}),
        once,
    )
    .await?;

    let done = task_reaches(&stack, &tenant, &ok, "SUCCEEDED").await?;
    assert_eq!(done["output"]["status"], 200);
    assert_eq!(done["output"]["body"], r#"{"ok":true}"#);
    let retried = task_reaches(&stack, &tenant, &flaky, "SUCCEEDED").await?;
    assert_eq!(
        retried["attempt"], 2,
        "500 on the first attempt, 200 on the retry"
    );
    for (id, code) in [(slow, "TIMEOUT"), (big, "RESPONSE_TOO_LARGE")] {
        task_reaches(&stack, &tenant, &id, "FAILED").await?;
        let failed = graphql(
            &stack,
            &tenant,
            "query($id: ID!) { task(id: $id) { error { code } } }",
            json!({"id": id}),
        )
        .await?;
        assert_eq!(failed["task"]["error"]["code"], code);
    }
    Ok(())
}

#[tokio::test]
async fn the_correlation_id_of_a_submit_is_on_every_event_published_for_its_task() -> Result<()> {
    let stack = Stack::deployed().await?;
    let server = baton_tests::echo_server();
    let tenant = unique("acme");
    let listener = stack
        .listener(json!({"source": ["baton"], "detail": {"tenant": [tenant]}}))
        .await?;
    let correlation = unique("corr");
    let id = submit_http(
        &stack,
        &tenant,
        json!({"url": format!("{}/ok", server.url)}),
        json!({"correlationId": correlation}),
    )
    .await?;
    task_reaches(&stack, &tenant, &id, "SUCCEEDED").await?;
    let mut events = next_ready(&listener, 3).await?;
    events.sort_by_key(|e| e["version"].as_u64());
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["SCHEDULED", "RUNNING", "SUCCEEDED"]);
    for event in &events {
        assert_eq!(event["task_id"], id.as_str());
        assert_eq!(event["correlation_id"], correlation.as_str(), "{event}");
    }
    Ok(())
}

const DLQ_STATS: &str = "{ dlqStats { queue depth classes { class count tier project reason } } }";
const REDRIVE: &str =
    "mutation($ids: [ID!]) { redriveDlq(queue: \"submit\", filter: {taskIds: $ids},
    dryRun: true) { dryRun moved complete matched { class taskId reason } } }";

#[tokio::test]
async fn poison_lands_in_its_dlq_classified_and_an_operator_sees_and_lists_it_for_redrive()
-> Result<()> {
    let stack = Stack::deployed().await?;
    let tenant = unique("acme");
    let missing = uuid::Uuid::now_v7().to_string();
    // A project of its own: dlqStats groups letters by class, tier and project, one reason each.
    let project = unique("ops");
    let poison = submission(
        &tenant,
        "gpu",
        json!({"project": project, "depends_on": [missing]}),
    );
    stack.put_event("SubmitTask", &poison).await?;
    let class = "SubmitTask/INVALID_DEPENDENCY";
    let stats = eventually("the poison in dlqStats", PATIENCE, || async {
        let data = graphql(&stack, &tenant, DLQ_STATS, json!({})).await?;
        let submit = data["dlqStats"]
            .as_array()
            .context("dlqStats")?
            .iter()
            .find(|q| q["queue"] == "submit")
            .cloned()
            .context("the submit DLQ")?;
        let found = submit["classes"].as_array().into_iter().flatten().any(|c| {
            c["class"] == class
                && c["project"] == project.as_str()
                && c["reason"].as_str().is_some_and(|r| r.contains(&missing))
        });
        Ok(found.then_some(data))
    })
    .await?;
    let queues: Vec<&str> = stats["dlqStats"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["queue"].as_str())
        .collect();
    assert_eq!(
        queues,
        ["cancel", "due", "http", "result", "rollback", "submit"]
    );

    // The letter names the task the submission would create; a dry run finds it by that id.
    let letters = graphql(&stack, &tenant, "mutation { redriveDlq(queue: \"submit\", filter: {class: \"SubmitTask/INVALID_DEPENDENCY\"}, dryRun: true) { matched { taskId reason } } }", json!({})).await?;
    let task_id = letters["redriveDlq"]["matched"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["reason"].as_str().is_some_and(|r| r.contains(&missing)))
        .and_then(|l| l["taskId"].as_str())
        .context("the poison's task id")?
        .to_owned();
    let dry = graphql(&stack, &tenant, REDRIVE, json!({"ids": [task_id]})).await?;
    let dry = &dry["redriveDlq"];
    assert_eq!(
        (&dry["dryRun"], &dry["moved"], &dry["complete"]),
        (&json!(true), &json!(0), &json!(true))
    );
    assert_eq!(dry["matched"].as_array().unwrap().len(), 1);
    assert_eq!(dry["matched"][0]["class"], class);

    // Health and readiness, without a token.
    let base = stack.graphql_url().trim_end_matches("/graphql").to_owned();
    let health: Value = reqwest::get(format!("{base}/health")).await?.json().await?;
    assert_eq!(health["status"], "ok");
    let ready = reqwest::get(format!("{base}/ready")).await?;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await?;
    assert_eq!(
        (&ready["ready"], &ready["queues"]["checked"]),
        (&json!(true), &json!(12))
    );
    assert_eq!(ready["killSwitch"]["engaged"], false);
    Ok(())
}
