//! A project's slots in lanes on the DynamoDB store: a limit above one lane's spreads its tasks
//! over lanes, each within its share; waiting tasks are admitted across lanes highest priority
//! first; and a task an earlier version started (its slot in the project's own count) keeps
//! working across the upgrade. Handlers run in-process against a fresh sandbox.

use anyhow::Result;
use baton_app::Operator;
use baton_domain::{
    Command, Decision, LANE_SLOTS, ProjectId, Status, SubmitRequest, Task, TaskId, Tenant, decide,
    lanes_for,
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

fn reports() -> ProjectId {
    ProjectId::parse("reports").unwrap()
}

async fn submit(sandbox: &Sandbox, priority: i32) -> Result<Task> {
    let request: SubmitRequest = serde_json::from_value(json!({"tenant": "acme",
        "project": "reports", "name": "n", "tier": "gpu", "timeout_seconds": 60,
        "priority": priority}))?;
    let id = TaskId::from_uuid(uuid::Uuid::now_v7());
    Ok(sandbox.baton.submit(&request, id).await?.task)
}

/// Runs `on-due` on every deliverable timer, ten to a batch as the queue delivers them.
async fn fire_due(sandbox: &Sandbox) -> Result<()> {
    for batch in sandbox.due_timers().await?.chunks(10) {
        let response = baton_fn_on_due::handle(&sandbox.baton, sqs_batch(batch)).await;
        assert!(response.failed.is_empty(), "{response:?}");
    }
    Ok(())
}

/// `tasks` succeed, their results delivered in one batch.
async fn succeed(sandbox: &Sandbox, tasks: &[Task]) -> Result<()> {
    let mut events = Vec::new();
    for task in tasks {
        let lease = sandbox.reload(task).await?.lease;
        let result = json!({"tenant": "acme", "task_id": task.id.to_string(), "attempt": 1,
            "lease": lease, "status": "succeeded", "output": {}});
        let id = baton_tests::unique("e");
        events.push(baton_tests::eventbridge_event("TaskResult", &id, result));
    }
    let response = baton_fn_on_result::handle(&sandbox.baton, sqs_batch(&events)).await;
    assert!(response.failed.is_empty(), "{response:?}");
    Ok(())
}

fn admitted(timers: &[String]) -> Vec<String> {
    let id = |body: &String| serde_json::from_str::<Value>(body).unwrap()["task_id"].clone();
    let mut ids: Vec<String> = timers
        .iter()
        .map(|body| id(body).as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn slots_spread_over_lanes_each_within_its_share_and_freed_ones_go_to_the_highest_priorities()
-> Result<()> {
    let sandbox = Sandbox::new().await?;
    // Three lanes: shares of 34, 33 and 33.
    let limit = 2 * LANE_SLOTS + 20;
    sandbox
        .baton
        .set_limit(&acme(), &reports(), limit, &OPS)
        .await?;
    let mut running = Vec::new();
    for _ in 0..limit {
        running.push(submit(&sandbox, 0).await?);
    }
    fire_due(&sandbox).await?;
    let status = sandbox.baton.project_status(&acme(), &reports()).await?;
    assert_eq!(status.count(Status::Running), u64::from(limit));
    assert_eq!(status.lanes, [34, 33, 33], "every lane full at its share");

    for trial in 0..2 {
        // Waiting tasks of distinct priorities, submitted in no order of them.
        let mut waiting = Vec::new();
        for priority in [7, -3, 12, 0, 25, -40, 3, 18, 9, -1, 30, 5] {
            waiting.push(submit(&sandbox, priority + trial * 100).await?);
        }
        fire_due(&sandbox).await?;
        for task in &waiting {
            let task = sandbox.reload(task).await?;
            assert_eq!((task.status, task.lane), (Status::Scheduled, None));
        }
        // Five slots freed at once, in all lanes: the five highest priorities take them.
        let freed: Vec<Task> = running.drain(..5).collect();
        succeed(&sandbox, &freed).await?;
        let timers = sandbox.due_timers().await?;
        waiting.sort_by_key(|task| -task.priority);
        let mut first: Vec<String> = waiting[..5].iter().map(|t| t.id.to_string()).collect();
        first.sort();
        assert_eq!(
            admitted(&timers),
            first,
            "trial {trial}: admitted in priority order"
        );
        for batch in timers.chunks(10) {
            baton_fn_on_due::handle(&sandbox.baton, sqs_batch(batch)).await;
        }
        let status = sandbox.baton.project_status(&acme(), &reports()).await?;
        assert_eq!(status.count(Status::Running), u64::from(limit));
        assert_eq!(status.lanes.iter().sum::<u64>(), u64::from(limit));
        for (lane, &taken) in status.lanes.iter().enumerate() {
            let share = status.controls().share(u16::try_from(lane)?);
            assert!(
                taken <= share,
                "trial {trial}: lane {lane} holds {taken} of {share}"
            );
        }
        for task in waiting.drain(..5) {
            running.push(sandbox.reload(&task).await?);
        }
        // The rest wait on: cancel them for the next trial.
        for task in waiting {
            let cancel = Command::Cancel {
                reason: "next trial".to_owned(),
            };
            sandbox.run(&task, &cancel).await?;
        }
    }

    // A lowered limit keeps its lanes (their tasks give slots back to them) and shares itself
    // over the lanes it needs.
    sandbox
        .baton
        .set_limit(&acme(), &reports(), 5, &OPS)
        .await?;
    let status = sandbox.baton.project_status(&acme(), &reports()).await?;
    assert_eq!(status.lanes.len(), 3);
    assert_eq!(status.controls().active_lanes(), lanes_for(5));
    succeed(&sandbox, &running).await?;
    let status = sandbox.baton.project_status(&acme(), &reports()).await?;
    assert_eq!(
        (status.count(Status::Running), &status.lanes[..]),
        (0, &[0, 0, 0][..])
    );
    Ok(())
}

#[tokio::test]
async fn a_task_started_before_lanes_gives_its_slot_back_to_the_project_s_own_count() -> Result<()>
{
    let sandbox = Sandbox::new().await?;
    sandbox
        .baton
        .set_limit(&acme(), &reports(), 2, &OPS)
        .await?;
    // Started as an earlier version did: no lane, its slot in the project's own count.
    let old = submit(&sandbox, 0).await?;
    sandbox.due_timers().await?;
    let dispatch = Command::Dispatch {
        attempt: 1,
        lease: baton_tests::lease(),
    };
    let Ok(Decision::Apply(started)) = decide(&old, &dispatch, sandbox.baton.now()) else {
        panic!("a due task is dispatched");
    };
    assert_eq!(started.task.lane, None);
    let store = baton_aws::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&baton_tests::emulator().await),
        &sandbox.settings.table,
    );
    baton_app::TaskStore::commit(&store, &old, &started.task, None, None).await?;
    let status = sandbox.baton.project_status(&acme(), &reports()).await?;
    assert_eq!((status.legacy, status.count(Status::Running)), (1, 1));

    // The limit left after it is what the lanes share: one more starts, the next waits.
    let new = submit(&sandbox, 0).await?;
    let waiting = submit(&sandbox, 0).await?;
    fire_due(&sandbox).await?;
    assert_eq!(sandbox.reload(&new).await?.lane, Some(0));
    assert_eq!(sandbox.reload(&waiting).await?.status, Status::Scheduled);

    // Its result gives its slot back where it took it, and the waiting task is admitted into
    // the lane the whole limit is shared over again.
    succeed(&sandbox, &[old]).await?;
    fire_due(&sandbox).await?;
    let admitted = sandbox.reload(&waiting).await?;
    assert_eq!((admitted.status, admitted.lane), (Status::Running, Some(0)));
    let status = sandbox.baton.project_status(&acme(), &reports()).await?;
    assert_eq!(
        (
            status.legacy,
            status.count(Status::Running),
            &status.lanes[..]
        ),
        (0, 2, &[2][..])
    );
    Ok(())
}

#[tokio::test]
async fn a_project_of_many_lanes_lists_every_task_newest_first_across_its_partitions() -> Result<()>
{
    let sandbox = Sandbox::new().await?;
    // Listed in one partition before the limit spreads its entries over several.
    let mut submitted = Vec::new();
    for _ in 0..3 {
        submitted.push(submit(&sandbox, 0).await?.id);
    }
    sandbox
        .baton
        .set_limit(&acme(), &reports(), 1000, &OPS)
        .await?;
    for _ in 0..22 {
        submitted.push(submit(&sandbox, 0).await?.id);
    }
    submitted.reverse();
    let mut listed = Vec::new();
    let mut query = baton_app::TaskQuery::project(acme(), reports(), 7);
    loop {
        let page = sandbox.baton.tasks(&query).await?;
        listed.extend(page.tasks.iter().map(|task| task.id));
        query.after = page.tasks.last().map(|task| task.id);
        if !page.has_next_page {
            break;
        }
    }
    assert_eq!(listed, submitted, "every task once, newest first");
    Ok(())
}
