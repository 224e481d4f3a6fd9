//! Flow control on the DynamoDB store: the gate inside the dispatch transaction (limit, pause,
//! kill switches present and disengaged), the ready set, admission through the due queue, and
//! idempotency keys under concurrency. Handlers run in-process against a fresh sandbox.

use anyhow::Result;
use baton_app::{Handled, Operator, SubmitError};
use baton_domain::{
    Command, Gate, Lease, ProjectId, Scope, Status, SubmitRequest, Task, TaskId, Tenant,
};
use baton_tests::{Sandbox, sqs_batch};
use serde_json::{Value, json};

const OPS: Operator<'static> = Operator {
    by: "ops",
    reason: "test",
};

fn acme() -> Tenant {
    Tenant::parse("acme").unwrap()
}

fn project(name: &str) -> ProjectId {
    ProjectId::parse(name).unwrap()
}

fn request(project: &str, extra: Value) -> SubmitRequest {
    let mut request = json!({"tenant": "acme", "project": project, "name": "n", "tier": "gpu",
        "timeout_seconds": 60});
    request
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(request).unwrap()
}

async fn submit(sandbox: &Sandbox, project: &str, extra: Value) -> Result<Task> {
    let id = TaskId::from_uuid(uuid::Uuid::now_v7());
    Ok(sandbox
        .baton
        .submit(&request(project, extra), id)
        .await?
        .task)
}

/// Runs `on-due` on every deliverable timer.
async fn fire_due(sandbox: &Sandbox) -> Result<()> {
    let timers = sandbox.due_timers().await?;
    let response = baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&timers)).await;
    assert!(response.failed.is_empty(), "{response:?}");
    Ok(())
}

async fn reload(sandbox: &Sandbox, task: &Task) -> Result<Task> {
    Ok(sandbox.baton.task(&task.tenant, &task.id).await?.unwrap())
}

async fn gate_of(sandbox: &Sandbox, task: &Task) -> Result<Option<Gate>> {
    let task = reload(sandbox, task).await?;
    assert_eq!(
        task.status,
        Status::Scheduled,
        "a held task stays Scheduled"
    );
    Ok(task.parked.map(|p| p.gate))
}

fn timer_ids(timers: &[String]) -> Vec<String> {
    timers
        .iter()
        .map(|body| serde_json::from_str::<Value>(body).unwrap()["task_id"].to_string())
        .map(|id| id.trim_matches('"').to_owned())
        .collect()
}

#[tokio::test]
async fn a_full_project_parks_due_tasks_and_a_release_admits_the_highest_priority() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let p = project("reports");
    sandbox.baton.set_limit(&acme(), &p, 1, &OPS).await?;
    let first = submit(&sandbox, "reports", json!({})).await?;
    fire_due(&sandbox).await?;
    let normal = submit(&sandbox, "reports", json!({})).await?;
    let urgent = submit(&sandbox, "reports", json!({"priority": 9})).await?;
    fire_due(&sandbox).await?;
    assert_eq!(reload(&sandbox, &first).await?.status, Status::Running);
    assert_eq!(gate_of(&sandbox, &normal).await?, Some(Gate::Capacity));
    assert_eq!(gate_of(&sandbox, &urgent).await?, Some(Gate::Capacity));
    assert_eq!(sandbox.baton.queued(&acme(), &p).await?, 2);
    let parked: Vec<Value> = sandbox
        .published()
        .await?
        .into_iter()
        .filter(|(kind, _)| kind == "TaskParked")
        .map(|(_, detail)| detail)
        .collect();
    assert_eq!(parked.len(), 2);
    assert_eq!(parked[0]["parked"]["gate"], "CAPACITY");

    let lease = reload(&sandbox, &first).await?.lease;
    let result = json!({"tenant": "acme", "task_id": first.id.to_string(), "attempt": 1,
        "lease": lease, "status": "succeeded", "output": {}});
    let event = baton_tests::eventbridge_event("TaskResult", &baton_tests::unique("e"), result);
    baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[event])).await;
    let admitted = sandbox.due_timers().await?;
    assert_eq!(timer_ids(&admitted), [urgent.id.to_string()]);
    // The freed slot is held for the urgent task: one that comes due meanwhile waits.
    assert!(reload(&sandbox, &urgent).await?.reserved);
    let status = sandbox.baton.project_status(&acme(), &p).await?;
    assert_eq!((status.count(Status::Running), status.reserved), (0, 1));
    let latecomer = submit(&sandbox, "reports", json!({"delay_seconds": 0})).await?;
    let dispatch = Command::Dispatch {
        attempt: 1,
        lease: Lease::from_random([1; 16]),
    };
    let handled = sandbox
        .baton
        .execute(&acme(), &latecomer.id, &dispatch)
        .await?;
    assert_eq!(handled, Handled::Parked(Gate::Capacity));
    baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&admitted)).await;
    let running = reload(&sandbox, &urgent).await?;
    assert_eq!(
        (running.status, running.parked, running.reserved),
        (Status::Running, None, false)
    );
    assert_eq!(sandbox.baton.queued(&acme(), &p).await?, 2);
    let status = sandbox.baton.project_status(&acme(), &p).await?;
    assert_eq!(
        (status.count(Status::Running), status.reserved, status.limit),
        (1, 0, 1)
    );
    Ok(())
}

