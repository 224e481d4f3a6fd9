//! Task graphs on the DynamoDB store and the real handlers: dependents listed on their
//! dependencies in the create transaction, a release raced by two dependencies, cascades sent
//! through the bus and handled by the `cancel` and `rollback` functions, provenance filed by
//! model. Handlers run in-process against a fresh sandbox.

use std::collections::BTreeMap;

use anyhow::Result;
use baton_app::{Commit, Direction, ModelQuery, SubmitError, TaskStore};
use baton_domain::{Command, DependencyError, Outcome, Provenance, Status, Task, TaskId};
use baton_tests::{Sandbox, eventbridge_event, sqs_batch};
use serde_json::{Value, json};

async fn submit(sandbox: &Sandbox, depends_on: &[&Task]) -> Result<Task> {
    let request = serde_json::from_value(json!({
        "tenant": "acme", "project": "graph", "name": "step", "tier": "cpu",
        "retry": {"max_attempts": 1},
        "depends_on": depends_on.iter().map(|t| t.id.to_string()).collect::<Vec<_>>()
    }))?;
    let id = TaskId::from_uuid(uuid::Uuid::now_v7());
    Ok(sandbox.baton.submit(&request, id).await?.task)
}

/// A → B, A → C, B + C → D.
async fn diamond(sandbox: &Sandbox) -> Result<[Task; 4]> {
    let a = submit(sandbox, &[]).await?;
    let b = submit(sandbox, &[&a]).await?;
    let c = submit(sandbox, &[&a]).await?;
    let d = submit(sandbox, &[&b, &c]).await?;
    Ok([a, b, c, d])
}

async fn reload(sandbox: &Sandbox, task: &Task) -> Result<Task> {
    Ok(sandbox.baton.task(&task.tenant, &task.id).await?.unwrap())
}

fn result(succeeded: bool, model: &str) -> Command {
    let provenance: Provenance = serde_json::from_value(
        json!({"model": model, "tokens_in": 40, "tokens_out": 2, "worker_id": "w"}),
    )
    .unwrap();
    let outcome = if succeeded {
        Outcome::Succeeded {
            output: json!({"ok": true}),
        }
    } else {
        Outcome::Failed {
            error: baton_domain::TaskError {
                code: "E".into(),
                message: "broken".into(),
                retryable: true,
            },
        }
    };
    Command::Complete {
        lease: Some(baton_tests::lease()),
        attempt: 1,
        outcome,
        provenance: Some(provenance),
    }
}

/// Starts `task` and reports `command` for it.
async fn finish(sandbox: &Sandbox, task: &Task, command: Command) -> Result<Task> {
    let baton = &sandbox.baton;
    baton
        .execute(
            &task.tenant,
            &task.id,
            &Command::Dispatch {
                attempt: 1,
                lease: baton_tests::lease(),
            },
        )
        .await?;
    baton.execute(&task.tenant, &task.id, &command).await?;
    reload(sandbox, task).await
}

/// Hands every `CancelTask` and `RollbackRequested` Baton published to the function that
/// handles it, as the rules and queues would, until none is left. Answers the detail-types of
/// everything published meanwhile, per task.
async fn pump(sandbox: &Sandbox) -> Result<BTreeMap<String, Vec<String>>> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..20 {
        let published = sandbox.published().await?;
        if published.is_empty() {
            return Ok(seen);
        }
        let mut cancels = Vec::new();
        let mut rollbacks = Vec::new();
        for (detail_type, detail) in published {
            let id = uuid::Uuid::now_v7().to_string();
            let task = detail["task_id"].as_str().unwrap_or_default().to_owned();
            match detail_type.as_str() {
                "CancelTask" => cancels.push(eventbridge_event(&detail_type, &id, detail)),
                "RollbackRequested" => rollbacks.push(eventbridge_event(&detail_type, &id, detail)),
                _ => {}
            }
            seen.entry(task).or_default().push(detail_type);
        }
        let response = baton_fn_cancel::handle(&sandbox.baton, sqs_batch(&cancels)).await;
        assert!(response.failed.is_empty(), "{response:?}");
        let response = baton_fn_rollback::handle(&sandbox.baton, sqs_batch(&rollbacks)).await;
        assert!(response.failed.is_empty(), "{response:?}");
    }
    anyhow::bail!("the cascade did not settle")
}

