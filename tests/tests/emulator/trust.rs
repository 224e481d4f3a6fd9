//! Trust boundaries, in process against the emulator: a worker's result moves a task only with
//! the lease its attempt was given; an event speaks for a tenant only from that tenant's own
//! sources; a tenant's subscription connections are counted, and capped, in the table.

use anyhow::Result;
use baton_app::{Caller, Connections, Handled};
use baton_aws::DynamoConnections;
use baton_domain::{Command, Lease, Outcome, Status, Task, Tenant};
use baton_tests::{Sandbox, eventbridge_event, lease, sqs_batch, unique};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

/// `detail_type` with `detail`, as a rule delivers it, put on the bus from `source`.
fn from_source(source: &str, detail_type: &str, detail: Value) -> String {
    let mut event: Value =
        serde_json::from_str(&eventbridge_event(detail_type, &unique("e"), detail)).unwrap();
    event["source"] = json!(source);
    event.to_string()
}

fn succeeded(task: &Task, lease: Value) -> Value {
    json!({"tenant": task.tenant, "task_id": task.id, "attempt": task.attempt, "lease": lease,
        "status": "succeeded", "output": {"from": "a forger"}})
}

#[tokio::test]
async fn a_result_without_its_attempts_lease_leaves_the_task_as_it_was() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let task = sandbox.running("trust").await?;
    assert_eq!(task.lease, Some(lease()));
    // Right ids, through the function that consumes results: without a lease, with a guessed
    // one. Both are acknowledged (logged as rejections), neither moves the task.
    for forged in [Value::Null, json!("f".repeat(32))] {
        let event = eventbridge_event("TaskResult", &unique("e"), succeeded(&task, forged));
        let batch = baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[event])).await;
        assert!(batch.failed.is_empty(), "{batch:?}");
    }
    assert_eq!(sandbox.reload(&task).await?, task, "nothing moved");
    let guessed = Command::Complete {
        attempt: 1,
        lease: Some(Lease::from_random([9; 16])),
        outcome: Outcome::Succeeded { output: json!(1) },
        provenance: None,
    };
    let Handled::Rejected(rejection) = sandbox.run(&task, &guessed).await? else {
        panic!("a forged result was not rejected");
    };
    assert_eq!(rejection.code(), "INVALID_LEASE");

    // The first attempt fails honestly; the second gets a lease of its own, and the first
    // attempt's worker can no longer answer for anything.
    sandbox.run(&task, &baton_tests::fail(1)).await?;
    sandbox.clock.advance(Duration::minutes(2));
    let second = Command::Dispatch {
        attempt: 2,
        lease: Lease::from_random([8; 16]),
    };
    sandbox.run(&task, &second).await?;
    let rerunning = sandbox.reload(&task).await?;
    assert_eq!((rerunning.status, rerunning.attempt), (Status::Running, 2));
    let old = json!(lease().as_str());
    for attempt in [1, 2] {
        let mut detail = succeeded(&rerunning, old.clone());
        detail["attempt"] = json!(attempt);
        let event = eventbridge_event("TaskResult", &unique("e"), detail);
        let batch = baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[event])).await;
        assert!(batch.failed.is_empty(), "{batch:?}");
    }
    assert_eq!(sandbox.reload(&task).await?, rerunning, "nothing moved");
    let mut honest = succeeded(&rerunning, json!("08".repeat(16)));
    honest["output"] = json!({"from": "the worker"});
    let event = eventbridge_event("TaskResult", &unique("e"), honest);
    baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&[event])).await;
    let done = sandbox.reload(&task).await?;
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.output, Some(json!({"from": "the worker"})));
    Ok(())
}

