//! Flow control on in-memory adapters: the concurrency limit and its ready set, kill switches,
//! pause/resume and idempotency keys.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use baton_app::faults::{Fault, Faults, Faulty};
use baton_app::{
    Baton, DRAIN_INTERVAL, Gates, Handled, Operator, ReadySet, Store, SubmitError, TaskStore,
};
use baton_domain::{
    Command, ControlEvent, EventKind, Gate, ProjectId, Scope, Status, Task, TaskId, Tenant,
};
use chrono::Duration;
use common::{World, lease, request, success, world};
use serde_json::json;

const OPS: Operator<'static> = Operator {
    by: "ops",
    reason: "testing",
};

fn acme() -> (Tenant, ProjectId) {
    (
        Tenant::parse("acme").unwrap(),
        ProjectId::parse("p").unwrap(),
    )
}

fn project_scope() -> Scope {
    let (tenant, project) = acme();
    Scope::Project { tenant, project }
}

impl World {
    async fn dispatch(&self, task: &Task) -> Handled {
        self.run(
            task,
            Command::Dispatch {
                attempt: task.attempt,
                lease: lease(),
            },
        )
        .await
    }

    /// The tasks whose timers were armed since `from`, in arming order.
    fn armed_since(&self, from: usize) -> Vec<TaskId> {
        self.timers.armed()[from..]
            .iter()
            .map(|(timer, _)| timer.task_id)
            .collect()
    }

    /// Limit 1: `holder` runs and `waiting` waits in the ready set.
    async fn one_slot_taken(&self) -> (Task, Task) {
        let (tenant, project) = acme();
        self.baton
            .set_limit(&tenant, &project, 1, &OPS)
            .await
            .unwrap();
        let holder = self.submit(json!({})).await;
        let waiting = self.submit(json!({})).await;
        assert!(matches!(self.dispatch(&holder).await, Handled::Applied(_)));
        assert_eq!(
            self.dispatch(&waiting).await,
            Handled::Parked(Gate::Capacity)
        );
        (holder, waiting)
    }

    /// `holder` succeeds: the release commits, then the process dies before it admits anyone.
    async fn release_without_admission(&self, holder: &Task) {
        let running = self.reload(holder).await;
        let Ok(baton_domain::Decision::Apply(done)) =
            baton_domain::decide(&running, &success(1), self.baton.now())
        else {
            panic!("a result applies to a running task")
        };
        self.store
            .commit(&running, &done.task, None, None)
            .await
            .unwrap();
    }

    async fn running(&self) -> u64 {
        let (tenant, project) = acme();
        let status = self.baton.project_status(&tenant, &project).await.unwrap();
        status.count(Status::Running)
    }
}