#[tokio::test]
async fn a_diamond_is_released_once_when_both_branches_finish_at_once() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let [a, b, c, d] = diamond(&sandbox).await?;
    assert_eq!(d.status, Status::Pending);
    assert_eq!(reload(&sandbox, &a).await?.dependents, [b.id, c.id]);

    finish(&sandbox, &a, result(true, "m")).await?;
    assert_eq!(reload(&sandbox, &b).await?.status, Status::Scheduled);
    let baton = &sandbox.baton;
    for task in [&b, &c] {
        baton
            .execute(
                &task.tenant,
                &task.id,
                &Command::Dispatch {
                    attempt: 1,
                    lease: baton_tests::lease(),
                },
            )
            .await?;
    }
    // Both results at once: each commit is followed by a release check of D.
    let success = result(true, "m");
    let (left, right) = tokio::join!(
        baton.execute(&b.tenant, &b.id, &success),
        baton.execute(&c.tenant, &c.id, &success),
    );
    left?;
    right?;
    let d = reload(&sandbox, &d).await?;
    assert_eq!(d.status, Status::Scheduled);
    let releases = d.history.iter().filter(|e| e.cause == "released").count();
    assert_eq!((releases, d.version), (1, 2));
    let published = sandbox.published().await?;
    let released: Vec<&Value> = published
        .iter()
        .filter(|(kind, detail)| kind == "TaskReleased" && detail["task_id"] == d.id.to_string())
        .map(|(_, detail)| detail)
        .collect();
    assert!(!released.is_empty());
    assert!(released.iter().all(|detail| detail["version"] == 2));
    Ok(())
}

#[tokio::test]
async fn a_failed_branch_cancels_the_join_and_what_waits_on_it_through_the_queue() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let [a, b, c, d] = diamond(&sandbox).await?;
    let e = submit(&sandbox, &[&d]).await?;
    finish(&sandbox, &a, result(true, "m")).await?;
    sandbox.published().await?;
    finish(&sandbox, &b, result(false, "m")).await?;
    let seen = pump(&sandbox).await?;
    let (d, e) = (reload(&sandbox, &d).await?, reload(&sandbox, &e).await?);
    assert_eq!(d.status, Status::Cancelled);
    assert_eq!(d.reason.unwrap(), format!("dependency {} failed", b.id));
    assert_eq!(e.status, Status::Cancelled);
    assert_eq!(
        e.reason.unwrap(),
        format!("dependency {} was cancelled", d.id)
    );
    assert_eq!(reload(&sandbox, &c).await?.status, Status::Scheduled);
    assert_eq!(seen[&d.id.to_string()], ["CancelTask", "TaskCancelled"]);
    Ok(())
}

#[tokio::test]
async fn a_rollback_delivered_twice_walks_three_levels_and_announces_each_task_once() -> Result<()>
{
    let sandbox = Sandbox::new().await?;
    let a = submit(&sandbox, &[]).await?;
    let b = submit(&sandbox, &[&a]).await?;
    let c = submit(&sandbox, &[&b]).await?;
    for task in [&a, &b, &c] {
        finish(&sandbox, task, result(true, "m-1")).await?;
    }
    sandbox.published().await?;
    let preview = sandbox.baton.rollback_preview(&a.tenant, &a.id).await?;
    let previewed: Vec<TaskId> = preview.rolled_back.iter().map(|t| t.id).collect();
    assert_eq!(previewed, [a.id, b.id, c.id]);
    assert_eq!(preview.tokens(), (120, 6));

    let request = json!({"tenant": "acme", "task_id": a.id.to_string(), "reason": "bad model"});
    let twice: Vec<String> = ["r-1", "r-2"]
        .iter()
        .map(|id| eventbridge_event("RollbackRequested", id, request.clone()))
        .collect();
    let response = baton_fn_rollback::handle(&sandbox.baton, sqs_batch(&twice)).await;
    assert!(response.failed.is_empty(), "{response:?}");
    let seen = pump(&sandbox).await?;
    for task in [&a, &b, &c] {
        let task = reload(&sandbox, task).await?;
        assert_eq!(task.status, Status::RolledBack);
        let taint = task.taint.unwrap();
        assert_eq!((taint.root, taint.request.as_str()), (a.id, "r-1"));
        let rolled_back = seen[&task.id.to_string()]
            .iter()
            .filter(|kind| *kind == "TaskRolledBack")
            .count();
        assert_eq!(rolled_back, 1, "one TaskRolledBack for {}", task.id);
    }
    let walked: Vec<TaskId> = sandbox
        .baton
        .lineage(&a.tenant, &a.id, Direction::Downstream, 5)
        .await?
        .nodes
        .iter()
        .filter(|t| t.status == Status::RolledBack)
        .map(|t| t.id)
        .collect();
    assert_eq!(
        walked, previewed,
        "the preview listed exactly what was rolled back"
    );
    Ok(())
}

