//! Handler tests: each function's `handle` called in-process with real event fixtures, against
//! isolated emulator resources (a fresh table, bus and queues per test).

use std::sync::Arc;

use anyhow::Result;
use baton_app::Connections;
use baton_app::memory::MemoryPush;
use baton_domain::{Status, TaskId, Tenant};
use baton_graphql::auth::Verifier;
use baton_graphql::live::Live;
use baton_tests::{Sandbox, eventbridge_event, fixture, sqs_batch, unique};
use chrono::Duration;
use serde_json::{Value, json};

fn submission(tenant: &str, extra: Value) -> Value {
    let mut detail = json!({"tenant": tenant, "project": "reports", "name": "render", "tier": "gpu",
        "input": {"page": 7}, "timeout_seconds": 60});
    detail
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    detail
}

async fn task_status(sandbox: &Sandbox, tenant: &str, id: &str) -> Result<baton_domain::Task> {
    let tenant = Tenant::parse(tenant)?;
    let task = sandbox.baton.task(&tenant, &TaskId::parse(id)?).await?;
    Ok(task.expect("the task exists"))
}

/// Submits through the `submit` handler and returns the new task's id.
async fn submit(sandbox: &Sandbox, tenant: &str, extra: Value) -> Result<String> {
    let event = eventbridge_event("SubmitTask", &unique("event"), submission(tenant, extra));
    let response = baton_fn_submit::handle(&sandbox.baton, sqs_batch(&[event])).await;
    assert!(response.failed.is_empty(), "{response:?}");
    let published = sandbox.published().await?;
    let submitted = published
        .iter()
        .find(|(kind, _)| kind == "TaskSubmitted")
        .expect("TaskSubmitted");
    Ok(submitted.1["task_id"].as_str().unwrap().to_owned())
}

/// A worker's `TaskResult` for `attempt` of task `id`, with the lease its dispatch drew.
async fn result_event(
    sandbox: &Sandbox,
    tenant: &str,
    id: &str,
    attempt: u32,
    outcome: Value,
) -> Result<String> {
    let lease = task_status(sandbox, tenant, id).await?.lease;
    let mut detail = json!({"tenant": tenant, "task_id": id, "attempt": attempt, "lease": lease});
    detail
        .as_object_mut()
        .unwrap()
        .extend(outcome.as_object().unwrap().clone());
    Ok(eventbridge_event("TaskResult", &unique("event"), detail))
}

#[tokio::test]
async fn a_submitted_task_due_now_is_dispatched_by_the_submit_function_and_completed() -> Result<()>
{
    let sandbox = Sandbox::new().await?;
    let event = eventbridge_event(
        "SubmitTask",
        &unique("event"),
        submission("acme", json!({})),
    );
    let response = baton_fn_submit::handle(&sandbox.baton, sqs_batch(&[event])).await;
    assert!(response.failed.is_empty(), "{response:?}");
    assert_eq!(
        sandbox.due_timers().await?.len() as u64 + sandbox.delayed_timers().await?,
        0,
        "no hop through the due queue"
    );
    let published = sandbox.published().await?;
    let kinds: Vec<&str> = published.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["TaskSubmitted", "TaskReady"]);
    let ready = &published[1].1;
    assert_eq!(
        (ready["tier"].as_str(), ready["attempt"].as_u64()),
        (Some("gpu"), Some(1))
    );
    assert_eq!(ready["input"], json!({"page": 7}));
    assert_eq!(ready["version"], json!(2));
    let id = ready["task_id"].as_str().unwrap().to_owned();

    let done = result_event(
        &sandbox,
        "acme",
        &id,
        1,
        json!({"status": "succeeded", "output": {"pdf": "s3://x"}}),
    )
    .await?;
    baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[done])).await;
    let task = task_status(&sandbox, "acme", &id).await?;
    assert_eq!((task.status, task.version), (Status::Succeeded, 3));
    let causes: Vec<&str> = task.history.iter().map(|h| h.cause.as_str()).collect();
    assert_eq!(causes, ["submitted", "dispatched", "result:succeeded"]);
    assert_eq!(sandbox.published().await?[0].0, "TaskSucceeded");
    Ok(())
}

/// A task due now in a project that exists is created Running: its submission and its dispatch
/// are one write (one stream record), announced by both events; its slot is taken in that write,
/// on a dispatch's terms, so a pause an operator set before the project's first task holds it.
#[tokio::test]
async fn a_task_due_now_is_created_running_in_one_write_on_a_dispatch_s_terms() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    submit(&sandbox, "acme", json!({})).await?;
    sandbox.stream_records().await?;
    let id = submit(&sandbox, "acme", json!({})).await?;
    let records = sandbox.stream_records().await?;
    let written: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["dynamodb"]["Keys"]["sk"]["S"] == "TASK")
        .map(|r| {
            let name = r["eventName"].as_str().unwrap_or_default();
            (
                name,
                r["dynamodb"]["NewImage"]["status"]["S"]
                    .as_str()
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(written, [("INSERT", "RUNNING")], "one write");
    let task = task_status(&sandbox, "acme", &id).await?;
    let causes: Vec<&str> = task.history.iter().map(|h| h.cause.as_str()).collect();
    assert_eq!((task.version, causes), (2, vec!["submitted", "dispatched"]));
    let tenant = Tenant::parse("acme")?;
    let reports = baton_domain::ProjectId::parse("reports")?;
    let status = sandbox.baton.project_status(&tenant, &reports).await?;
    assert_eq!(status.count(Status::Running), 2, "both hold a slot");

    // A project an operator paused, with its switch set, before its first task.
    let operator = baton_app::Operator {
        by: "ops",
        reason: "not yet",
    };
    let fresh = baton_domain::ProjectId::parse("fresh")?;
    let scope = baton_domain::Scope::Project {
        tenant: tenant.clone(),
        project: fresh.clone(),
    };
    sandbox
        .baton
        .set_kill_switch(&scope, false, &operator)
        .await?;
    sandbox.baton.pause(&tenant, &fresh, &operator).await?;
    let held = submit(&sandbox, "acme", json!({"project": "fresh"})).await?;
    let task = task_status(&sandbox, "acme", &held).await?;
    assert_eq!(task.status, Status::Scheduled);
    assert_eq!(
        task.parked.map(|p| p.gate),
        Some(baton_domain::Gate::Paused)
    );
    let status = sandbox.baton.project_status(&tenant, &fresh).await?;
    assert_eq!(status.count(Status::Running), 0, "no slot taken");
    Ok(())
}

#[tokio::test]
async fn a_redelivered_submission_creates_one_task_and_dispatches_it_once() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let event = eventbridge_event("SubmitTask", "same-event-id", submission("acme", json!({})));
    baton_fn_submit::handle(&sandbox.baton, sqs_batch(std::slice::from_ref(&event))).await;
    baton_fn_submit::handle(&sandbox.baton, sqs_batch(&[event])).await;
    let page = sandbox
        .baton
        .tasks(&baton_app::TaskQuery::project(
            Tenant::parse("acme")?,
            baton_domain::ProjectId::parse("reports")?,
            10,
        ))
        .await?;
    assert_eq!(page.tasks.len(), 1);
    // Dispatched once: the second delivery found it running and repeated its announcements.
    let task = &page.tasks[0];
    let causes: Vec<&str> = task.history.iter().map(|h| h.cause.as_str()).collect();
    assert_eq!(
        (task.status, causes),
        (Status::Running, vec!["submitted", "dispatched"])
    );
    let ready = sandbox.published().await?;
    let kinds: Vec<&str> = ready.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["TaskSubmitted", "TaskReady", "TaskSubmitted", "TaskReady"]
    );
    Ok(())
}

