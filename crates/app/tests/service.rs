//! The service's handling of duplicates, races, timers and the sweep, on in-memory adapters.

mod common;

use baton_app::{Handled, MAX_TIMER_DELAY, SweepReport, TIMER_GRACE, WakeKind};
use baton_domain::{Command, EventKind, Rejection, Status, TaskId};
use chrono::Duration;
use common::{failure, lease, request, success, world};
use serde_json::json;

#[tokio::test]
async fn a_task_due_now_is_armed_at_once_and_runs_to_success() {
    let w = world();
    let task = w.submit(json!({})).await;
    assert_eq!(w.timers.armed()[0].1, Duration::zero());
    assert!(matches!(
        w.run(
            &task,
            Command::Dispatch {
                attempt: 1,
                lease: lease()
            }
        )
        .await,
        Handled::Applied(_)
    ));
    assert!(matches!(
        w.run(&task, success(1)).await,
        Handled::Applied(_)
    ));
    let done = w.baton.task(&task.tenant, &task.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.version, done.history.len()),
        (Status::Succeeded, 3, 3)
    );
    assert_eq!(
        w.kinds(),
        [EventKind::Submitted, EventKind::Ready, EventKind::Succeeded]
    );
    assert_eq!(w.store.wake(&task.tenant, &task.id), None);
}

#[tokio::test]
async fn a_result_delivered_twice_makes_one_transition_and_repeats_its_event() {
    let w = world();
    let task = w.submit(json!({})).await;
    w.run(
        &task,
        Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
    )
    .await;
    assert!(matches!(
        w.run(&task, success(1)).await,
        Handled::Applied(_)
    ));
    assert!(matches!(
        w.run(&task, success(1)).await,
        Handled::AlreadyApplied(_)
    ));
    let done = w.baton.task(&task.tenant, &task.id).await.unwrap().unwrap();
    assert_eq!(done.history.len(), 3);
    assert_eq!(
        w.kinds()
            .iter()
            .filter(|k| **k == EventKind::Succeeded)
            .count(),
        2
    );
}

#[tokio::test]
async fn a_commit_whose_response_was_lost_counts_as_applied() {
    let w = world();
    let task = w.submit(json!({})).await;
    w.store.lose_commit_responses(1);
    let handled = w
        .run(
            &task,
            Command::Dispatch {
                attempt: 1,
                lease: lease(),
            },
        )
        .await;
    assert!(matches!(handled, Handled::Applied(t) if t.status == Status::Running));
    assert_eq!(w.kinds(), [EventKind::Submitted, EventKind::Ready]);
}

#[tokio::test]
async fn a_twin_that_loses_the_race_to_its_own_command_leaves_the_effects_to_the_winner() {
    let w = world();
    let task = w.submit(json!({})).await;
    // The same dispatch, committed a moment earlier by another invocation.
    let Ok(baton_domain::Decision::Apply(twin)) = baton_domain::decide(
        &task,
        &Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
        w.baton.now(),
    ) else {
        panic!("the task is due");
    };
    w.store.race_next_commit(twin.task);
    w.clock.advance(Duration::milliseconds(5));
    let handled = w
        .run(
            &task,
            Command::Dispatch {
                attempt: 1,
                lease: lease(),
            },
        )
        .await;
    assert!(matches!(handled, Handled::AlreadyApplied(t) if t.status == Status::Running));
    assert_eq!(
        w.kinds(),
        [EventKind::Submitted],
        "the winner publishes TaskReady"
    );
    // A repeat delivery (no race) repeats them, in case the winner stopped before them.
    w.run(
        &task,
        Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
    )
    .await;
    assert_eq!(w.kinds(), [EventKind::Submitted, EventKind::Ready]);
}

#[tokio::test]
async fn a_cancel_that_loses_the_race_to_dispatch_is_decided_again_and_wins() {
    let w = world();
    let task = w.submit(json!({})).await;
    let mut running = task.clone();
    running.status = Status::Running;
    running.version = 2;
    w.store.race_next_commit(running);
    let handled = w
        .run(
            &task,
            Command::Cancel {
                reason: "stop".into(),
            },
        )
        .await;
    assert!(
        matches!(handled, Handled::Applied(t) if t.status == Status::Cancelled && t.version == 3)
    );
}

#[tokio::test]
async fn a_result_that_loses_the_race_to_cancel_is_acknowledged_as_a_lost_race() {
    let w = world();
    let task = w.submit(json!({})).await;
    w.run(
        &task,
        Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
    )
    .await;
    let mut cancelled = w.baton.task(&task.tenant, &task.id).await.unwrap().unwrap();
    cancelled.status = Status::Cancelled;
    cancelled.version += 1;
    w.store.race_next_commit(cancelled);
    assert!(matches!(
        w.run(&task, success(1)).await,
        Handled::LostRace(Rejection::InvalidTransition {
            status: Status::Cancelled,
            ..
        })
    ));
}

