//! The trust boundaries through the deployed stack, tried as an attacker with an ordinary token
//! or `PutEvents` would: the `http` tier's private destinations, a slow endpoint that must be
//! called once, and forged results and requests that must change nothing.

use super::*;
use baton_tests::{TestServer, echo_server};

/// The error code of a failed task.
async fn error_code(stack: &Stack, tenant: &str, id: &str) -> Result<String> {
    let query = "query($id: ID!) { task(id: $id) { error { code message } } }";
    let task = graphql(stack, tenant, query, json!({"id": id})).await?;
    Ok(task["task"]["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test]
async fn http_tasks_to_private_destinations_fail_before_any_connection() -> Result<()> {
    let stack = Stack::deployed().await?;
    let tenant = unique("acme");
    // A loopback listener that records whatever reaches it; the stack does not allow it.
    let target = TestServer::start(0).await?;
    let port = target.url.rsplit(':').next().context("a port")?.to_owned();
    let echo = echo_server();
    let urls = [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://localhost:{port}/ok"),
        format!("http://2130706433:{port}/ok"),
        format!("http://[::1]:{port}/ok"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        // The allowlisted echo server, redirecting to the listener.
        format!("{}/redirect?to=http://127.0.0.1:{port}/ok", echo.url),
    ];
    let mut ids = Vec::new();
    for url in &urls {
        // The default retry policy: a refusal is not worth another attempt.
        ids.push(submit_http(&stack, &tenant, json!({"url": url}), json!({})).await?);
    }
    for (url, id) in urls.iter().zip(&ids) {
        let failed = task_reaches(&stack, &tenant, id, "FAILED").await?;
        assert_eq!(failed["attempt"], 1, "{url} was tried again");
        let code = error_code(&stack, &tenant, id).await?;
        assert_eq!(code, "FORBIDDEN_DESTINATION", "{url}");
    }
    assert_eq!(
        target.connections(),
        0,
        "a refused request reached the listener"
    );
    // The address the stack allows is called.
    let allowed = json!({"url": format!("{}/ok", echo.url)});
    let once = json!({"retry": {"maxAttempts": 1}});
    let ok = submit_http(&stack, &tenant, allowed, once).await?;
    task_reaches(&stack, &tenant, &ok, "SUCCEEDED").await?;
    Ok(())
}

#[tokio::test]
async fn a_slow_endpoint_is_called_once_and_its_attempt_times_out_before_the_function() -> Result<()>
{
    let stack = Stack::deployed().await?;
    let tenant = unique("acme");
    let echo = echo_server();
    // The endpoint answers after 12 s; the test stack's functions have 5 s.
    let path = format!("/sleep/12/{}", unique("hook"));
    let request = json!({"method": "POST", "url": format!("{}{path}", echo.url),
        "timeout_seconds": 20});
    let once = json!({"retry": {"maxAttempts": 1}, "timeoutSeconds": 60});
    let id = submit_http(&stack, &tenant, request, once).await?;
    task_reaches(&stack, &tenant, &id, "FAILED").await?;
    assert_eq!(error_code(&stack, &tenant, &id).await?, "TIMEOUT");
    // Longer than a killed invocation's message takes to come back (its visibility timeout).
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(echo.calls(&path), 1, "the endpoint was called again");
    Ok(())
}

/// Waits until `queue`'s DLQ holds a letter of `class` that names `tenant`, listed one by one by
/// a dry run of a redrive (`dlqStats` shows one reason per class).
async fn parked(stack: &Stack, tenant: &str, queue: &str, class: &str) -> Result<()> {
    let query = "mutation($queue: String!, $class: String!) { redriveDlq(queue: $queue, \
        filter: {class: $class}, dryRun: true) { matched { reason } } }";
    let variables = json!({"queue": queue, "class": class});
    eventually(&format!("{class} for {tenant}"), PATIENCE, || async {
        let dry = graphql(stack, tenant, query, variables.clone()).await?;
        let matched = dry["redriveDlq"]["matched"].as_array().cloned();
        let found = matched.into_iter().flatten().any(|letter| {
            letter["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains(tenant))
        });
        Ok(found.then_some(()))
    })
    .await
}

#[tokio::test]
async fn forged_results_and_requests_from_another_tenants_source_change_nothing() -> Result<()> {
    let stack = Stack::deployed().await?;
    let (tenant, _worker, ready) = ready_task(&stack, json!({})).await?;
    let id = ready["task_id"].as_str().context("task_id")?.to_owned();
    // Right ids and attempt, no lease or a guessed one, from a source of the worker's choosing.
    for lease in [Value::Null, json!("f".repeat(32))] {
        let mut forged = result(
            &tenant,
            &ready,
            json!({"status": "succeeded", "output": "forged"}),
        );
        forged["lease"] = lease;
        stack
            .put_from("evil.worker", "TaskResult", &forged.to_string())
            .await?;
    }
    // Another tenant's producer asks to cancel it and to submit in its tenant's name.
    let cancel = json!({"tenant": tenant, "task_id": id, "reason": "forged"});
    stack
        .put_from("globex.app", "CancelTask", &cancel.to_string())
        .await?;
    let submit = submission(&tenant, "gpu", json!({"name": "planted"}));
    stack
        .put_from("globex.app", "SubmitTask", &submit.to_string())
        .await?;
    parked(&stack, &tenant, "cancel", "CancelTask/FORBIDDEN_SOURCE").await?;
    parked(&stack, &tenant, "submit", "SubmitTask/FORBIDDEN_SOURCE").await?;
    let running = task(&stack, &tenant, &id).await?;
    assert_eq!(
        (&running["status"], &running["version"]),
        (&json!("RUNNING"), &json!(2))
    );

    // The worker's own answer is the one that counts.
    let honest = result(
        &tenant,
        &ready,
        json!({"status": "succeeded", "output": "honest"}),
    );
    stack.put_event("TaskResult", &honest).await?;
    let done = task_reaches(&stack, &tenant, &id, "SUCCEEDED").await?;
    assert_eq!(done["output"], "honest");
    assert_eq!(
        causes(&done),
        ["submitted", "dispatched", "result:succeeded"]
    );
    let listed = graphql(
        &stack,
        &tenant,
        "{ tasks(filter: {projectId: \"e2e\"}, first: 10) { edges { node { id } } } }",
        json!({}),
    )
    .await?;
    assert_eq!(
        listed["tasks"]["edges"].as_array().map(Vec::len),
        Some(1),
        "nothing planted"
    );

    let rollback = json!({"tenant": tenant, "task_id": id, "reason": "forged"});
    stack
        .put_from("globex.app", "RollbackRequested", &rollback.to_string())
        .await?;
    parked(
        &stack,
        &tenant,
        "rollback",
        "RollbackRequested/FORBIDDEN_SOURCE",
    )
    .await?;
    assert_eq!(task(&stack, &tenant, &id).await?["status"], "SUCCEEDED");
    Ok(())
}