/// A batch's events and timers go out together at its end (`PutEvents` of up to ten entries,
/// `SendMessageBatch` of up to ten timers): twelve submissions, eight due now and four later,
/// put every event on the bus and every timer on the due queue.
#[tokio::test]
async fn a_batch_s_events_and_timers_go_out_together_and_all_arrive() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    sandbox.unlimited("acme", "reports").await?;
    let events: Vec<String> = (0..12)
        .map(|i| {
            let extra = match i % 3 {
                0 => json!({"delay_seconds": 30}),
                _ => json!({}),
            };
            eventbridge_event("SubmitTask", &unique("event"), submission("acme", extra))
        })
        .collect();
    let response = baton_fn_submit::handle(&sandbox.baton, sqs_batch(&events)).await;
    assert!(response.failed.is_empty(), "{response:?}");
    let published = sandbox.published().await?;
    let count = |kind: &str| published.iter().filter(|(k, _)| k == kind).count();
    assert_eq!((count("TaskSubmitted"), count("TaskReady")), (12, 8));
    assert_eq!(
        sandbox.delayed_timers().await?,
        4,
        "the later tasks' timers"
    );
    Ok(())
}

/// A message whose events were not sent is failed, though its task was written: delivered again,
/// its command meets its own write and sends them then. Nothing is lost.
#[tokio::test]
async fn a_batch_whose_events_could_not_be_sent_is_delivered_again_and_sends_them() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    // The bus cannot be reached: nothing listens on its endpoint.
    let sdk = baton_tests::emulator().await;
    let unreachable = sdk.to_builder().endpoint_url("http://127.0.0.1:9").build();
    let clients = baton_aws::Clients {
        eventbridge: aws_sdk_eventbridge::Client::new(&unreachable),
        ..baton_aws::Clients::new(&sdk)
    };
    let cut_off = baton_aws::baton_on(clients, &sandbox.settings, sandbox.clock.clone());
    let events: Vec<String> = (0..3)
        .map(|_| {
            eventbridge_event(
                "SubmitTask",
                &unique("event"),
                submission("acme", json!({})),
            )
        })
        .collect();
    let response = baton_fn_submit::handle(&cut_off, sqs_batch(&events)).await;
    assert_eq!(response.failed.len(), 3, "{response:?}");
    assert!(
        response
            .failed
            .iter()
            .all(|f| f.error.code() == "INFRA_ERROR")
    );

    let response = baton_fn_submit::handle(&sandbox.baton, sqs_batch(&events)).await;
    assert!(response.failed.is_empty(), "{response:?}");
    let published = sandbox.published().await?;
    let count = |kind: &str| published.iter().filter(|(k, _)| k == kind).count();
    assert_eq!(
        (count("TaskSubmitted"), count("TaskReady")),
        (3, 3),
        "each task was dispatched by the first delivery; the second repeats what it announced"
    );
    Ok(())
}

#[tokio::test]
async fn a_result_delivered_twice_makes_one_transition_and_one_history_entry() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let id = submit(&sandbox, "acme", json!({})).await?;
    let done = result_event(
        &sandbox,
        "acme",
        &id,
        1,
        json!({"status": "succeeded", "output": 1}),
    )
    .await?;
    // Both copies in one batch, and once more in a later batch.
    let response =
        baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[done.clone(), done.clone()])).await;
    assert!(response.failed.is_empty());
    baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[done])).await;
    let task = task_status(&sandbox, "acme", &id).await?;
    assert_eq!(
        (task.status, task.version, task.history.len()),
        (Status::Succeeded, 3, 3)
    );
    Ok(())
}