#[tokio::test]
async fn a_missing_or_engaged_global_switch_stops_dispatch_until_disengaged() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let task = submit(&sandbox, "reports", json!({})).await?;
    sandbox.delete_item("KILL#global", "SWITCH").await?;
    fire_due(&sandbox).await?;
    assert_eq!(
        gate_of(&sandbox, &task).await?,
        Some(Gate::GlobalKillSwitch)
    );
    let status = sandbox
        .baton
        .project_status(&acme(), &project("reports"))
        .await?;
    assert_eq!(status.global_switch, None);
    assert_eq!(status.gate(), Some(Gate::GlobalKillSwitch));

    sandbox
        .baton
        .set_kill_switch(&Scope::Global, true, &OPS)
        .await?;
    sandbox
        .baton
        .set_kill_switch(&Scope::Global, false, &OPS)
        .await?;
    let released = sandbox.due_timers().await?;
    assert_eq!(timer_ids(&released), [task.id.to_string()]);
    baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&released)).await;
    assert_eq!(reload(&sandbox, &task).await?.status, Status::Running);
    let history = sandbox
        .baton
        .kill_switch_history(&Scope::Global, 10)
        .await?;
    let engaged: Vec<bool> = history.iter().map(|s| s.engaged).collect();
    assert_eq!(engaged, [false, true], "newest first");
    assert_eq!(history[0].last.by, "ops");
    Ok(())
}

#[tokio::test]
async fn a_project_switch_holds_only_its_project_and_stays_fail_closed_when_deleted() -> Result<()>
{
    let sandbox = Sandbox::new().await?;
    let held = submit(&sandbox, "reports", json!({})).await?;
    let other = submit(&sandbox, "billing", json!({})).await?;
    let scope = Scope::Project {
        tenant: acme(),
        project: project("reports"),
    };
    sandbox.baton.set_kill_switch(&scope, true, &OPS).await?;
    fire_due(&sandbox).await?;
    assert_eq!(
        gate_of(&sandbox, &held).await?,
        Some(Gate::ProjectKillSwitch)
    );
    assert_eq!(reload(&sandbox, &other).await?.status, Status::Running);

    sandbox.delete_item("KILL#acme#reports", "SWITCH").await?;
    let later = submit(&sandbox, "reports", json!({})).await?;
    assert_eq!(
        sandbox.baton.kill_switch(&scope).await?,
        None,
        "not recreated"
    );
    fire_due(&sandbox).await?;
    assert_eq!(
        gate_of(&sandbox, &later).await?,
        Some(Gate::ProjectKillSwitch)
    );

    sandbox.baton.set_kill_switch(&scope, false, &OPS).await?;
    fire_due(&sandbox).await?;
    // Released tasks start at 10 per second: the second one's timer is a second behind.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    fire_due(&sandbox).await?;
    assert_eq!(reload(&sandbox, &held).await?.status, Status::Running);
    assert_eq!(reload(&sandbox, &later).await?.status, Status::Running);
    Ok(())
}

#[tokio::test]
async fn a_paused_project_parks_and_resume_rearms_at_the_given_rate() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let p = project("reports");
    let first = submit(&sandbox, "reports", json!({})).await?;
    sandbox.baton.pause(&acme(), &p, &OPS).await?;
    let mut parked = vec![first];
    for _ in 0..3 {
        parked.push(submit(&sandbox, "reports", json!({})).await?);
    }
    fire_due(&sandbox).await?;
    for task in &parked {
        assert_eq!(gate_of(&sandbox, task).await?, Some(Gate::Paused));
    }
    let status = sandbox.baton.resume(&acme(), &p, &OPS, 2).await?;
    assert_eq!(status.paused, None);
    // 2 per second: one at once, the others 1 and 2 seconds later.
    let due = sandbox.due_timers().await?;
    assert_eq!(due.len(), 1);
    assert_eq!(sandbox.delayed_timers().await?, 3);
    assert_eq!(sandbox.baton.project_status(&acme(), &p).await?.reserved, 4);
    // Paused again before they start: each gives its held slot back as it parks.
    sandbox.baton.pause(&acme(), &p, &OPS).await?;
    baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&due)).await;
    let status = sandbox.baton.project_status(&acme(), &p).await?;
    assert_eq!(
        (status.reserved, sandbox.baton.queued(&acme(), &p).await?),
        (3, 1)
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_submits_with_one_idempotency_key_create_one_task() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let keyed = request(
        "reports",
        json!({"idempotency_key": "order-17", "input": {"n": 1}}),
    );
    let submits = (0..8).map(|_| {
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        let (baton, keyed) = (&sandbox.baton, &keyed);
        async move { baton.submit(keyed, id).await }
    });
    let results = futures_util::future::join_all(submits).await;
    let ids: std::collections::BTreeSet<TaskId> = results
        .into_iter()
        .map(|submitted| submitted.map(|s| s.task.id))
        .collect::<Result<_, _>>()?;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let first = *ids.first().unwrap();

    let changed = request(
        "reports",
        json!({"idempotency_key": "order-17", "input": {"n": 2}}),
    );
    let id = TaskId::from_uuid(uuid::Uuid::now_v7());
    match sandbox.baton.submit(&changed, id).await {
        Err(SubmitError::IdempotencyConflict { task_id, .. }) => assert_eq!(task_id, first),
        other => panic!("expected a conflict, got {other:?}"),
    }
    sandbox.count().await?;
    let status = sandbox
        .baton
        .project_status(&acme(), &project("reports"))
        .await?;
    assert_eq!(status.total(), 1);
    Ok(())
}