#[tokio::test]
async fn a_full_project_parks_due_tasks_and_a_released_slot_admits_the_highest_priority() {
    let w = world();
    let (tenant, project) = acme();
    w.baton.set_limit(&tenant, &project, 2, &OPS).await.unwrap();
    let mut tasks = Vec::new();
    for priority in [0, 0, 0, 0, 7] {
        tasks.push(w.submit(json!({"priority": priority})).await);
    }
    for task in &tasks[..2] {
        assert!(matches!(w.dispatch(task).await, Handled::Applied(_)));
    }
    for task in &tasks[2..] {
        assert_eq!(w.dispatch(task).await, Handled::Parked(Gate::Capacity));
    }
    assert_eq!(w.running().await, 2);
    assert_eq!(w.baton.queued(&tenant, &project).await.unwrap(), 3);
    let parked = w.reload(&tasks[2]).await;
    assert_eq!(
        (parked.status, parked.version, parked.parked.map(|p| p.gate)),
        (Status::Scheduled, 1, Some(Gate::Capacity))
    );
    assert_eq!(
        w.store.wake(&tenant, &parked.id),
        None,
        "drained, not swept"
    );
    let parked_events = w
        .kinds()
        .iter()
        .filter(|k| **k == EventKind::Parked)
        .count();
    assert_eq!(parked_events, 3);
    assert_eq!(
        w.dispatch(&tasks[2]).await,
        Handled::Parked(Gate::Capacity),
        "a duplicate timer"
    );
    let parked_events = w
        .kinds()
        .iter()
        .filter(|k| **k == EventKind::Parked)
        .count();
    assert_eq!(
        parked_events, 3,
        "parking again for the same reason is silent"
    );

    let before = w.timers.armed().len();
    w.run(&tasks[0], success(1)).await;
    assert_eq!(
        w.armed_since(before),
        [tasks[4].id],
        "priority 7 goes first"
    );
    assert!(matches!(w.dispatch(&tasks[4]).await, Handled::Applied(_)));
    assert_eq!(w.reload(&tasks[4]).await.parked, None);
    assert_eq!(w.running().await, 2);

    let before = w.timers.armed().len();
    let failure = Command::Cancel {
        reason: "stop".into(),
    };
    w.run(&tasks[1], failure).await;
    assert_eq!(w.armed_since(before), [tasks[2].id], "then by due time");
    assert_eq!(
        w.baton.queued(&tenant, &project).await.unwrap(),
        1,
        "an admitted task leaves the ready set, so no other admission arms it"
    );
    // The freed slot is held for tasks[2] until it starts: neither another admission nor a task
    // that comes due meanwhile takes it.
    let status = w.baton.project_status(&tenant, &project).await.unwrap();
    assert_eq!((status.count(Status::Running), status.reserved), (1, 1));
    let before = w.timers.armed().len();
    w.baton.admit(&tenant, &project, 10).await.unwrap();
    assert_eq!(w.armed_since(before), []);
    let latecomer = w.submit(json!({"priority": 1000})).await;
    assert_eq!(
        w.dispatch(&latecomer).await,
        Handled::Parked(Gate::Capacity)
    );
    assert!(matches!(w.dispatch(&tasks[2]).await, Handled::Applied(_)));
    let status = w.baton.project_status(&tenant, &project).await.unwrap();
    assert_eq!((status.count(Status::Running), status.reserved), (2, 0));
    assert_eq!(w.baton.queued(&tenant, &project).await.unwrap(), 2);
}

#[tokio::test]
async fn a_reserved_task_a_closed_gate_refuses_gives_its_slot_back() {
    let w = world();
    let (tenant, project) = acme();
    let (first, waiting) = w.one_slot_taken().await;
    let third = w.submit(json!({})).await;
    assert_eq!(w.dispatch(&third).await, Handled::Parked(Gate::Capacity));
    w.run(&first, success(1)).await;
    assert!(
        w.reload(&waiting).await.reserved,
        "the first in line holds the slot"
    );

    w.baton.pause(&tenant, &project, &OPS).await.unwrap();
    assert_eq!(w.dispatch(&waiting).await, Handled::Parked(Gate::Paused));
    let status = w.baton.project_status(&tenant, &project).await.unwrap();
    assert_eq!(status.reserved, 0, "a parked task holds no slot");
    assert!(!w.reload(&waiting).await.reserved);

    w.baton.resume(&tenant, &project, &OPS, 10).await.unwrap();
    assert!(w.reload(&waiting).await.reserved);
    let cancel = Command::Cancel {
        reason: "no longer needed".into(),
    };
    assert!(matches!(w.run(&waiting, cancel).await, Handled::Applied(_)));
    let status = w.baton.project_status(&tenant, &project).await.unwrap();
    assert_eq!(
        (status.count(Status::Running), status.reserved),
        (0, 0),
        "a cancel gives the held slot back"
    );
    w.baton.admit(&tenant, &project, 10).await.unwrap();
    assert!(matches!(w.dispatch(&third).await, Handled::Applied(_)));
}

