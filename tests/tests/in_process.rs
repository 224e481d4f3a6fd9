//! Handler tests: each function's `handle` called in-process with real event fixtures, against
//! isolated emulator resources (a fresh table, bus and queues per test).

use anyhow::Result;
use baton_domain::{Status, TaskId, Tenant};
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
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let published = sandbox.published().await?;
    let submitted = published
        .iter()
        .find(|(kind, _)| kind == "TaskSubmitted")
        .expect("TaskSubmitted");
    Ok(submitted.1["task_id"].as_str().unwrap().to_owned())
}

fn result_event(tenant: &str, id: &str, attempt: u32, outcome: Value) -> String {
    let mut detail = json!({"tenant": tenant, "task_id": id, "attempt": attempt});
    detail
        .as_object_mut()
        .unwrap()
        .extend(outcome.as_object().unwrap().clone());
    eventbridge_event("TaskResult", &unique("event"), detail)
}

#[tokio::test]
async fn a_submitted_task_due_now_is_armed_dispatched_and_completed() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let id = submit(&sandbox, "acme", json!({})).await?;

    let timers = sandbox.due_timers().await?;
    assert_eq!(timers.len(), 1, "one timer armed at once");
    let response = baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&timers)).await;
    assert!(response.batch_item_failures.is_empty());
    let published = sandbox.published().await?;
    let (kind, ready) = &published[0];
    assert_eq!(kind, "TaskReady");
    assert_eq!(
        (ready["tier"].as_str(), ready["attempt"].as_u64()),
        (Some("gpu"), Some(1))
    );
    assert_eq!(ready["input"], json!({"page": 7}));
    assert_eq!(ready["version"], json!(2));

    let done = result_event(
        "acme",
        &id,
        1,
        json!({"status": "succeeded", "output": {"pdf": "s3://x"}}),
    );
    baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[done])).await;
    let task = task_status(&sandbox, "acme", &id).await?;
    assert_eq!((task.status, task.version), (Status::Succeeded, 3));
    let causes: Vec<&str> = task.history.iter().map(|h| h.cause.as_str()).collect();
    assert_eq!(causes, ["submitted", "dispatched", "result:succeeded"]);
    assert_eq!(sandbox.published().await?[0].0, "TaskSucceeded");
    sandbox.teardown().await
}

#[tokio::test]
async fn a_redelivered_submission_creates_one_task() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let event = eventbridge_event("SubmitTask", "same-event-id", submission("acme", json!({})));
    baton_fn_submit::handle(&sandbox.baton, sqs_batch(std::slice::from_ref(&event))).await;
    baton_fn_submit::handle(&sandbox.baton, sqs_batch(&[event])).await;
    let page = sandbox
        .baton
        .tasks(&baton_app::TaskQuery {
            tenant: Tenant::parse("acme")?,
            project: baton_domain::ProjectId::parse("reports")?,
            status: None,
            first: 10,
            after: None,
        })
        .await?;
    assert_eq!(page.tasks.len(), 1);
    sandbox.teardown().await
}

#[tokio::test]
async fn a_result_delivered_twice_makes_one_transition_and_one_history_entry() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let id = submit(&sandbox, "acme", json!({})).await?;
    baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&sandbox.due_timers().await?)).await;
    let done = result_event("acme", &id, 1, json!({"status": "succeeded", "output": 1}));
    // Both copies in one batch, and once more in a later batch.
    let response =
        baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[done.clone(), done.clone()])).await;
    assert!(response.batch_item_failures.is_empty());
    baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[done])).await;
    let task = task_status(&sandbox, "acme", &id).await?;
    assert_eq!(
        (task.status, task.version, task.history.len()),
        (Status::Succeeded, 3, 3)
    );
    sandbox.teardown().await
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
    baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&sandbox.due_timers().await?)).await;
    let failed = result_event(
        "acme",
        &id,
        1,
        json!({"status": "failed", "error": {"code": "OOM", "message": "out of memory"}}),
    );
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
        ["TaskReady", "TaskRetrying"]
    );

    // A late success for attempt 1 is stale: acknowledged, nothing changes.
    let late = result_event("acme", &id, 1, json!({"status": "succeeded"}));
    let response = baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[late])).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        task_status(&sandbox, "acme", &id).await?.version,
        task.version
    );
    sandbox.teardown().await
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
    assert!(
        response.batch_item_failures.is_empty(),
        "a rejection is acknowledged"
    );
    let task = task_status(&sandbox, "acme", &id).await?;
    assert_eq!(task.status, Status::Cancelled);
    assert_eq!(task.reason.as_deref(), Some("changed my mind"));
    assert!(sandbox.published().await?.is_empty(), "no TaskReady");
    sandbox.teardown().await
}