#[tokio::test]
async fn a_failed_attempt_is_retried_after_backoff_then_fails_for_good() {
    let w = world();
    let task = w.submit(json!({})).await;
    let fail = failure;
    w.run(
        &task,
        Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
    )
    .await;
    let Handled::Applied(retry) = w.run(&task, fail(1)).await else {
        panic!()
    };
    assert_eq!((retry.status, retry.attempt), (Status::Scheduled, 2));
    let (timer, delay) = w.timers.armed().pop().unwrap();
    assert_eq!(timer.attempt, 2);
    assert!(delay >= Duration::seconds(5) && delay <= Duration::seconds(10));
    // The early timer of attempt 2 is armed again rather than dispatched.
    assert!(matches!(
        w.run(
            &task,
            Command::Dispatch {
                attempt: 2,
                lease: lease()
            }
        )
        .await,
        Handled::Rearmed(_)
    ));
    w.clock.advance(delay);
    w.run(
        &task,
        Command::Dispatch {
            attempt: 2,
            lease: lease(),
        },
    )
    .await;
    let Handled::Applied(failed) = w.run(&task, fail(2)).await else {
        panic!()
    };
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(w.kinds().last(), Some(&EventKind::Failed));
}

#[tokio::test]
async fn a_task_due_in_twenty_minutes_is_armed_by_the_sweeper_when_it_enters_the_window() {
    let w = world();
    let task = w.submit(json!({"delay_seconds": 1200})).await;
    assert!(w.timers.armed().is_empty());
    assert_eq!(
        w.store.wake(&task.tenant, &task.id).unwrap().kind,
        WakeKind::Arm
    );
    w.clock.advance(Duration::minutes(4));
    assert_eq!(w.baton.sweep().await.unwrap(), SweepReport::default());
    w.clock.advance(Duration::minutes(1));
    assert_eq!(w.baton.sweep().await.unwrap().armed, 1);
    let (timer, delay) = w.timers.armed().pop().unwrap();
    assert_eq!((timer.task_id, delay), (task.id, MAX_TIMER_DELAY));
    // Armed once: the next sweep leaves it alone.
    w.clock.advance(Duration::minutes(1));
    assert_eq!(w.baton.sweep().await.unwrap(), SweepReport::default());
}

#[tokio::test]
async fn the_sweeper_times_out_a_running_attempt_past_its_deadline() {
    let w = world();
    let task = w.submit(json!({})).await;
    w.run(
        &task,
        Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
    )
    .await;
    w.clock.advance(Duration::seconds(59));
    assert_eq!(w.baton.sweep().await.unwrap().timed_out, 0);
    w.clock.advance(Duration::seconds(1));
    assert_eq!(w.baton.sweep().await.unwrap().timed_out, 1);
    let retried = w.baton.task(&task.tenant, &task.id).await.unwrap().unwrap();
    assert_eq!((retried.status, retried.attempt), (Status::Scheduled, 2));
    assert_eq!(retried.error.unwrap().code, "TIMEOUT");
}

#[tokio::test]
async fn the_sweeper_arms_again_a_timer_that_was_lost() {
    let w = world();
    w.submit(json!({})).await;
    w.clock.advance(TIMER_GRACE);
    assert_eq!(w.baton.sweep().await.unwrap().rearmed, 1);
    assert_eq!(w.timers.armed().len(), 2);
    assert_eq!(
        w.baton.sweep().await.unwrap().rearmed,
        0,
        "not again before the next grace"
    );
}

#[tokio::test]
async fn submitting_the_same_id_twice_creates_one_task() {
    let w = world();
    let request = request(json!({}));
    let id = TaskId::from_uuid(uuid::Uuid::now_v7());
    assert!(!w.baton.submit(&request, id).await.unwrap().duplicate);
    assert!(w.baton.submit(&request, id).await.unwrap().duplicate);
    assert_eq!(w.kinds(), [EventKind::Submitted, EventKind::Submitted]);
}

#[tokio::test]
async fn a_command_for_an_unknown_task_is_not_found() {
    let w = world();
    let task = w.submit(json!({})).await;
    let other = TaskId::from_uuid(uuid::Uuid::now_v7());
    let cancel = Command::Cancel { reason: "x".into() };
    let handled = w
        .baton
        .execute(&task.tenant, &other, &cancel)
        .await
        .unwrap();
    assert_eq!(handled, Handled::NotFound);
}