#[tokio::test]
async fn a_slot_of_a_task_whose_result_never_comes_is_recovered_after_its_timeout() {
    let w = world();
    let (_silent, waiting) = w.one_slot_taken().await;
    w.clock.advance(Duration::seconds(61));
    let before = w.timers.armed().len();
    let report = w.baton.sweep().await.unwrap();
    assert_eq!(report.timed_out, 1);
    assert!(w.armed_since(before).contains(&waiting.id));
    // The timed-out task retries later; the waiting one takes the slot meanwhile.
    assert!(matches!(w.dispatch(&waiting).await, Handled::Applied(_)));
    assert_eq!(w.running().await, 1);
}

/// Strikes the first reservation with a lost answer the SDK sends again: the slot is held for
/// the task, and the admission is told it was not waiting.
struct FirstReservationRetried(std::sync::atomic::AtomicBool);

impl Faults for FirstReservationRetried {
    fn strike(&self, operation: &'static str, _write: bool) -> Option<Fault> {
        let first = operation == "reserve" && !self.0.swap(true, Ordering::SeqCst);
        first.then_some(Fault::Retry)
    }
}

/// Found by the model-based test (seed 4683752362147837713): a drain's admission that took the
/// last slot without learning it, then found the project full, ended the drain while a task
/// still waited; no release admitted it after that.
#[tokio::test]
async fn a_drain_goes_on_while_a_task_waits_though_its_admission_lost_an_answer() {
    let w = world();
    let (tenant, project) = acme();
    w.baton.set_limit(&tenant, &project, 1, &OPS).await.unwrap();
    let holder = w.submit(json!({})).await;
    let first = w.submit(json!({"priority": 5})).await;
    let second = w.submit(json!({})).await;
    assert!(matches!(w.dispatch(&holder).await, Handled::Applied(_)));
    for waiting in [&first, &second] {
        assert_eq!(w.dispatch(waiting).await, Handled::Parked(Gate::Capacity));
    }
    w.release_without_admission(&holder).await;

    let faults = Arc::new(FirstReservationRetried(Default::default()));
    let store: Arc<dyn Store> = Arc::new(Faulty::new(w.store.clone(), faults));
    let faulty = Baton::new(store, w.bus.clone(), w.timers.clone(), w.clock.clone());
    w.clock.advance(DRAIN_INTERVAL);
    let before = w.timers.armed().len();
    let report = faulty.sweep().await.unwrap();
    assert_eq!((report.admitted, report.drained), (0, 0), "{report:?}");
    assert!(
        w.armed_since(before).is_empty(),
        "the first one's timer was never armed"
    );
    let status = w.baton.project_status(&tenant, &project).await.unwrap();
    assert!(
        status.drain.is_some(),
        "the second one still waits: {status:?}"
    );

    // The first one's backstop arms its timer; it runs in the slot held for it, and its end
    // admits the second.
    w.clock.advance(baton_app::TIMER_GRACE);
    let before = w.timers.armed().len();
    w.baton.sweep().await.unwrap();
    assert!(w.armed_since(before).contains(&first.id));
    assert!(matches!(w.dispatch(&first).await, Handled::Applied(_)));
    let before = w.timers.armed().len();
    w.run(&first, success(1)).await;
    assert_eq!(w.armed_since(before), [second.id]);
    assert!(matches!(w.dispatch(&second).await, Handled::Applied(_)));
}

#[tokio::test]
async fn the_sweeper_admits_what_a_crash_after_a_release_left_waiting() {
    let w = world();
    let (tenant, project) = acme();
    let (first, second) = w.one_slot_taken().await;
    w.release_without_admission(&first).await;
    assert_eq!(w.running().await, 0);

    let before = w.timers.armed().len();
    assert_eq!(w.baton.sweep().await.unwrap().admitted, 0, "not due yet");
    w.clock.advance(DRAIN_INTERVAL);
    let report = w.baton.sweep().await.unwrap();
    assert_eq!(report.admitted, 1);
    assert_eq!(w.armed_since(before), [second.id]);
    assert!(matches!(w.dispatch(&second).await, Handled::Applied(_)));
    w.run(&second, success(1)).await;

    w.clock.advance(DRAIN_INTERVAL);
    let report = w.baton.sweep().await.unwrap();
    assert_eq!((report.admitted, report.drained), (0, 1), "the drain ends");
    assert_eq!(w.store.drain(&tenant, &project).await.unwrap(), None);
}