#[tokio::test]
async fn a_succeeded_task_is_rolled_back_with_its_output_for_compensation() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let id = submit(&sandbox, "acme", json!({})).await?;
    baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&sandbox.due_timers().await?)).await;
    let done = result_event(
        "acme",
        &id,
        1,
        json!({"status": "succeeded", "output": {"row": 12}}),
    );
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
    sandbox.teardown().await
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
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["message-0", "message-1"]);
    let published = sandbox.published().await?;
    assert_eq!(published.len(), 1, "the good submission went through");
    sandbox.teardown().await
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
        baton_fn_sweeper::handle(&sandbox.baton).await?.armed,
        0,
        "still outside the window"
    );
    sandbox.clock.advance(Duration::minutes(1));
    assert_eq!(baton_fn_sweeper::handle(&sandbox.baton).await?.armed, 1);
    assert_eq!(
        sandbox.delayed_timers().await?,
        1,
        "a 15-minute timer is waiting"
    );
    sandbox.clock.advance(Duration::minutes(1));
    assert_eq!(
        baton_fn_sweeper::handle(&sandbox.baton).await?.armed,
        0,
        "armed once"
    );
    assert_eq!(
        task_status(&sandbox, "acme", &id).await?.status,
        Status::Scheduled
    );
    sandbox.teardown().await
}

#[tokio::test]
async fn the_sweeper_times_out_an_attempt_past_its_deadline() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let id = submit(&sandbox, "acme", json!({"retry": {"max_attempts": 1}})).await?;
    baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&sandbox.due_timers().await?)).await;
    sandbox.clock.advance(Duration::seconds(61));
    assert_eq!(baton_fn_sweeper::handle(&sandbox.baton).await?.timed_out, 1);
    let task = task_status(&sandbox, "acme", &id).await?;
    assert_eq!(task.status, Status::Failed);
    assert_eq!(task.error.unwrap().code, "TIMEOUT");
    sandbox.teardown().await
}

#[tokio::test]
async fn the_graphql_gateway_answers_an_api_gateway_request() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let schema = baton_graphql::schema(sandbox.baton.clone());
    let mut request = fixture("apigw-v2-post-graphql.json");
    request["body"] = json!(json!({"query": "mutation { submitTask(input: {projectId: \"web\", name: \"n\", tier: \"gpu\"}) { id status version } }"}).to_string());
    let request = lambda_http::request::from_str(&request.to_string())?;
    let response = baton_fn_graphql::handle(&schema, request)
        .await
        .expect("a response");
    let body: Value = serde_json::from_slice(response.body())?;
    assert_eq!(body["data"]["submitTask"]["status"], "SCHEDULED", "{body}");

    let mut invalid = fixture("apigw-v2-post-graphql.json");
    invalid["body"] = json!(json!({"query": "mutation { submitTask(input: {projectId: \"web\", name: \"n\", tier: \"gpu\", priority: 5000}) { id } }"}).to_string());
    let response = baton_fn_graphql::handle(
        &schema,
        lambda_http::request::from_str(&invalid.to_string())?,
    )
    .await
    .expect("a response");
    let body: Value = serde_json::from_slice(response.body())?;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INVALID_INPUT",
        "{body}"
    );
    assert_eq!(body["errors"][0]["extensions"]["field"], "priority");

    let mut anonymous = fixture("apigw-v2-post-graphql.json");
    anonymous["headers"]
        .as_object_mut()
        .unwrap()
        .remove("x-baton-tenant");
    anonymous["body"] = json!(
        json!({"query": "{ task(id: \"019a0000-0000-7000-8000-000000000001\") { id } }"})
            .to_string()
    );
    let response = baton_fn_graphql::handle(
        &schema,
        lambda_http::request::from_str(&anonymous.to_string())?,
    )
    .await
    .expect("a response");
    let body: Value = serde_json::from_slice(response.body())?;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{body}"
    );
    sandbox.teardown().await
}

#[tokio::test]
async fn a_project_lists_newest_first_in_pages_and_filters_by_status() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit(&sandbox, "acme", json!({})).await?);
    }
    let cancel = eventbridge_event(
        "CancelTask",
        &unique("event"),
        json!({"tenant": "acme", "task_id": ids[1]}),
    );
    baton_fn_cancel::handle(&sandbox.baton, sqs_batch(&[cancel])).await;
    let query = |status, first, after: Option<&String>| baton_app::TaskQuery {
        tenant: Tenant::parse("acme").unwrap(),
        project: baton_domain::ProjectId::parse("reports").unwrap(),
        status,
        first,
        after: after.map(|id| TaskId::parse(id).unwrap()),
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
    sandbox.teardown().await
}