/// A batch's tasks are read together, one read per tenant: results for tasks of two tenants, for
/// a task that does not exist and for another tenant's task, in one batch, each settle as they
/// would alone.
#[tokio::test]
async fn a_batch_s_results_settle_each_and_none_reaches_another_tenant_s_task() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let acme = submit(&sandbox, "acme", json!({})).await?;
    let globex = submit(&sandbox, "globex", json!({})).await?;
    let succeeded = json!({"status": "succeeded", "output": 1});
    let mut batch = vec![
        result_event(&sandbox, "acme", &acme, 1, succeeded.clone()).await?,
        result_event(&sandbox, "globex", &globex, 1, succeeded.clone()).await?,
    ];
    // Tenant acme names globex's task, with its lease even: the batch's read finds nothing of
    // acme's by that id, and globex's task moves once, by its own result.
    let globex_lease = task_status(&sandbox, "globex", &globex).await?.lease;
    batch.insert(
        0,
        eventbridge_event(
            "TaskResult",
            &unique("event"),
            json!({"tenant": "acme", "task_id": globex, "attempt": 1, "lease": globex_lease,
                "status": "failed", "error": {"code": "E", "message": "forged"}}),
        ),
    );
    let unknown = TaskId::from_uuid(uuid::Uuid::now_v7()).to_string();
    batch.push(eventbridge_event(
        "TaskResult",
        &unique("event"),
        json!({"tenant": "acme", "task_id": unknown, "attempt": 1,
            "lease": "AAAAAAAAAAAAAAAAAAAAAA", "status": "succeeded"}),
    ));
    sandbox.published().await?;
    let response = baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&batch)).await;
    assert!(response.failed.is_empty(), "{response:?}");
    for (tenant, id) in [("acme", &acme), ("globex", &globex)] {
        let task = task_status(&sandbox, tenant, id).await?;
        let causes: Vec<&str> = task.history.iter().map(|h| h.cause.as_str()).collect();
        assert_eq!(
            (task.status, causes),
            (
                Status::Succeeded,
                vec!["submitted", "dispatched", "result:succeeded"]
            ),
            "{tenant}"
        );
    }
    let published = sandbox.published().await?;
    let kinds: Vec<&str> = published.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["TaskSucceeded", "TaskSucceeded"]);
    Ok(())
}

#[tokio::test]
async fn a_failed_attempt_is_retried_after_backoff_and_a_stale_result_is_rejected() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let id = submit(
        &sandbox,
        "acme",
        json!({"retry": {"max_attempts": 3, "backoff_seconds": 60}}),
    )
    .await?;
    let failed = result_event(
        &sandbox,
        "acme",
        &id,
        1,
        json!({"status": "failed", "error": {"code": "OOM", "message": "out of memory"}}),
    )
    .await?;
    baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[failed])).await;
    let task = task_status(&sandbox, "acme", &id).await?;
    assert_eq!((task.status, task.attempt), (Status::Scheduled, 2));
    let backoff = task.due_at - sandbox.baton.now();
    assert!(
        backoff >= Duration::seconds(30) && backoff <= Duration::seconds(60),
        "{backoff}"
    );
    assert_eq!(
        sandbox.delayed_timers().await?,
        1,
        "the retry's timer waits out the backoff"
    );
    let published = sandbox.published().await?;
    assert_eq!(
        published
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        ["TaskRetrying"]
    );

    // A late success for attempt 1 is stale: acknowledged, nothing changes.
    let late = result_event(&sandbox, "acme", &id, 1, json!({"status": "succeeded"})).await?;
    let response = baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[late])).await;
    assert!(response.failed.is_empty());
    assert_eq!(
        task_status(&sandbox, "acme", &id).await?.version,
        task.version
    );
    Ok(())
}

#[tokio::test]
async fn a_task_cancelled_before_its_due_time_is_never_dispatched() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let id = submit(&sandbox, "acme", json!({"delay_seconds": 2})).await?;
    let cancel = eventbridge_event(
        "CancelTask",
        &unique("event"),
        json!({"tenant": "acme", "task_id": id, "reason": "changed my mind"}),
    );
    baton_fn_cancel::handle(&sandbox.baton, sqs_batch(&[cancel])).await;
    assert_eq!(sandbox.published().await?[0].0, "TaskCancelled");

    sandbox.clock.advance(Duration::seconds(5));
    let timers =
        baton_tests::eventually("the timer", std::time::Duration::from_secs(10), || async {
            let timers = sandbox.due_timers().await?;
            Ok((!timers.is_empty()).then_some(timers))
        })
        .await?;
    let response = baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&timers)).await;
    assert!(response.failed.is_empty(), "a rejection is acknowledged");
    let task = task_status(&sandbox, "acme", &id).await?;
    assert_eq!(task.status, Status::Cancelled);
    assert_eq!(task.reason.as_deref(), Some("changed my mind"));
    assert!(sandbox.published().await?.is_empty(), "no TaskReady");
    Ok(())
}

#[tokio::test]
async fn a_succeeded_task_is_rolled_back_with_its_output_for_compensation() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let id = submit(&sandbox, "acme", json!({})).await?;
    let done = result_event(
        &sandbox,
        "acme",
        &id,
        1,
        json!({"status": "succeeded", "output": {"row": 12}}),
    )
    .await?;
    baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[done])).await;
    sandbox.published().await?;
    let rollback = eventbridge_event(
        "RollbackRequested",
        &unique("event"),
        json!({"tenant": "acme", "task_id": id, "reason": "bad data"}),
    );
    baton_fn_rollback::handle(&sandbox.baton, sqs_batch(&[rollback.clone(), rollback])).await;
    let published = sandbox.published().await?;
    assert_eq!(published[0].0, "TaskRolledBack");
    assert_eq!(published[0].1["output"], json!({"row": 12}));
    let task = task_status(&sandbox, "acme", &id).await?;
    assert_eq!((task.status, task.version), (Status::RolledBack, 4));
    Ok(())
}

#[tokio::test]
async fn bad_messages_fail_alone_and_say_why_while_good_ones_in_the_batch_are_processed()
-> Result<()> {
    let sandbox = Sandbox::new().await?;
    let good = eventbridge_event(
        "SubmitTask",
        &unique("event"),
        submission("acme", json!({})),
    );
    let invalid = eventbridge_event(
        "SubmitTask",
        &unique("event"),
        submission("acme", json!({"priority": 99999})),
    );
    let batch = sqs_batch(&["{not json".to_owned(), invalid, good]);
    let response = baton_fn_submit::handle(&sandbox.baton, batch).await;
    assert_eq!(response.failed_ids(), ["message-0", "message-1"]);
    let codes: Vec<&str> = response.failed.iter().map(|f| f.error.code()).collect();
    assert_eq!(codes, ["MALFORMED_ENVELOPE", "INVALID_SUBMISSION"]);
    let published = sandbox.published().await?;
    let kinds: Vec<&str> = published.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["TaskSubmitted", "TaskReady"],
        "the good submission went through and started"
    );
    Ok(())
}