#[tokio::test]
async fn a_task_that_comes_due_while_others_wait_for_a_free_slot_joins_them() {
    for (newcomer_priority, first_in_line) in [(-5, "waiting"), (9, "newcomer")] {
        let w = world();
        let (holder, waiting) = w.one_slot_taken().await;
        w.release_without_admission(&holder).await;

        let newcomer = w.submit(json!({"priority": newcomer_priority})).await;
        assert_eq!(
            w.dispatch(&newcomer).await,
            Handled::Parked(Gate::Capacity),
            "the free slot is not the newcomer's to take"
        );
        let (first, second) = match first_in_line {
            "waiting" => (&waiting, &newcomer),
            _ => (&newcomer, &waiting),
        };
        assert!(w.reload(first).await.reserved, "{first_in_line} goes first");
        assert!(matches!(w.dispatch(first).await, Handled::Applied(_)));
        assert_eq!(w.dispatch(second).await, Handled::Parked(Gate::Capacity));
        assert_eq!(w.running().await, 1);
    }
}

#[tokio::test]
async fn a_batch_reads_each_kill_switch_once_and_the_next_batch_sees_an_engage() {
    let w = world();
    let (tenant, _) = acme();
    let first = w.submit(json!({})).await;
    let second = w.submit(json!({})).await;
    let dispatch = Command::Dispatch {
        attempt: 1,
        lease: lease(),
    };
    let batch = Gates::default();
    let started = w
        .baton
        .execute_in(&batch, &tenant, &first.id, &dispatch)
        .await;
    assert!(matches!(started, Ok(Handled::Applied(_))));
    // Engaged after this batch read the switches: the batch's view stands.
    w.baton
        .set_kill_switch(&Scope::Global, true, &OPS)
        .await
        .unwrap();
    let same_batch = w
        .baton
        .execute_in(&batch, &tenant, &second.id, &dispatch)
        .await;
    assert!(matches!(same_batch, Ok(Handled::Applied(_))));
    // Any batch that reads it afterwards starts nothing.
    let third = w.submit(json!({})).await;
    let next_batch = Gates::default();
    let held = w
        .baton
        .execute_in(&next_batch, &tenant, &third.id, &dispatch)
        .await;
    assert_eq!(held.unwrap(), Handled::Parked(Gate::GlobalKillSwitch));
}

#[tokio::test]
async fn a_missing_or_engaged_kill_switch_stops_dispatch_until_disengaged() {
    let w = world();
    let task = w.submit(json!({})).await;
    w.baton
        .set_kill_switch(&Scope::Global, true, &OPS)
        .await
        .unwrap();
    assert_eq!(
        w.dispatch(&task).await,
        Handled::Parked(Gate::GlobalKillSwitch)
    );
    w.store.delete_kill_switch(&Scope::Global);
    assert_eq!(w.baton.kill_switch(&Scope::Global).await.unwrap(), None);
    assert_eq!(
        w.dispatch(&task).await,
        Handled::Parked(Gate::GlobalKillSwitch)
    );

    let before = w.timers.armed().len();
    let released = w
        .baton
        .set_kill_switch(&Scope::Global, false, &OPS)
        .await
        .unwrap();
    assert!(!released.engaged);
    assert_eq!(
        w.armed_since(before),
        [task.id],
        "released tasks go at once"
    );
    assert!(matches!(w.dispatch(&task).await, Handled::Applied(_)));
    let history = w
        .baton
        .kill_switch_history(&Scope::Global, 10)
        .await
        .unwrap();
    assert_eq!(
        history.iter().map(|s| s.engaged).collect::<Vec<_>>(),
        [false, true]
    );
    assert!(matches!(
        &w.bus.announced()[..],
        [
            ControlEvent::KillSwitch { engaged: true, .. },
            ControlEvent::KillSwitch { engaged: false, .. }
        ]
    ));
}

