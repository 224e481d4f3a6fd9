//! Task graphs: when a dependent starts, what a finished task asks of its dependents, and what a
//! rollback leaves behind.

use baton_domain::{
    Cascade, Command, Decision, DependencyError, EventKind, Lease, Outcome, Provenance, Rejection,
    Status, Step, SubmitRequest, Taint, Task, TaskError, TaskId, check_dependencies, decide,
};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

/// The lease every dispatch in these tests draws.
fn lease() -> Lease {
    Lease::from_random([7; 16])
}

fn t0() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

fn id() -> TaskId {
    TaskId::from_uuid(uuid::Uuid::now_v7())
}

fn task(depends_on: &[TaskId], status: Status) -> Task {
    let request: SubmitRequest = serde_json::from_value(json!({
        "tenant": "acme", "project": "etl", "name": "step", "tier": "cpu",
        "depends_on": depends_on.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "retry": {"max_attempts": 1}
    }))
    .unwrap();
    Task::submitted(request.validate(t0()).unwrap(), id(), t0(), status)
}

fn applied(task: &Task, command: &Command, now: DateTime<Utc>) -> Task {
    match decide(task, command, now) {
        Ok(Decision::Apply(transition)) => transition.task,
        other => panic!("{command:?} on {:?}: {other:?}", task.status),
    }
}

fn succeeded(mut task: Task, provenance: Option<Provenance>) -> Task {
    task.dependents = vec![id(), id()];
    let running = applied(
        &task,
        &Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
        t0(),
    );
    let complete = Command::Complete {
        lease: Some(lease()),
        attempt: 1,
        outcome: Outcome::Succeeded {
            output: json!({"rows": 3}),
        },
        provenance,
    };
    applied(&running, &complete, t0())
}

fn provenance() -> Provenance {
    serde_json::from_value(json!({
        "model": "claude-sonnet-4", "tokens_in": 1200, "tokens_out": 300, "worker_id": "w-1",
        "artifacts": [{"uri": "s3://out/a.parquet", "digest": "sha256:ab"}],
        "started_at": "2026-03-01T12:00:00Z", "finished_at": "2026-03-01T12:00:05Z"
    }))
    .unwrap()
}

#[test]
fn a_pending_task_is_released_once_every_dependency_has_succeeded() {
    let (a, b) = (id(), id());
    let pending = task(&[a, b], Status::Pending);
    let one_done = Command::Release {
        dependencies: vec![(a, Status::Succeeded), (b, Status::Running)],
    };
    assert_eq!(
        decide(&pending, &one_done, t0()),
        Err(Rejection::DependenciesOpen { open: vec![b] })
    );
    let later = t0() + Duration::minutes(3);
    let both_done = Command::Release {
        dependencies: vec![(b, Status::Succeeded), (a, Status::Succeeded)],
    };
    let Ok(Decision::Apply(release)) = decide(&pending, &both_done, later) else {
        panic!("expected a release");
    };
    let released = &release.task;
    assert_eq!((released.status, released.version), (Status::Scheduled, 2));
    assert_eq!(released.due_at, later, "due now, not at submission");
    assert_eq!(released.history.last().unwrap().cause, "released");
    let event = &release.effects.events[0];
    assert_eq!(event.kind, EventKind::Released);
    assert_eq!(event.depends_on, [a, b]);
    assert!(release.effects.timer.is_some());
    // The second parent's release of the same task finds it done.
    assert!(matches!(
        decide(released, &both_done, later),
        Ok(Decision::AlreadyApplied(_))
    ));
}

#[test]
fn a_pending_submission_is_announced_with_what_it_waits_for() {
    let a = id();
    let pending = task(&[a], Status::Pending);
    let effects = baton_domain::Effects::of(&pending);
    assert_eq!(effects.events[0].kind, EventKind::Submitted);
    assert_eq!(effects.events[0].status, Status::Pending);
    assert_eq!(effects.events[0].depends_on, [a]);
    assert_eq!(effects.timer, None, "nothing to arm before its release");
}