#[tokio::test]
async fn a_task_due_in_twenty_minutes_is_armed_by_the_sweeper_when_it_enters_the_window()
-> Result<()> {
    let sandbox = Sandbox::new().await?;
    let id = submit(&sandbox, "acme", json!({"delay_seconds": 1200})).await?;
    assert_eq!(
        sandbox.delayed_timers().await? + sandbox.due_timers().await?.len() as u64,
        0
    );

    sandbox.clock.advance(Duration::minutes(4));
    assert_eq!(
        baton_fn_sweeper::handle(&sandbox.baton, baton_tests::lambda_deadline())
            .await?
            .armed,
        0,
        "still outside the window"
    );
    sandbox.clock.advance(Duration::minutes(1));
    assert_eq!(
        baton_fn_sweeper::handle(&sandbox.baton, baton_tests::lambda_deadline())
            .await?
            .armed,
        1
    );
    assert_eq!(
        sandbox.delayed_timers().await?,
        1,
        "a 15-minute timer is waiting"
    );
    sandbox.clock.advance(Duration::minutes(1));
    assert_eq!(
        baton_fn_sweeper::handle(&sandbox.baton, baton_tests::lambda_deadline())
            .await?
            .armed,
        0,
        "armed once"
    );
    assert_eq!(
        task_status(&sandbox, "acme", &id).await?.status,
        Status::Scheduled
    );
    Ok(())
}

#[tokio::test]
async fn the_sweeper_times_out_an_attempt_past_its_deadline() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let id = submit(&sandbox, "acme", json!({"retry": {"max_attempts": 1}})).await?;
    sandbox.clock.advance(Duration::seconds(61));
    assert_eq!(
        baton_fn_sweeper::handle(&sandbox.baton, baton_tests::lambda_deadline())
            .await?
            .timed_out,
        1
    );
    let task = task_status(&sandbox, "acme", &id).await?;
    assert_eq!(task.status, Status::Failed);
    assert_eq!(task.error.unwrap().code, "TIMEOUT");
    Ok(())
}

const SECRET: &[u8] = b"in-process-secret";

fn token(tenant: &str) -> String {
    token_as(tenant, false)
}

/// A token of `tenant`, with the operators' scope when `admin`.
fn token_as(tenant: &str, admin: bool) -> String {
    let caller = baton_app::Caller {
        tenant: Tenant::parse(tenant).unwrap(),
        subject: "ada".to_owned(),
        admin,
    };
    baton_graphql::auth::mint(SECRET, "baton-test", "baton", &caller, Duration::hours(1))
}

/// The gateway over the sandbox: connections in its table, pushes kept in memory.
async fn gateway(sandbox: &Sandbox) -> (baton_fn_graphql::Gateway, Arc<MemoryPush>) {
    let sdk = baton_tests::emulator().await;
    let schema = baton_graphql::schema(sandbox.baton.clone(), baton_graphql::Options::default());
    let verifier = Some(Verifier::hs256(SECRET, "baton-test", "baton"));
    let connections = Arc::new(baton_aws::DynamoConnections::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        &sandbox.settings.table,
    ));
    let push = Arc::new(MemoryPush::default());
    let live = Live::new(
        sandbox.baton.clone(),
        schema.clone(),
        connections,
        push.clone(),
        verifier.clone(),
    );
    let gateway = baton_fn_graphql::Gateway {
        schema,
        live,
        verifier,
        baton: sandbox.baton.clone(),
        queues: Arc::new(baton_aws::dlq::SqsDeadLetters::new(
            aws_sdk_sqs::Client::new(&sdk),
            Default::default(),
        )),
        dashboard: baton_graphql::dashboard::page(&Default::default()).into(),
        dashboard_policy: baton_graphql::dashboard::policy(&Default::default(), true).into(),
    };
    (gateway, push)
}

/// Runs `query` through the gateway as the fixture's HTTP API request, with `authorization`.
async fn post(
    gateway: &baton_fn_graphql::Gateway,
    fixture_name: &str,
    authorization: Option<String>,
    body: Value,
) -> Result<(u16, Value)> {
    let mut request = fixture(fixture_name);
    let headers = request["headers"].as_object_mut().unwrap();
    match authorization {
        Some(value) => headers.insert("authorization".to_owned(), json!(value)),
        None => headers.remove("authorization"),
    };
    request["body"] = json!(body.to_string());
    let request = lambda_http::request::from_str(&request.to_string())?;
    let response = baton_fn_graphql::handle(gateway, request)
        .await
        .expect("a response");
    let status = response.status().as_u16();
    Ok((status, serde_json::from_slice(response.body())?))
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
}

#[tokio::test]
async fn the_gateway_serves_the_dashboard_at_its_root_and_graphiql_at_graphql() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let (gateway, _) = gateway(&sandbox).await;
    for (path, marker) in [("/", "<title>Baton</title>"), ("/graphql", "GraphiQL")] {
        let mut request = fixture("apigw-v2-post-graphql.json");
        request["routeKey"] = json!(format!("GET {path}"));
        request["rawPath"] = json!(path);
        request["requestContext"]["http"]["method"] = json!("GET");
        request["requestContext"]["http"]["path"] = json!(path);
        request["headers"]
            .as_object_mut()
            .unwrap()
            .remove("authorization");
        let request = lambda_http::request::from_str(&request.to_string())?;
        let response = baton_fn_graphql::handle(&gateway, request)
            .await
            .expect("a response");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8"
        );
        let body = std::str::from_utf8(response.body())?;
        assert!(body.contains(marker), "{path} serves {marker}");
        let policy = response.headers()["content-security-policy"].to_str()?;
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert_eq!(response.headers()["x-frame-options"], "DENY");
    }
    Ok(())
}