#[tokio::test]
async fn a_project_kill_switch_stops_only_its_project_and_a_deleted_one_is_not_recreated() {
    let w = world();
    let stopped = w.submit(json!({})).await;
    let other = w.submit(json!({"project": "q"})).await;
    w.baton
        .set_kill_switch(&project_scope(), true, &OPS)
        .await
        .unwrap();
    assert_eq!(
        w.dispatch(&stopped).await,
        Handled::Parked(Gate::ProjectKillSwitch)
    );
    assert!(matches!(w.dispatch(&other).await, Handled::Applied(_)));

    w.store.delete_kill_switch(&project_scope());
    let later = w.submit(json!({})).await;
    assert_eq!(w.baton.kill_switch(&project_scope()).await.unwrap(), None);
    assert_eq!(
        w.dispatch(&later).await,
        Handled::Parked(Gate::ProjectKillSwitch)
    );
    w.baton
        .set_kill_switch(&project_scope(), false, &OPS)
        .await
        .unwrap();
    assert!(matches!(w.dispatch(&stopped).await, Handled::Applied(_)));
}

#[tokio::test]
async fn a_paused_project_parks_and_resume_rearms_at_the_given_rate() {
    let w = world();
    let (tenant, project) = acme();
    w.baton
        .set_limit(&tenant, &project, 100, &OPS)
        .await
        .unwrap();
    let running = w.submit(json!({})).await;
    w.dispatch(&running).await;
    w.baton.pause(&tenant, &project, &OPS).await.unwrap();
    let mut parked = Vec::new();
    for _ in 0..6 {
        let task = w.submit(json!({})).await;
        assert_eq!(w.dispatch(&task).await, Handled::Parked(Gate::Paused));
        parked.push(task);
    }
    assert!(
        matches!(w.run(&running, success(1)).await, Handled::Applied(_)),
        "running tasks finish"
    );
    let status = w.baton.project_status(&tenant, &project).await.unwrap();
    assert_eq!(status.gate(), Some(Gate::Paused));

    let before = w.timers.armed().len();
    let status = w.baton.resume(&tenant, &project, &OPS, 2).await.unwrap();
    assert_eq!(status.paused, None);
    let delays: Vec<i64> = w.timers.armed()[before..]
        .iter()
        .map(|(_, delay)| delay.num_milliseconds())
        .collect();
    assert_eq!(delays, [0, 500, 1000, 1500, 2000, 2500]);
    for task in &parked {
        assert!(matches!(w.dispatch(task).await, Handled::Applied(_)));
    }
    assert!(matches!(
        &w.bus.announced()[1..],
        [
            ControlEvent::Pause { paused: true, .. },
            ControlEvent::Pause { paused: false, .. }
        ]
    ));
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_task_or_refuses_a_different_payload() {
    let w = world();
    let keyed = request(json!({"idempotency_key": "order-17", "input": {"n": 1}}));
    let first = TaskId::from_uuid(uuid::Uuid::now_v7());
    let created = w.baton.submit(&keyed, first).await.unwrap();
    assert!(!created.duplicate);
    let again = w
        .baton
        .submit(&keyed, TaskId::from_uuid(uuid::Uuid::now_v7()))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.task.id, first);
    assert_eq!(again.task.idempotency_key.as_deref(), Some("order-17"));

    let changed = request(json!({"idempotency_key": "order-17", "input": {"n": 2}}));
    let refused = w
        .baton
        .submit(&changed, TaskId::from_uuid(uuid::Uuid::now_v7()))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, SubmitError::IdempotencyConflict { task_id, .. } if task_id == first)
    );
    let (tenant, project) = acme();
    let status = w.baton.project_status(&tenant, &project).await.unwrap();
    assert_eq!(status.total(), 1);
}

#[tokio::test]
async fn controls_refuse_out_of_range_arguments() {
    let w = world();
    let (tenant, project) = acme();
    assert!(w.baton.set_limit(&tenant, &project, 0, &OPS).await.is_err());
    assert!(w.baton.resume(&tenant, &project, &OPS, 0).await.is_err());
    let silent = Operator {
        by: "ops",
        reason: " ",
    };
    assert!(w.baton.pause(&tenant, &project, &silent).await.is_err());
    assert!(w.bus.announced().is_empty());
}