/// `holder` succeeds: the release commits through the store alone, as if the process died right
/// after it, before any admission.
async fn release_without_admission(sandbox: &Sandbox, holder: &Task) -> Result<()> {
    let store = baton_aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&baton_tests::emulator().await),
        &sandbox.settings.table,
    );
    let running = reload(sandbox, holder).await?;
    let success = baton_domain::Command::Complete {
        lease: running.lease.clone(),
        attempt: 1,
        outcome: baton_domain::Outcome::Succeeded { output: json!({}) },
        provenance: None,
    };
    let Ok(baton_domain::Decision::Apply(done)) =
        baton_domain::decide(&running, &success, sandbox.baton.now())
    else {
        panic!("a result applies to a running task");
    };
    baton_app::TaskStore::commit(&store, &running, &done.task, None, None).await?;
    Ok(())
}

#[tokio::test]
async fn a_task_due_while_others_wait_for_a_free_slot_joins_them() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let (holder, waiting) = one_slot_taken(&sandbox).await?;
    release_without_admission(&sandbox, &holder).await?;
    let newcomer = submit(&sandbox, "reports", json!({"priority": -5})).await?;
    fire_due(&sandbox).await?;
    assert_eq!(gate_of(&sandbox, &newcomer).await?, Some(Gate::Capacity));
    assert!(
        reload(&sandbox, &waiting).await?.reserved,
        "the first in line"
    );
    fire_due(&sandbox).await?;
    assert_eq!(reload(&sandbox, &waiting).await?.status, Status::Running);
    assert_eq!(gate_of(&sandbox, &newcomer).await?, Some(Gate::Capacity));
    Ok(())
}

/// A project with limit 1 whose slot is held by `holder` (Running) while `waiting` is parked.
async fn one_slot_taken(sandbox: &Sandbox) -> Result<(Task, Task)> {
    sandbox
        .baton
        .set_limit(&acme(), &project("reports"), 1, &OPS)
        .await?;
    let holder = submit(sandbox, "reports", json!({"timeout_seconds": 30})).await?;
    fire_due(sandbox).await?;
    let waiting = submit(sandbox, "reports", json!({})).await?;
    fire_due(sandbox).await?;
    assert_eq!(reload(sandbox, &holder).await?.status, Status::Running);
    assert_eq!(gate_of(sandbox, &waiting).await?, Some(Gate::Capacity));
    Ok((holder, waiting))
}

#[tokio::test]
async fn a_slot_held_by_a_task_whose_result_never_comes_is_recovered_after_its_timeout()
-> Result<()> {
    let sandbox = Sandbox::new().await?;
    let (holder, waiting) = one_slot_taken(&sandbox).await?;
    sandbox.clock.advance(chrono::Duration::seconds(31));
    let report = baton_fn_sweeper::handle(&sandbox.baton, baton_tests::lambda_deadline()).await?;
    assert_eq!(report.timed_out, 1, "{report:?}");
    let admitted = sandbox.due_timers().await?;
    assert!(timer_ids(&admitted).contains(&waiting.id.to_string()));
    baton_fn_on_due::handle(&sandbox.baton, sqs_batch(&admitted)).await;
    assert_eq!(reload(&sandbox, &waiting).await?.status, Status::Running);
    let timed_out = reload(&sandbox, &holder).await?;
    assert_eq!(timed_out.error.map(|e| e.code).as_deref(), Some("TIMEOUT"));
    Ok(())
}

#[tokio::test]
async fn the_sweeper_admits_what_a_crash_between_release_and_admission_left_waiting() -> Result<()>
{
    let sandbox = Sandbox::new().await?;
    let (holder, waiting) = one_slot_taken(&sandbox).await?;
    release_without_admission(&sandbox, &holder).await?;
    assert!(sandbox.due_timers().await?.is_empty(), "nobody admitted");

    sandbox.clock.advance(baton_app::DRAIN_INTERVAL);
    let report = baton_fn_sweeper::handle(&sandbox.baton, baton_tests::lambda_deadline()).await?;
    assert_eq!(report.admitted, 1, "{report:?}");
    fire_due(&sandbox).await?;
    assert_eq!(reload(&sandbox, &waiting).await?.status, Status::Running);
    Ok(())
}