#[tokio::test]
async fn the_graphql_gateway_answers_api_gateway_requests_for_the_token_s_tenant() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let (gateway, _) = gateway(&sandbox).await;
    let acme = Some(format!("Bearer {}", token("acme")));
    let submit = json!({"query": "mutation { submitTask(input: {projectId: \"web\", name: \"n\", tier: \"gpu\"}) { id status version } }"});
    let (status, body) = post(
        &gateway,
        "apigw-v2-post-graphql.json",
        acme.clone(),
        submit.clone(),
    )
    .await?;
    assert_eq!(
        (status, &body["data"]["submitTask"]["status"]),
        (200, &json!("SCHEDULED")),
        "{body}"
    );
    let id = body["data"]["submitTask"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The JWT authorizer's claims (AWS) name the caller without a token.
    let read = json!({"query": format!("{{ task(id: \"{id}\") {{ status }} }}")});
    let (_, body) = post(
        &gateway,
        "apigw-v2-post-graphql-authorized.json",
        None,
        read.clone(),
    )
    .await?;
    assert_eq!(body["data"]["task"]["status"], "SCHEDULED", "{body}");

    let invalid = json!({"query": "mutation { submitTask(input: {projectId: \"web\", name: \"n\", tier: \"gpu\", priority: 5000}) { id } }"});
    let (_, body) = post(
        &gateway,
        "apigw-v2-post-graphql.json",
        acme.clone(),
        invalid,
    )
    .await?;
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "priority");

    // No token and a forged one are refused alike: 401, one message, nothing about why.
    let (status, body) = post(&gateway, "apigw-v2-post-graphql.json", None, read.clone()).await?;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "{body}");
    let forged = Some(format!(
        "Bearer {}",
        baton_graphql::auth::mint(
            b"guess",
            "baton-test",
            "baton",
            &baton_app::Caller {
                tenant: Tenant::parse("acme")?,
                subject: "x".into(),
                admin: false,
            },
            Duration::hours(1)
        )
    ));
    let (status, body) = post(&gateway, "apigw-v2-post-graphql.json", forged, read.clone()).await?;
    assert_eq!((status, code(&body)), (401, "UNAUTHENTICATED"), "{body}");
    assert_eq!(body["errors"][0]["message"], "the bearer token was refused");

    let other = Some(format!("Bearer {}", token("globex")));
    let (_, body) = post(&gateway, "apigw-v2-post-graphql.json", other, read).await?;
    assert_eq!(code(&body), "NOT_FOUND", "another tenant's task: {body}");
    Ok(())
}

#[tokio::test]
async fn every_limit_is_refused_with_its_name_before_anything_runs() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let (gateway, _) = gateway(&sandbox).await;
    let acme = Some(format!("Bearer {}", token("acme")));
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }";
    let aliases: String = (0..20)
        .map(|i| format!("a{i}: projectStatus(projectId: \"p\") {{ total }} "))
        .collect();
    let directives: String = (0..12)
        .map(|i| format!("a{i}: projectStatus(projectId: \"p\") @include(if: true) {{ total }} "))
        .collect();
    let complex = "{ tasks(filter: {projectId: \"p\"}, first: 100) { edges { node { id name tier status version attempt } } } }";
    let cases = [
        ("depth", json!({"query": deep})),
        ("aliases", json!({"query": format!("{{ {aliases} }}")})),
        (
            "directives",
            json!({"query": format!("{{ {directives} }}")}),
        ),
        ("complexity", json!({"query": complex})),
        (
            "batch",
            json!(
                (0..6)
                    .map(|_| json!({"query": "{ __typename }"}))
                    .collect::<Vec<_>>()
            ),
        ),
        (
            "bodyBytes",
            json!({"query": format!("{{ __typename }} #{}", "x".repeat(70_000))}),
        ),
    ];
    for (limit, body) in cases {
        let (_, answer) = post(&gateway, "apigw-v2-post-graphql.json", acme.clone(), body).await?;
        assert_eq!(code(&answer), "LIMIT_EXCEEDED", "{limit}: {answer}");
        assert_eq!(
            answer["errors"][0]["extensions"]["limit"], limit,
            "{answer}"
        );
    }
    let (_, answer) = post(
        &gateway,
        "apigw-v2-post-graphql.json",
        acme.clone(),
        json!({"query": "{ __schema { types { name } } }"}),
    )
    .await?;
    assert!(
        answer["data"]["__schema"].is_null(),
        "introspection is off: {answer}"
    );
    let (_, answer) = post(
        &gateway,
        "apigw-v2-post-graphql.json",
        acme,
        json!({"query": "{ projectStatu(projectId: \"p\") { total } }"}),
    )
    .await?;
    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        !message.contains("Did you mean"),
        "no field suggestions: {message}"
    );
    Ok(())
}

/// Sends one WebSocket event fixture through the gateway with `connection` and `body`.
async fn ws(
    gateway: &baton_fn_graphql::Gateway,
    fixture_name: &str,
    connection: &str,
    body: Option<Value>,
) -> Result<lambda_http::Response<lambda_http::Body>> {
    let mut event = fixture(fixture_name);
    event["requestContext"]["connectionId"] = json!(connection);
    if let Some(body) = body {
        event["body"] = json!(body.to_string());
    }
    let request = lambda_http::request::from_str(&event.to_string())?;
    Ok(baton_fn_graphql::handle(gateway, request)
        .await
        .expect("a response"))
}

/// What `push` sent to `connection`, parsed.
fn sent_to(push: &MemoryPush, connection: &str) -> Vec<Value> {
    push.sent()
        .into_iter()
        .filter(|(c, _)| c == connection)
        .map(|(_, m)| serde_json::from_str(&m).unwrap())
        .collect()
}

