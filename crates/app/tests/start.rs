//! A task due now started at its submission (`Start::Here`, what the `submit` function does):
//! dispatched in the same call, through the same gates as a timer's dispatch, and dispatched
//! again by a repeated submission only while its dispatch may have lost its events.

mod common;

use baton_app::{Gates, Handled, Operator, Start, Submitted, TaskStore};
use baton_domain::{Command, EventKind, Gate, ProjectId, Scope, Status, TaskId, Tenant};
use common::{World, request, success, world};
use serde_json::json;

const OPS: Operator<'static> = Operator {
    by: "ops",
    reason: "testing",
};

impl World {
    /// Submits `extra` as task `id`, started here with a batch's own switches.
    async fn submit_here(&self, id: TaskId, extra: serde_json::Value) -> Submitted {
        let switches = Gates::default();
        self.baton
            .submit_in(&request(extra), id, Start::Here(&switches))
            .await
            .unwrap()
    }

    fn ready_events(&self) -> usize {
        self.kinds()
            .iter()
            .filter(|k| **k == EventKind::Ready)
            .count()
    }
}

fn new_id() -> TaskId {
    TaskId::from_uuid(uuid::Uuid::now_v7())
}

#[tokio::test]
async fn a_task_due_now_runs_at_its_submission_without_a_timer_and_a_later_one_gets_its_timer() {
    let w = world();
    let now = w.submit_here(new_id(), json!({})).await;
    let Some(Handled::Applied(running)) = &now.started else {
        panic!("dispatched at submission: {:?}", now.started)
    };
    assert_eq!((running.status, running.version), (Status::Running, 2));
    assert_eq!(now.task.status, Status::Scheduled, "the task as created");
    assert_eq!(
        w.kinds(),
        [EventKind::Submitted, EventKind::Ready],
        "announced, then handed to its tier"
    );
    assert!(w.timers.armed().is_empty(), "no hop through the due queue");

    let later = w.submit_here(new_id(), json!({"delay_seconds": 30})).await;
    assert_eq!(later.started, None);
    let armed = w.timers.armed();
    assert_eq!(armed.len(), 1);
    assert_eq!(
        (armed[0].0.task_id, armed[0].1),
        (later.task.id, chrono::Duration::seconds(30))
    );
    assert_eq!(w.ready_events(), 1);
}

#[tokio::test]
async fn a_task_started_at_its_submission_meets_the_gates_a_timer_meets() {
    let w = world();
    let tenant = Tenant::parse("acme").unwrap();
    let project = |name: &str| ProjectId::parse(name).unwrap();
    w.baton
        .pause(&tenant, &project("paused"), &OPS)
        .await
        .unwrap();
    let paused = w.submit_here(new_id(), json!({"project": "paused"})).await;
    assert_eq!(paused.started, Some(Handled::Parked(Gate::Paused)));

    w.baton
        .set_limit(&tenant, &project("p"), 1, &OPS)
        .await
        .unwrap();
    let first = w.submit_here(new_id(), json!({})).await;
    assert!(matches!(first.started, Some(Handled::Applied(_))));
    let full = w.submit_here(new_id(), json!({})).await;
    assert_eq!(full.started, Some(Handled::Parked(Gate::Capacity)));

    w.baton
        .set_kill_switch(&Scope::Global, true, &OPS)
        .await
        .unwrap();
    let killed = w.submit_here(new_id(), json!({"project": "q"})).await;
    assert_eq!(
        killed.started,
        Some(Handled::Parked(Gate::GlobalKillSwitch))
    );
    assert_eq!(w.ready_events(), 1, "only the one that got a slot");
    assert!(
        w.timers.armed().is_empty(),
        "the parked wait in their ready sets"
    );
}

#[tokio::test]
async fn a_submission_delivered_again_repeats_its_announcement_and_a_dispatch_whose_events_were_lost()
 {
    let w = world();
    let id = new_id();
    // The first delivery created the task and committed its dispatch, then died before
    // publishing `TaskReady`.
    let created = w.baton.submit(&request(json!({})), id).await.unwrap().task;
    let dispatch = Command::Dispatch {
        attempt: 1,
        lease: common::lease(),
    };
    let Ok(baton_domain::Decision::Apply(dispatched)) =
        baton_domain::decide(&created, &dispatch, w.baton.now())
    else {
        panic!("a due task is dispatched")
    };
    w.store
        .commit(&created, &dispatched.task, None, None)
        .await
        .unwrap();
    assert_eq!(w.ready_events(), 0);

    let again = w.submit_here(id, json!({})).await;
    assert!(again.duplicate);
    assert!(
        matches!(again.started, Some(Handled::AlreadyApplied(_))),
        "{:?}",
        again.started
    );
    assert_eq!(w.ready_events(), 1, "the lost TaskReady, published now");
    assert_eq!(w.reload(&created).await.version, 2, "moved once");
    let submitted = |w: &World| -> Vec<baton_domain::Event> {
        let published = w.bus.published();
        published
            .into_iter()
            .filter(|e| e.kind == EventKind::Submitted)
            .collect()
    };
    let announced = submitted(&w);
    assert_eq!(announced.len(), 2, "its announcement, repeated as it was");
    assert_eq!(announced[0], announced[1]);

    w.run(&created, success(1)).await;
    let late = w.submit_here(id, json!({})).await;
    assert_eq!(
        late.started, None,
        "past its dispatch: no dispatch to repeat"
    );
    assert_eq!(w.ready_events(), 1);
    assert_eq!(submitted(&w).len(), 3, "the announcement is repeated still");
    assert_eq!(submitted(&w)[2], announced[0]);
    assert_eq!(w.reload(&created).await.status, Status::Succeeded);
}