#[tokio::test]
async fn cancels_rollbacks_and_submissions_from_another_tenants_source_are_parked_unapplied()
-> Result<()> {
    let sandbox = Sandbox::new().await?;
    let running = sandbox.running("trust").await?;
    let finished = sandbox.running("trust").await?;
    sandbox.run(&finished, &baton_tests::succeed(1)).await?;
    let finished = sandbox.reload(&finished).await?;
    sandbox.published().await?;

    let cancel = json!({"tenant": "acme", "task_id": running.id, "reason": "forged"});
    let rollback = json!({"tenant": "acme", "task_id": finished.id, "reason": "forged"});
    let submit = json!({"tenant": "acme", "project": "trust", "name": "n", "tier": "gpu"});
    for source in ["globex.app", "acme-evil", "acmeco.app", "baton.tests"] {
        let refused = [
            baton_fn_cancel::handle(
                &sandbox.baton,
                sqs_batch(&[from_source(source, "CancelTask", cancel.clone())]),
            )
            .await,
            baton_fn_rollback::handle(
                &sandbox.baton,
                sqs_batch(&[from_source(source, "RollbackRequested", rollback.clone())]),
            )
            .await,
            baton_fn_submit::handle(
                &sandbox.baton,
                sqs_batch(&[from_source(source, "SubmitTask", submit.clone())]),
            )
            .await,
        ];
        for batch in refused {
            let codes: Vec<&str> = batch.failed.iter().map(|f| f.error.code()).collect();
            assert_eq!(codes, ["FORBIDDEN_SOURCE"], "from {source}");
        }
    }
    assert_eq!(sandbox.reload(&running).await?, running);
    assert_eq!(sandbox.reload(&finished).await?, finished);
    assert!(
        sandbox.published().await?.is_empty(),
        "nothing was announced"
    );

    // From acme's own source, the same requests apply.
    let own = |detail_type, detail| from_source("acme.ops", detail_type, detail);
    let batch =
        baton_fn_cancel::handle(&sandbox.baton, sqs_batch(&[own("CancelTask", cancel)])).await;
    assert!(batch.failed.is_empty(), "{batch:?}");
    assert_eq!(sandbox.reload(&running).await?.status, Status::Cancelled);
    let batch = baton_fn_rollback::handle(
        &sandbox.baton,
        sqs_batch(&[own("RollbackRequested", rollback)]),
    )
    .await;
    assert!(batch.failed.is_empty(), "{batch:?}");
    assert_eq!(sandbox.reload(&finished).await?.status, Status::RolledBack);
    Ok(())
}

#[tokio::test]
async fn a_tenants_connections_are_counted_in_the_table_and_freed_by_close_or_expiry() -> Result<()>
{
    let sandbox = Sandbox::new().await?;
    let sdk = baton_tests::emulator().await;
    let connections =
        DynamoConnections::new(aws_sdk_dynamodb::Client::new(&sdk), &sandbox.settings.table);
    let acme = Tenant::parse("acme")?;
    let now = Utc::now();
    let expires = now + Duration::hours(2);
    let reserve = |id: &'static str, limit| {
        let (connections, acme) = (&connections, &acme);
        async move { connections.reserve(acme, id, limit, now, expires).await }
    };
    assert!(reserve("c1", 2).await?);
    assert!(reserve("c2", 2).await?);
    assert!(reserve("c1", 2).await?, "a connection counts once");
    assert!(!reserve("c3", 2).await?, "the tenant is full");
    let globex = Tenant::parse("globex")?;
    assert!(connections.reserve(&globex, "g1", 2, now, expires).await?);

    // A closed connection frees its place.
    let caller = Caller {
        tenant: acme.clone(),
        subject: "ada".into(),
        admin: false,
    };
    connections.open("c1", Some(&caller), expires).await?;
    connections.close("c1").await?;
    assert!(reserve("c3", 2).await?);
    // One whose close never came stops counting when it expires.
    let later = expires + Duration::minutes(1);
    let reserved = connections
        .reserve(&acme, "c4", 2, later, later + Duration::hours(2))
        .await?;
    assert!(reserved, "c2 and c3 expired");

    // Reservations racing on one tenant's item: exactly the limit wins.
    let racing = unique("racing");
    let tenant = Tenant::parse(&racing)?;
    let attempts = (0..8).map(|n| {
        let (connections, tenant) = (&connections, &tenant);
        async move {
            let id = format!("r{n}");
            connections.reserve(tenant, &id, 3, now, expires).await
        }
    });
    let won = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|outcome| matches!(outcome, Ok(true)))
        .count();
    assert_eq!(won, 3);
    Ok(())
}