#[tokio::test]
async fn websocket_subscribers_get_their_tasks_transitions_and_nothing_of_other_tenants()
-> Result<()> {
    let sandbox = Sandbox::new().await?;
    let (gateway, push) = gateway(&sandbox).await;
    let id = submit(&sandbox, "acme", json!({"delay_seconds": 60})).await?;
    let (ours, theirs) = (unique("conn"), unique("conn"));

    let connected = ws(&gateway, "apigw-ws-connect.json", &ours, None).await?;
    assert_eq!(connected.status(), 200);
    assert_eq!(
        connected.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    ws(&gateway, "apigw-ws-connect.json", &theirs, None).await?;
    for (connection, tenant) in [(&ours, "acme"), (&theirs, "globex")] {
        let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", token(tenant))}});
        ws(&gateway, "apigw-ws-message.json", connection, Some(init)).await?;
        assert_eq!(
            sent_to(&push, connection),
            [json!({"type": "connection_ack"})]
        );
    }
    let subscribe = |sub: &str| {
        json!({"type": "subscribe", "id": sub, "payload": {
        "query": "subscription($id: ID!) { taskUpdated(id: $id) { id status version } }",
        "variables": {"id": id}}})
    };
    ws(
        &gateway,
        "apigw-ws-message.json",
        &ours,
        Some(subscribe("1")),
    )
    .await?;
    ws(
        &gateway,
        "apigw-ws-message.json",
        &theirs,
        Some(subscribe("1")),
    )
    .await?;
    let project = json!({"type": "subscribe", "id": "2", "payload": {
        "query": "subscription { projectTasks(projectId: \"reports\", statuses: [CANCELLED]) { id status } }"}});
    ws(
        &gateway,
        "apigw-ws-message.json",
        &ours,
        Some(project.clone()),
    )
    .await?;
    ws(&gateway, "apigw-ws-message.json", &theirs, Some(project)).await?;

    let ours_sent = sent_to(&push, &ours);
    assert_eq!(ours_sent[1]["type"], "next", "{ours_sent:?}");
    assert_eq!(
        ours_sent[1]["payload"]["data"]["taskUpdated"]["status"],
        "SCHEDULED"
    );
    let theirs_sent = sent_to(&push, &theirs);
    assert_eq!(theirs_sent[1]["type"], "error", "{theirs_sent:?}");
    assert_eq!(
        theirs_sent[1]["payload"][0]["extensions"]["code"],
        "NOT_FOUND"
    );

    let cancel = eventbridge_event(
        "CancelTask",
        &unique("event"),
        json!({"tenant": "acme", "task_id": id}),
    );
    baton_fn_cancel::handle(&sandbox.baton, sqs_batch(&[cancel])).await;
    // The table's stream since the sandbox began: the task's creation and its cancel, pushed
    // once as it stands now.
    let records = json!({ "Records": sandbox.stream_records().await? });
    let sent = baton_fn_notifier::handle(&gateway.live, &records).await?;
    assert_eq!(sent, 2);

    let updates: Vec<Value> = sent_to(&push, &ours).into_iter().skip(2).collect();
    assert_eq!(updates.len(), 2, "one per subscription: {updates:?}");
    assert!(updates.iter().any(|u| u["id"] == "1" && u["payload"]["data"]["taskUpdated"]["status"] == "CANCELLED"), "{updates:?}");
    assert!(
        updates
            .iter()
            .any(|u| u["id"] == "2" && u["payload"]["data"]["projectTasks"]["id"] == json!(id)),
        "{updates:?}"
    );
    assert_eq!(
        sent_to(&push, &theirs).len(),
        2,
        "globex sees nothing of acme's task"
    );

    // A gone connection is forgotten; `complete` and `$disconnect` remove subscriptions.
    push.hang_up(&ours);
    ws(&gateway, "apigw-ws-disconnect.json", &theirs, None).await?;
    // The same batch delivered again.
    baton_fn_notifier::handle(&gateway.live, &records).await?;
    let tenant = Tenant::parse("acme")?;
    let watches = [baton_app::Watch::Task(TaskId::parse(&id)?)];
    let connections = baton_aws::DynamoConnections::new(
        aws_sdk_dynamodb::Client::new(&baton_tests::emulator().await),
        &sandbox.settings.table,
    );
    assert!(connections.watchers(&tenant, &watches).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_websocket_client_without_a_valid_token_is_hung_up_on() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let (gateway, push) = gateway(&sandbox).await;
    let connection = unique("conn");
    ws(&gateway, "apigw-ws-connect.json", &connection, None).await?;
    let subscribe = json!({"type": "subscribe", "id": "1", "payload": {"query": "subscription { projectTasks(projectId: \"p\") { id } }"}});
    ws(
        &gateway,
        "apigw-ws-message.json",
        &connection,
        Some(subscribe),
    )
    .await?;
    assert!(push.is_gone(&connection), "subscribe before connection_ack");

    let connection = unique("conn");
    ws(&gateway, "apigw-ws-connect.json", &connection, None).await?;
    let init = json!({"type": "connection_init", "payload": {"Authorization": "Bearer forged"}});
    ws(&gateway, "apigw-ws-message.json", &connection, Some(init)).await?;
    assert!(push.is_gone(&connection));
    assert!(sent_to(&push, &connection).is_empty(), "no connection_ack");

    let mut connect = fixture("apigw-ws-connect.json");
    connect["requestContext"]["connectionId"] = json!(unique("conn"));
    connect["queryStringParameters"] = json!({"token": "forged"});
    let refused = baton_fn_graphql::handle(
        &gateway,
        lambda_http::request::from_str(&connect.to_string())?,
    )
    .await
    .expect("a response");
    assert_eq!(
        refused.status(),
        401,
        "a bad token on the handshake is refused"
    );
    Ok(())
}

#[tokio::test]
async fn project_status_counts_follow_every_transition() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(&sandbox, "acme", json!({})).await?);
    }
    let cancel = eventbridge_event(
        "CancelTask",
        &unique("event"),
        json!({"tenant": "acme", "task_id": ids[0]}),
    );
    baton_fn_cancel::handle(&sandbox.baton, sqs_batch(std::slice::from_ref(&cancel))).await;
    baton_fn_cancel::handle(&sandbox.baton, sqs_batch(&[cancel])).await;
    // The running count is the slot counter, moved with each dispatch (here at submission) and
    // each cancel of a running task; the others follow the table's stream.
    let project = baton_domain::ProjectId::parse("reports")?;
    let status = sandbox
        .baton
        .project_status(&Tenant::parse("acme")?, &project)
        .await?;
    assert_eq!(status.count(Status::Running), 2, "{status:?}");
    sandbox.count().await?;
    let status = sandbox
        .baton
        .project_status(&Tenant::parse("acme")?, &project)
        .await?;
    assert_eq!(status.count(Status::Cancelled), 1, "{status:?}");
    assert_eq!(status.count(Status::Running), 2, "{status:?}");
    assert_eq!(status.count(Status::Scheduled), 0, "{status:?}");
    assert_eq!(status.total(), 3);
    Ok(())
}