#[test]
fn a_finished_task_asks_its_dependents_to_start_or_to_stop() {
    let done = succeeded(task(&[], Status::Scheduled), None);
    let cascade = Cascade::of(&done).unwrap();
    assert_eq!(cascade.step, Step::Release);
    assert_eq!(cascade.dependents, done.dependents);

    let mut failing = task(&[], Status::Scheduled);
    failing.dependents = vec![id()];
    let running = applied(
        &failing,
        &Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
        t0(),
    );
    let error = TaskError {
        code: "E".into(),
        message: "m".into(),
        retryable: true,
    };
    let failed = applied(
        &running,
        &Command::Complete {
            lease: Some(lease()),
            attempt: 1,
            outcome: Outcome::Failed { error },
            provenance: None,
        },
        t0(),
    );
    assert_eq!(
        Cascade::of(&failed).unwrap().step,
        Step::Cancel {
            reason: format!("dependency {} failed", failed.id)
        }
    );
    assert_eq!(Cascade::of(&task(&[], Status::Scheduled)), None);
}

#[test]
fn a_rollback_taints_the_task_and_hands_the_taint_on_to_its_dependents() {
    let done = succeeded(task(&[], Status::Scheduled), Some(provenance()));
    let taint = Taint {
        root: done.id,
        via: None,
        request: "req-1".into(),
    };
    let rollback = Command::Rollback {
        reason: "bad model".into(),
        taint: taint.clone(),
    };
    let Ok(Decision::Apply(transition)) = decide(&done, &rollback, t0()) else {
        panic!("expected a rollback");
    };
    let rolled_back = &transition.task;
    assert_eq!(rolled_back.taint.as_ref(), Some(&taint));
    let event = &transition.effects.events[0];
    assert_eq!(event.kind, EventKind::RolledBack);
    assert_eq!(event.provenance, Some(provenance()), "for compensation");
    assert_eq!(event.taint.as_ref(), Some(&taint));
    let Some(Step::Rollback { taint: passed, .. }) = transition
        .effects
        .cascade
        .clone()
        .map(|cascade| cascade.step)
    else {
        panic!("expected the walk to go on");
    };
    assert_eq!(passed.via, Some(done.id));
    assert_eq!(passed.root, done.id);
    // The same request again repeats the effects; another request changes nothing.
    assert_eq!(
        decide(rolled_back, &rollback, t0()),
        Ok(Decision::AlreadyApplied(transition.effects.clone()))
    );
    let again = Command::Rollback {
        reason: "bad model".into(),
        taint: Taint {
            request: "req-2".into(),
            ..taint
        },
    };
    assert_eq!(
        decide(rolled_back, &again, t0()),
        Ok(Decision::AlreadyApplied(Default::default()))
    );
}

#[test]
fn a_result_records_its_provenance_and_checks_its_bounds() {
    let done = succeeded(task(&[], Status::Scheduled), Some(provenance()));
    assert_eq!(done.provenance, Some(provenance()));
    assert_eq!(provenance().tokens(), 1500);
    let mut wrong = provenance();
    wrong.model = Some(String::new());
    assert_eq!(
        wrong.check().unwrap_err(),
        "provenance.model must be 1 to 256 characters"
    );
    wrong = provenance();
    wrong.finished_at = Some(t0() - Duration::seconds(1));
    assert!(wrong.check().is_err());
    assert_eq!(provenance().check(), Ok(()));
}

#[test]
fn dependencies_are_checked_and_decide_the_first_status() {
    let a = task(&[], Status::Scheduled);
    let done = succeeded(task(&[], Status::Scheduled), None);
    let new = id();
    assert_eq!(
        check_dependencies(new, &[a.id, done.id], &[a.clone(), done.clone()]),
        Ok(Status::Pending)
    );
    assert_eq!(
        check_dependencies(new, &[done.id], std::slice::from_ref(&done)),
        Ok(Status::Scheduled)
    );
    let missing = id();
    assert_eq!(
        check_dependencies(new, &[a.id, missing], std::slice::from_ref(&a)),
        Err(DependencyError::Unknown(vec![missing]))
    );
    let cycle = check_dependencies(a.id, &[a.id], std::slice::from_ref(&a)).unwrap_err();
    assert_eq!(cycle, DependencyError::Cycle(vec![a.id]));
    assert_eq!(cycle.code(), "DEPENDENCY_CYCLE");
    let cancelled = applied(&a, &Command::Cancel { reason: "x".into() }, t0());
    let err = check_dependencies(new, &[a.id], &[cancelled]).unwrap_err();
    assert_eq!(err.task_ids(), [a.id]);
    assert!(err.to_string().contains("is CANCELLED"), "{err}");
}
