//! Faults at the SDK's HTTP boundary, against the emulator: each way a request can go wrong
//! between Baton and DynamoDB or EventBridge, and the outcome the service must classify it as —
//! its own write (a lost response), already applied (a redelivery), a lost race, a stale attempt —
//! with the task moved once and its history one entry per version.

use std::time::Duration;

use anyhow::Result;
use baton_app::Handled;
use baton_aws::faults::{FaultyHttp, SdkFault};
use baton_domain::{Command, Rejection, Status, Task};
use baton_tests::{Sandbox, succeed};

/// A sandbox whose service talks to the emulator through the returned fault connector, with a
/// task in its first attempt.
async fn running() -> Result<(FaultyHttp, Sandbox, Task)> {
    let faults = FaultyHttp::new();
    let sandbox = Sandbox::with_clients(|sdk| baton_aws::Clients::new(&faults.sdk(sdk))).await?;
    sandbox.unlimited("acme", "faults").await?;
    let task = sandbox.running("faults").await?;
    Ok((faults, sandbox, task))
}

/// The task moved exactly `moves` times since it was submitted, each once.
fn moved_once_each(task: &Task, status: Status, moves: u64) {
    assert_eq!((task.status, task.version), (status, 1 + moves), "{task:?}");
    assert_eq!(
        task.history.len() as u64,
        task.version,
        "{:?}",
        task.history
    );
}

#[tokio::test]
async fn a_commit_whose_response_is_lost_is_its_own_write_and_a_redelivery_finds_it_applied()
-> Result<()> {
    let (faults, sandbox, task) = running().await?;

    // The write is applied; the SDK retries on the 500 and meets its own condition.
    faults.next("TransactWriteItems", SdkFault::LoseResponse);
    let handled = sandbox.run(&task, &succeed(1)).await?;
    assert!(matches!(handled, Handled::Applied(_)), "{handled:?}");
    moved_once_each(&sandbox.reload(&task).await?, Status::Succeeded, 2);

    let again = sandbox.run(&task, &succeed(1)).await?;
    assert!(matches!(again, Handled::AlreadyApplied(_)), "{again:?}");
    moved_once_each(&sandbox.reload(&task).await?, Status::Succeeded, 2);
    assert_eq!(faults.injected().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_lost_response_the_sdk_gives_up_on_fails_the_message_and_its_redelivery_is_applied_once()
-> Result<()> {
    let (faults, sandbox, task) = running().await?;

    // Every attempt of the SDK loses its response: the first applies, the others meet it.
    for _ in 0..3 {
        faults.next("TransactWriteItems", SdkFault::LoseResponse);
    }
    let failed = sandbox.run(&task, &succeed(1)).await;
    assert!(failed.is_err(), "{failed:?}");
    moved_once_each(&sandbox.reload(&task).await?, Status::Succeeded, 2);

    let redelivered = sandbox.run(&task, &succeed(1)).await?;
    assert!(
        matches!(redelivered, Handled::AlreadyApplied(_)),
        "{redelivered:?}"
    );
    // The redelivery announces what the lost run could not.
    let published = sandbox.published().await?;
    assert!(
        published.iter().any(|(kind, _)| kind == "TaskSucceeded"),
        "{published:?}"
    );
    Ok(())
}

#[tokio::test]
async fn throttling_and_unavailable_answers_are_retried_by_the_sdk() -> Result<()> {
    let (faults, sandbox, task) = running().await?;

    faults
        .next("GetItem", SdkFault::Throttle)
        .next("TransactWriteItems", SdkFault::Unavailable)
        .next("PutEvents", SdkFault::Throttle);
    let handled = sandbox.run(&task, &succeed(1)).await?;
    assert!(matches!(handled, Handled::Applied(_)), "{handled:?}");
    moved_once_each(&sandbox.reload(&task).await?, Status::Succeeded, 2);
    assert_eq!(faults.injected().len(), 3);
    Ok(())
}

#[tokio::test]
async fn a_duplicated_write_applies_once_and_a_duplicated_event_carries_the_same_version()
-> Result<()> {
    let (faults, sandbox, task) = running().await?;
    sandbox.published().await?;

    faults
        .next("TransactWriteItems", SdkFault::Duplicate)
        .next("PutEvents", SdkFault::Duplicate);
    let handled = sandbox.run(&task, &succeed(1)).await?;
    assert!(matches!(handled, Handled::Applied(_)), "{handled:?}");
    moved_once_each(&sandbox.reload(&task).await?, Status::Succeeded, 2);

    let succeeded: Vec<_> =
        baton_tests::eventually("both copies", Duration::from_secs(5), || async {
            let published = sandbox.published().await?;
            let copies: Vec<u64> = published
                .iter()
                .filter(|(kind, _)| kind == "TaskSucceeded")
                .filter_map(|(_, detail)| detail["version"].as_u64())
                .collect();
            Ok((copies.len() >= 2).then_some(copies))
        })
        .await?;
    assert_eq!(succeeded, vec![3, 3], "consumers drop the copy by version");
    Ok(())
}

#[tokio::test]
async fn a_result_held_back_while_a_cancel_commits_loses_the_race() -> Result<()> {
    let (faults, sandbox, task) = running().await?;

    // The result reads the running task, then its write waits while the cancel commits.
    faults.next(
        "TransactWriteItems",
        SdkFault::Delay(Duration::from_millis(500)),
    );
    let cancel = Command::Cancel {
        reason: "stop".into(),
    };
    let result_1 = succeed(1);
    let (result, cancelled) = tokio::join!(sandbox.run(&task, &result_1), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        sandbox.run(&task, &cancel).await
    });
    assert!(matches!(cancelled?, Handled::Applied(_)));
    let result = result?;
    assert!(
        matches!(
            result,
            Handled::LostRace(Rejection::InvalidTransition { .. })
        ),
        "{result:?}"
    );
    moved_once_each(&sandbox.reload(&task).await?, Status::Cancelled, 2);
    Ok(())
}

#[tokio::test]
async fn a_result_held_back_past_its_timeout_is_stale() -> Result<()> {
    let (faults, sandbox, task) = running().await?;
    sandbox.clock.advance(chrono::Duration::seconds(2));

    // The result's write waits while the timeout retries the task: attempt 1 is then stale.
    faults.next(
        "TransactWriteItems",
        SdkFault::Delay(Duration::from_millis(500)),
    );
    let timeout = Command::TimeOut { attempt: 1 };
    let result_1 = succeed(1);
    let (result, timed_out) = tokio::join!(sandbox.run(&task, &result_1), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        sandbox.run(&task, &timeout).await
    });
    assert!(matches!(timed_out?, Handled::Applied(_)));
    let stale = Rejection::StaleAttempt {
        current: 2,
        received: 1,
    };
    assert_eq!(result?, Handled::LostRace(stale.clone()));
    // Delivered again, it is rejected as stale outright.
    assert_eq!(
        sandbox.run(&task, &succeed(1)).await?,
        Handled::Rejected(stale)
    );
    let after = sandbox.reload(&task).await?;
    moved_once_each(&after, Status::Scheduled, 2);
    assert_eq!(after.attempt, 2);
    Ok(())
}