#[tokio::test]
async fn stream_batches_delivered_again_count_nothing_twice() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let tenant = Tenant::parse("acme")?;
    let projects = [
        baton_domain::ProjectId::parse("reports")?,
        baton_domain::ProjectId::parse("exports")?,
    ];
    let mut ids = Vec::new();
    for i in 0..6 {
        let project = projects[i % 2].as_str();
        ids.push(submit(&sandbox, "acme", json!({"project": project})).await?);
    }
    let cancel = |id: &str| {
        eventbridge_event(
            "CancelTask",
            &unique("event"),
            json!({"tenant": "acme", "task_id": id}),
        )
    };
    baton_fn_cancel::handle(
        &sandbox.baton,
        sqs_batch(&[cancel(&ids[0]), cancel(&ids[1])]),
    )
    .await;
    let done = result_event(&sandbox, "acme", &ids[2], 1, json!({"status": "succeeded"})).await?;
    baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[done])).await;

    // Every delivery a stream mapping may make: a first part, then the whole batch again from
    // its start (the first part is skipped by its mark), then a repeat from where the first
    // part stopped, then everything once more.
    let records = sandbox.stream_records().await?;
    let tasks: Vec<&Value> = records
        .iter()
        .filter(|r| r["dynamodb"]["Keys"]["sk"]["S"] == "TASK")
        .collect();
    // A record per creation (a task created Running is one) and per move: 6 and 3 at least.
    assert!(tasks.len() >= 9, "{} task records", tasks.len());
    let cut = records.len() / 3;
    let first = sandbox.count_batch(&records[..cut]).await?;
    let whole = sandbox.count_batch(&records).await?;
    assert!(
        whole.already > 0 && whole.written > 0,
        "{first:?} then {whole:?}"
    );
    let repeat = sandbox.count_batch(&records[cut..]).await?;
    assert_eq!(repeat.written, 0, "{repeat:?}");
    let again = sandbox.count_batch(&records).await?;
    assert_eq!(again.written, 0, "{again:?}");

    for project in &projects {
        let status = sandbox.baton.project_status(&tenant, project).await?;
        let listed = sandbox
            .baton
            .tasks(&baton_app::TaskQuery::project(
                tenant.clone(),
                project.clone(),
                100,
            ))
            .await?
            .tasks;
        for state in Status::ALL {
            let stored = listed.iter().filter(|t| t.status == state).count() as u64;
            assert_eq!(
                status.count(state),
                stored,
                "{project} {state:?}: {status:?}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn tasks_of_the_layout_that_counted_its_own_moves_are_counted_once_after_an_upgrade()
-> Result<()> {
    let sandbox = Sandbox::new().await?;
    let (tenant, project) = (
        Tenant::parse("acme")?,
        baton_domain::ProjectId::parse("legacy")?,
    );
    let mut ids = Vec::new();
    // Submitted through their timers, as the previous version submitted every task.
    for _ in 0..4 {
        ids.push(sandbox.submit_task("legacy", &[]).await?.id.to_string());
    }
    sandbox.count().await?;
    // As the previous layout left them: items without `layout`, their moves already on the
    // project's counters (it counted them in the write's transaction).
    let dynamodb = aws_sdk_dynamodb::Client::new(&baton_tests::emulator().await);
    for id in &ids {
        dynamodb
            .update_item()
            .table_name(&sandbox.settings.table)
            .key(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("T#acme#{id}")),
            )
            .key(
                "sk",
                aws_sdk_dynamodb::types::AttributeValue::S("TASK".into()),
            )
            .update_expression("REMOVE layout")
            .send()
            .await?;
    }
    // The previous version cancels one: its write carries no layout and moves the counters in
    // the same transaction.
    let (table, s) = (
        &sandbox.settings.table,
        aws_sdk_dynamodb::types::AttributeValue::S,
    );
    dynamodb
        .update_item()
        .table_name(table)
        .key("pk", s(format!("T#acme#{}", ids[3])))
        .key("sk", s("TASK".into()))
        .update_expression("SET #status = :cancelled")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":cancelled", s("CANCELLED".into()))
        .send()
        .await?;
    dynamodb
        .update_item()
        .table_name(table)
        .key("pk", s("P#acme#legacy".into()))
        .key("sk", s("PROJECT".into()))
        .update_expression("ADD n_SCHEDULED :minus, n_CANCELLED :one")
        .expression_attribute_values(
            ":minus",
            aws_sdk_dynamodb::types::AttributeValue::N("-1".into()),
        )
        .expression_attribute_values(
            ":one",
            aws_sdk_dynamodb::types::AttributeValue::N("1".into()),
        )
        .send()
        .await?;
    // This version moves the others on: one cancelled, two started, one of them finished.
    let cancel = eventbridge_event(
        "CancelTask",
        &unique("event"),
        json!({"tenant": "acme", "task_id": ids[0]}),
    );
    baton_fn_cancel::handle(&sandbox.baton, sqs_batch(&[cancel])).await;
    baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&sandbox.due_timers().await?)).await;
    let done = result_event(&sandbox, "acme", &ids[1], 1, json!({"status": "succeeded"})).await?;
    baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[done])).await;
    sandbox.count().await?;

    let status = sandbox.baton.project_status(&tenant, &project).await?;
    let expected = [
        (Status::Scheduled, 0),
        (Status::Cancelled, 2),
        (Status::Running, 1),
        (Status::Succeeded, 1),
    ];
    for (state, count) in expected {
        assert_eq!(status.count(state), count, "{state:?}: {status:?}");
    }
    assert_eq!(status.total(), 4, "{status:?}");
    Ok(())
}

