//! Races against the emulator's DynamoDB, through the service in process: two commands for one
//! task run at once, each a real read and conditional write, so they interleave as two function
//! invocations would. Each race runs `BATON_RACE_TRIALS` trials (50 here; `make reliability`
//! runs 500): exactly one command wins, and the task's history holds one entry per version.

use anyhow::Result;
use baton_app::Handled;
use baton_domain::{Command, Status, Task};
use baton_tests::{Sandbox, fail, succeed};

fn trials() -> usize {
    std::env::var("BATON_RACE_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50)
}

/// A project whose tasks never wait for a slot, in a fresh sandbox.
async fn sandbox(project: &str) -> Result<Sandbox> {
    let sandbox = Sandbox::new().await?;
    sandbox.unlimited("acme", project).await?;
    Ok(sandbox)
}

/// Runs `a` and `b` against `task` at once; answers the task after both and which won.
async fn race(sandbox: &Sandbox, task: &Task, a: &Command, b: &Command) -> Result<(Task, bool)> {
    let (first, second) = tokio::join!(sandbox.run(task, a), sandbox.run(task, b));
    let applied = |h: &Handled| matches!(h, Handled::Applied(_));
    let (first, second) = (first?, second?);
    assert!(
        applied(&first) != applied(&second),
        "exactly one of {} and {} wins: {first:?} / {second:?}",
        a.name(),
        b.name()
    );
    let after = sandbox.reload(task).await?;
    assert_eq!(after.version, task.version + 1, "one transition: {after:?}");
    assert_eq!(
        after.history.len() as u64,
        after.version,
        "one entry per version"
    );
    Ok((after, applied(&first)))
}

/// `trials()` races of `a` against `b` (named in the printed tally), each on a new task of
/// `project` in its first attempt (`past_deadline`: with its deadline passed); `expected` gives
/// the task's status and attempt after `a` won (`true`) or `b` did.
async fn one_wins_every_time(
    project: &str,
    (a_name, a): (&str, Command),
    (b_name, b): (&str, Command),
    past_deadline: bool,
    expected: impl Fn(bool) -> (Status, u32),
) -> Result<()> {
    let sandbox = sandbox(project).await?;
    let mut wins = [0, 0];
    for _ in 0..trials() {
        let task = sandbox.running(project).await?;
        if past_deadline {
            // Past the attempt's one-second deadline: the sweeper's timeout is due.
            sandbox.clock.advance(chrono::Duration::seconds(2));
        }
        let (after, a_won) = race(&sandbox, &task, &a, &b).await?;
        assert_eq!((after.status, after.attempt), expected(a_won), "{after:?}");
        wins[usize::from(a_won)] += 1;
    }
    println!(
        "{a_name} vs {b_name} over {} trials: {a_name} won {}, {b_name} won {}",
        trials(),
        wins[1],
        wins[0]
    );
    Ok(())
}

#[tokio::test]
async fn cancel_against_a_result_one_wins_every_time() -> Result<()> {
    let cancel = Command::Cancel {
        reason: "race".into(),
    };
    one_wins_every_time(
        "cancel-result",
        ("cancel", cancel),
        ("result", succeed(1)),
        false,
        |cancel_won| match cancel_won {
            true => (Status::Cancelled, 1),
            false => (Status::Succeeded, 1),
        },
    )
    .await
}

#[tokio::test]
async fn a_result_against_its_timeout_one_wins_every_time() -> Result<()> {
    let timeout = Command::TimeOut { attempt: 1 };
    one_wins_every_time(
        "result-timeout",
        ("result", succeed(1)),
        ("timeout", timeout),
        true,
        |result_won| {
            match result_won {
                true => (Status::Succeeded, 1),
                // Attempts are left: the timeout schedules the second, and the result is stale.
                false => (Status::Scheduled, 2),
            }
        },
    )
    .await
}

#[tokio::test]
async fn two_results_for_one_attempt_one_wins_every_time() -> Result<()> {
    one_wins_every_time(
        "two-results",
        ("success", succeed(1)),
        ("failure", fail(1)),
        false,
        |success_won| match success_won {
            true => (Status::Succeeded, 1),
            false => (Status::Scheduled, 2),
        },
    )
    .await
}

#[tokio::test]
async fn two_parents_succeeding_at_once_release_their_child_once() -> Result<()> {
    let sandbox = sandbox("two-parents").await?;
    for _ in 0..trials() {
        let (a, b) = (
            sandbox.running("two-parents").await?,
            sandbox.running("two-parents").await?,
        );
        let child = sandbox.submit_task("two-parents", &[a.id, b.id]).await?;
        assert_eq!(child.status, Status::Pending);
        let done = succeed(1);
        let (first, second) = tokio::join!(sandbox.run(&a, &done), sandbox.run(&b, &done));
        assert!(matches!(first?, Handled::Applied(_)));
        assert!(matches!(second?, Handled::Applied(_)));
        let after = sandbox.reload(&child).await?;
        assert_eq!(
            (after.status, after.version),
            (Status::Scheduled, 2),
            "{after:?}"
        );
        let releases = after
            .history
            .iter()
            .filter(|h| h.cause == "released")
            .count();
        assert_eq!(releases, 1, "{:?}", after.history);
    }
    Ok(())
}