#[tokio::test]
async fn a_write_that_read_the_dependents_before_a_new_one_joined_loses_and_keeps_it() -> Result<()>
{
    let sandbox = Sandbox::new().await?;
    let store = baton_aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&baton_tests::emulator().await),
        &sandbox.settings.table,
    );
    let a = submit(&sandbox, &[]).await?;
    let stale = reload(&sandbox, &a).await?;
    let b = submit(&sandbox, &[&a]).await?;
    let Ok(baton_domain::Decision::Apply(cancel)) = baton_domain::decide(
        &stale,
        &Command::Cancel { reason: "x".into() },
        sandbox.baton.now(),
    ) else {
        panic!("a scheduled task may be cancelled");
    };
    match store.commit(&stale, &cancel.task, None, None).await? {
        Commit::Conflict(Some(stored)) => assert_eq!(stored.dependents, [b.id]),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Through the service the cancel is decided again on the stored task and keeps B listed.
    sandbox
        .baton
        .execute(&a.tenant, &a.id, &Command::Cancel { reason: "x".into() })
        .await?;
    let a = reload(&sandbox, &a).await?;
    assert_eq!(
        (a.status, a.dependents.as_slice()),
        (Status::Cancelled, &[b.id][..])
    );
    Ok(())
}

#[tokio::test]
async fn unknown_and_foreign_dependencies_are_refused_and_results_are_found_by_model() -> Result<()>
{
    let sandbox = Sandbox::new().await?;
    let a = submit(&sandbox, &[]).await?;
    let missing = TaskId::from_uuid(uuid::Uuid::now_v7());
    let foreign = serde_json::from_value(json!({
        "tenant": "globex", "project": "graph", "name": "step", "tier": "cpu",
        "depends_on": [a.id.to_string(), missing.to_string()]
    }))?;
    let id = TaskId::from_uuid(uuid::Uuid::now_v7());
    match sandbox.baton.submit(&foreign, id).await {
        Err(SubmitError::Dependency(DependencyError::Unknown(ids))) => {
            assert_eq!(ids, [a.id, missing]);
        }
        other => panic!("expected unknown dependencies, got {other:?}"),
    }
    let b = submit(&sandbox, &[]).await?;
    let c = submit(&sandbox, &[]).await?;
    finish(&sandbox, &a, result(true, "m-1")).await?;
    finish(&sandbox, &b, result(false, "m-1")).await?;
    finish(&sandbox, &c, result(true, "m-2")).await?;
    let query = ModelQuery {
        tenant: a.tenant.clone(),
        model: "m-1".into(),
        since: None,
        until: None,
        first: 10,
        after: None,
    };
    let found: Vec<TaskId> = sandbox
        .baton
        .produced_by(&query)
        .await?
        .tasks
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(found, [b.id, a.id], "newest result first, failed ones too");
    let next = ModelQuery {
        first: 1,
        after: Some(b.id),
        ..query
    };
    let page = sandbox.baton.produced_by(&next).await?;
    assert_eq!(page.tasks[0].id, a.id);
    assert!(!page.has_next_page);
    Ok(())
}