#[tokio::test]
async fn a_stack_that_publishes_task_ready_alone_puts_no_other_lifecycle_event_on_the_bus()
-> Result<()> {
    let published = baton_aws::PublishedEvents::parse("TaskReady").map_err(anyhow::Error::msg)?;
    let sandbox = Sandbox::publishing(published, baton_aws::Clients::new).await?;
    let event = eventbridge_event(
        "SubmitTask",
        &unique("event"),
        submission("acme", json!({})),
    );
    baton_fn_submit::handle(&sandbox.baton, sqs_batch(&[event])).await;
    let ready = sandbox.published().await?;
    let kinds: Vec<&str> = ready.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["TaskReady"]);
    let id = ready[0].1["task_id"].as_str().unwrap().to_owned();
    let done = result_event(&sandbox, "acme", &id, 1, json!({"status": "succeeded"})).await?;
    baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[done])).await;
    assert_eq!(
        task_status(&sandbox, "acme", &id).await?.status,
        Status::Succeeded
    );
    assert!(sandbox.published().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_project_lists_newest_first_in_pages_and_filters_by_status() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(&sandbox, "acme", json!({"delay_seconds": 60})).await?);
    }
    let cancel = eventbridge_event(
        "CancelTask",
        &unique("event"),
        json!({"tenant": "acme", "task_id": ids[1]}),
    );
    baton_fn_cancel::handle(&sandbox.baton, sqs_batch(&[cancel])).await;
    let query = |status: Option<Status>, first, after: Option<&String>| baton_app::TaskQuery {
        statuses: status.into_iter().collect(),
        after: after.map(|id| TaskId::parse(id).unwrap()),
        ..baton_app::TaskQuery::project(
            Tenant::parse("acme").unwrap(),
            baton_domain::ProjectId::parse("reports").unwrap(),
            first,
        )
    };
    let listed = |page: &baton_app::Page| -> Vec<String> {
        page.tasks.iter().map(|task| task.id.to_string()).collect()
    };

    let first = sandbox.baton.tasks(&query(None, 2, None)).await?;
    assert_eq!(listed(&first), [ids[2].clone(), ids[1].clone()]);
    assert!(first.has_next_page);
    let rest = sandbox.baton.tasks(&query(None, 2, Some(&ids[1]))).await?;
    assert_eq!(listed(&rest), [ids[0].clone()]);
    assert!(!rest.has_next_page);

    let scheduled = sandbox
        .baton
        .tasks(&query(Some(Status::Scheduled), 1, None))
        .await?;
    assert_eq!(listed(&scheduled), [ids[2].clone()]);
    assert!(scheduled.has_next_page);
    let after = sandbox
        .baton
        .tasks(&query(Some(Status::Scheduled), 5, Some(&ids[2])))
        .await?;
    assert_eq!(
        listed(&after),
        [ids[0].clone()],
        "the cancelled one is skipped"
    );
    Ok(())
}

#[tokio::test]
async fn only_operators_turn_the_global_switch_and_project_controls_show_in_project_status()
-> Result<()> {
    let sandbox = Sandbox::new().await?;
    let (gateway, _) = gateway(&sandbox).await;
    let ask = |token: String, query: &str| {
        let body = json!({ "query": query });
        post(
            &gateway,
            "apigw-v2-post-graphql.json",
            Some(format!("Bearer {token}")),
            body,
        )
    };
    let engage_global =
        "mutation { engageKillSwitch(scope: {global: true}, reason: \"incident\") { engaged } }";
    let (_, refused) = ask(token("acme"), engage_global).await?;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    let (_, engaged) = ask(token_as("acme", true), engage_global).await?;
    assert_eq!(
        engaged["data"]["engageKillSwitch"]["engaged"], true,
        "{engaged}"
    );
    let (_, ambiguous) = ask(
        token("acme"),
        "{ killSwitch(scope: {global: true, projectId: \"p\"}) { engaged } }",
    )
    .await?;
    assert_eq!(code(&ambiguous), "INVALID_INPUT");
    let (_, zero) = ask(
        token("acme"),
        "mutation { setProjectLimit(projectId: \"reports\", limit: 0, reason: \"x\") { limit } }",
    )
    .await?;
    assert_eq!(zero["errors"][0]["extensions"]["field"], "limit", "{zero}");

    submit(&sandbox, "acme", json!({})).await?;
    let (_, paused) = ask(
        token("acme"),
        "mutation { pauseProject(projectId: \"reports\", reason: \"upgrade\") { paused } }",
    )
    .await?;
    assert_eq!(paused["data"]["pauseProject"]["paused"], true, "{paused}");
    let (_, status) = ask(
        token("acme"),
        "{ projectStatus(projectId: \"reports\") { running limit queued paused heldBy
            pause { by reason } killSwitch { present engaged }
            globalKillSwitch { engaged lastChange { by reason } } } }",
    )
    .await?;
    assert_eq!(
        status["data"]["projectStatus"],
        // Paused, and the global switch engaged above: a dispatch meets the switch first. The
        // task submitted while it was engaged waits in the ready set.
        json!({"running": 0, "limit": 10, "queued": 1, "paused": true,
            "heldBy": "GLOBAL_KILL_SWITCH",
            "pause": {"by": "ada", "reason": "upgrade"},
            "killSwitch": {"present": true, "engaged": false},
            // Who turned the global switch and why is for operators; a tenant sees its state.
            "globalKillSwitch": {"engaged": true, "lastChange": null}}),
    );
    let global = "{ killSwitch(scope: {global: true}) { engaged lastChange { by reason } } }";
    let (_, seen) = ask(token_as("acme", true), global).await?;
    assert_eq!(
        seen["data"]["killSwitch"]["lastChange"],
        json!({"by": "ada", "reason": "incident"}),
        "{seen}"
    );
    let history = "{ killSwitch(scope: {global: true}) { history { change { by } } } }";
    let (_, refused) = ask(token("acme"), history).await?;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    let (_, listed) = ask(token_as("acme", true), history).await?;
    assert_eq!(
        listed["data"]["killSwitch"]["history"][0]["change"]["by"], "ada",
        "{listed}"
    );
    Ok(())
}