#[tokio::test]
async fn a_sweep_past_its_deadline_starts_nothing_and_the_next_one_does_the_work() {
    let w = world();
    let task = w.submit(json!({"delay_seconds": 3600})).await;
    w.clock.advance(Duration::minutes(50));
    let late = std::time::Instant::now();
    let cut = w.baton.sweep_until(Some(late)).await.unwrap();
    assert!(cut.cut_short);
    assert_eq!(cut.armed, 0, "nothing started after the deadline");
    let later = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let next = w.baton.sweep_until(Some(later)).await.unwrap();
    assert_eq!((next.armed, next.cut_short), (1, false));
    assert_eq!(w.timers.armed().last().unwrap().0.task_id, task.id);
}

/// Several slots of a full project are freed at once, by results handled in parallel; the
/// admissions they start arm timers that SQS delivers in any order. Whatever the interleaving,
/// the tasks that start are the highest-priority ones of those waiting, and the limit holds.
#[test]
fn slots_freed_at_once_go_to_the_highest_priorities_in_500_trials() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    for trial in 0..500 {
        let seed = fastrand::u64(..);
        runtime
            .block_on(free_slots_at_once(seed))
            .unwrap_or_else(|inversion| {
                panic!("trial {trial} (seed {seed}): {inversion}");
            });
    }
}

async fn free_slots_at_once(seed: u64) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let w = std::sync::Arc::new(world());
    let (tenant, project) = acme();
    let limit = rng.u32(2..=5);
    w.baton
        .set_limit(&tenant, &project, limit, &OPS)
        .await
        .unwrap();
    let mut running = Vec::new();
    for _ in 0..limit {
        let task = w.submit(json!({"priority": -1000})).await;
        assert!(matches!(w.dispatch(&task).await, Handled::Applied(_)));
        running.push(task);
    }
    // Distinct priorities, so admission order has one right answer.
    let mut priorities: Vec<i32> = (-500..500).collect();
    rng.shuffle(&mut priorities);
    let mut waiting = Vec::new();
    for &priority in &priorities[..12] {
        let task = w.submit(json!({"priority": priority})).await;
        assert_eq!(w.dispatch(&task).await, Handled::Parked(Gate::Capacity));
        waiting.push(task);
    }
    while !running.is_empty() {
        let armed = w.timers.armed().len();
        let finishing: Vec<_> = running
            .drain(..)
            .map(|task| {
                let w = w.clone();
                tokio::spawn(async move { w.run(&task, success(task.attempt)).await })
            })
            .collect();
        for handled in finishing {
            assert!(matches!(handled.await.unwrap(), Handled::Applied(_)));
        }
        let mut timers: Vec<_> = w.timers.armed()[armed..].to_vec();
        rng.shuffle(&mut timers);
        for (timer, _) in timers {
            let task = waiting.iter().find(|t| t.id == timer.task_id).unwrap();
            if let Handled::Applied(started) = w.dispatch(task).await {
                running.push(*started);
            }
        }
        if running.len() > limit as usize {
            return Err(format!(
                "{} running, above the limit {limit}",
                running.len()
            ));
        }
        waiting.retain(|task| running.iter().all(|r| r.id != task.id));
        let lowest_started = running.iter().map(|t| t.priority).min();
        let highest_waiting = waiting.iter().map(|t| t.priority).max();
        if let (Some(started), Some(waits)) = (lowest_started, highest_waiting)
            && waits > started
        {
            return Err(format!(
                "priority {started} started while priority {waits} waits"
            ));
        }
        let filled = running.len() == (limit as usize).min(running.len() + waiting.len());
        if !filled {
            return Err(format!(
                "{} of {limit} slots filled while {} wait",
                running.len(),
                waiting.len()
            ));
        }
    }
    Ok(())
}
