//! The lifecycle's rules, as one table and as properties.

use baton_domain::{
    Command, Decision, Effects, Event, EventKind, Lease, Outcome, Rejection, RetryPolicy, Status,
    SubmitRequest, Taint, Task, TaskError, TaskId, decide,
};
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use serde_json::json;

/// The lease every dispatch in these tests draws.
fn lease() -> Lease {
    Lease::from_random([7; 16])
}

fn t0() -> DateTime<Utc> {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

fn submitted(max_attempts: u32) -> Task {
    let request: SubmitRequest = serde_json::from_value(json!({
        "tenant": "acme", "project": "reports", "name": "render", "tier": "gpu",
        "input": {"page": 1}, "timeout_seconds": 60,
        "retry": {"max_attempts": max_attempts, "backoff_seconds": 10, "max_backoff_seconds": 600}
    }))
    .unwrap();
    let id = TaskId::from_uuid(uuid::Uuid::now_v7());
    Task::submitted(request.validate(t0()).unwrap(), id, t0(), Status::Scheduled)
}

/// A rollback requested on `task` itself, as request `request`.
fn rollback(task: &Task, request: &str) -> Command {
    Command::Rollback {
        reason: "bad output".into(),
        taint: Taint {
            root: task.id,
            via: None,
            request: request.into(),
        },
    }
}

/// A rollback that reaches a task through its dependency `via`.
fn rollback_via(via: TaskId) -> Command {
    Command::Rollback {
        reason: "bad output".into(),
        taint: Taint {
            root: via,
            via: Some(via),
            request: "r1".into(),
        },
    }
}

fn success(attempt: u32) -> Command {
    Command::Complete {
        lease: Some(lease()),
        attempt,
        outcome: Outcome::Succeeded {
            output: json!(attempt),
        },
        provenance: None,
    }
}

fn applied(task: &Task, command: Command, now: DateTime<Utc>) -> Task {
    match decide(task, &command, now) {
        Ok(Decision::Apply(transition)) => transition.task,
        other => panic!("{command:?} on {:?}: {other:?}", task.status),
    }
}

fn failure() -> Outcome {
    Outcome::Failed {
        error: TaskError {
            code: "BOOM".into(),
            message: "worker crashed".into(),
            retryable: true,
        },
    }
}

/// A task in `status`, reached through real transitions, on attempt 1, at time `t0() + 1 min`.
fn in_status(status: Status) -> Task {
    let later = t0() + Duration::minutes(1);
    let scheduled = submitted(3);
    let running = || {
        applied(
            &scheduled,
            Command::Dispatch {
                attempt: 1,
                lease: lease(),
            },
            later,
        )
    };
    let succeeded = || applied(&running(), success(1), later);
    match status {
        Status::Pending => Task {
            status: Status::Pending,
            ..scheduled
        },
        Status::Scheduled => scheduled,
        Status::Running => running(),
        Status::Succeeded => succeeded(),
        Status::Failed => {
            let mut once = submitted(1);
            once = applied(
                &once,
                Command::Dispatch {
                    attempt: 1,
                    lease: lease(),
                },
                later,
            );
            applied(
                &once,
                Command::Complete {
                    lease: Some(lease()),
                    attempt: 1,
                    outcome: failure(),
                    provenance: None,
                },
                later,
            )
        }
        Status::Cancelled => applied(&scheduled, Command::Cancel { reason: "x".into() }, later),
        Status::RolledBack => {
            let succeeded = succeeded();
            let command = rollback(&succeeded, "x");
            applied(&succeeded, command, later)
        }
    }
}

#[derive(Debug, PartialEq)]
enum Expect {
    To(Status),
    AlreadyApplied,
    Unchanged,
    Invalid,
}

#[test]
fn every_status_and_command_has_a_defined_outcome() {
    use Expect::*;
    use Status::*;
    let upstream = TaskId::from_uuid(uuid::Uuid::now_v7());
    let commands = |task: &Task| {
        [
            Command::Dispatch {
                attempt: 1,
                lease: lease(),
            },
            success(1),
            Command::Complete {
                lease: Some(lease()),
                attempt: 1,
                outcome: failure(),
                provenance: None,
            },
            Command::TimeOut { attempt: 1 },
            Command::Cancel { reason: "r".into() },
            rollback(task, "r"),
            rollback_via(upstream),
            Command::Release {
                dependencies: Vec::new(),
            },
        ]
    };
    // Columns: dispatch, success, failure, timeout, cancel, rollback, rollback reaching it
    // through a dependency, release. `Unchanged`: recognised, and nothing to repeat.
    let table: [(Status, [Expect; 8]); 7] = [
        (
            Pending,
            [
                Invalid,
                Invalid,
                Invalid,
                Invalid,
                To(Cancelled),
                Invalid,
                To(Cancelled),
                To(Scheduled),
            ],
        ),
        (
            Scheduled,
            [
                To(Running),
                Invalid,
                Invalid,
                Invalid,
                To(Cancelled),
                Invalid,
                To(Cancelled),
                Invalid,
            ],
        ),
        (
            Running,
            [
                AlreadyApplied,
                To(Succeeded),
                To(Scheduled),
                To(Scheduled),
                To(Cancelled),
                Invalid,
                To(Cancelled),
                Invalid,
            ],
        ),
        (
            Succeeded,
            [
                Invalid,
                AlreadyApplied,
                Invalid,
                Invalid,
                Invalid,
                To(RolledBack),
                To(RolledBack),
                Invalid,
            ],
        ),
        (
            Failed,
            [
                Invalid,
                Invalid,
                AlreadyApplied,
                Invalid,
                Invalid,
                Invalid,
                Unchanged,
                Invalid,
            ],
        ),
        (
            Cancelled,
            [
                Invalid,
                Invalid,
                Invalid,
                Invalid,
                AlreadyApplied,
                Invalid,
                Unchanged,
                Invalid,
            ],
        ),
        (
            RolledBack,
            [
                Invalid, Invalid, Invalid, Invalid, Invalid, Unchanged, Unchanged, Invalid,
            ],
        ),
    ];
    assert_eq!(
        table.each_ref().map(|(status, _)| *status),
        Status::ALL,
        "one row per status"
    );
    // Late enough for the due time and any deadline.
    let now = t0() + Duration::hours(1);
    for (status, row) in &table {
        let task = in_status(*status);
        for (command, expected) in commands(&task).iter().zip(row) {
            let actual = match decide(&task, command, now) {
                Ok(Decision::Apply(transition)) => To(transition.task.status),
                Ok(Decision::AlreadyApplied(effects)) if effects == Effects::default() => Unchanged,
                Ok(Decision::AlreadyApplied(_)) => AlreadyApplied,
                Err(Rejection::InvalidTransition { .. }) => Invalid,
                other => panic!("{status:?} × {command:?}: unexpected {other:?}"),
            };
            assert_eq!(&actual, expected, "{status:?} × {command:?}");
        }
    }
}

#[test]
fn a_note_records_an_action_in_every_status_without_moving_or_hiding_the_last_move() {
    let note = || Command::Note {
        cause: "redriven:r1".into(),
    };
    let later = t0() + Duration::hours(1);
    for status in Status::ALL {
        let task = in_status(status);
        let Ok(Decision::Apply(transition)) = decide(&task, &note(), later) else {
            panic!("a note on a {status:?} task must apply");
        };
        let noted = transition.task;
        assert_eq!(
            transition.effects,
            Effects::default(),
            "{status:?}: a note announces nothing"
        );
        assert_eq!((noted.status, noted.version), (status, task.version + 1));
        let entry = noted.history.last().unwrap();
        assert!(entry.is_note() && entry.cause == "redriven:r1");
        assert_eq!(noted.last_move(), task.last_move(), "{status:?}");
        assert_eq!(
            decide(&noted, &note(), later),
            Ok(Decision::AlreadyApplied(Effects::default())),
            "the same note twice records it once"
        );
        // A command redriven after the note is decided as before: one already applied still
        // repeats the same announcement, under the move's version.
        for command in [Command::Cancel { reason: "r".into() }, success(1)] {
            match (
                decide(&task, &command, later),
                decide(&noted, &command, later),
            ) {
                (Ok(Decision::Apply(before)), Ok(Decision::Apply(after))) => {
                    assert_eq!(before.task.status, after.task.status)
                }
                (before, after) => assert_eq!(before, after, "{status:?} × {command:?}"),
            }
        }
    }
}

#[test]
fn an_early_timer_is_armed_again_for_the_due_time() {
    let mut task = submitted(3);
    task.due_at = t0() + Duration::minutes(20);
    match decide(
        &task,
        &Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
        t0(),
    ) {
        Ok(Decision::NotYetDue(timer)) => assert_eq!(timer.due_at, task.due_at),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_result_for_an_old_attempt_is_stale() {
    let later = t0() + Duration::minutes(1);
    let running = applied(
        &submitted(3),
        Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
        later,
    );
    let retried = applied(
        &running,
        Command::Complete {
            lease: Some(lease()),
            attempt: 1,
            outcome: failure(),
            provenance: None,
        },
        later,
    );
    let rerunning = applied(
        &retried,
        Command::Dispatch {
            attempt: 2,
            lease: lease(),
        },
        later + Duration::hours(1),
    );
    let late = success(1);
    assert_eq!(
        decide(&rerunning, &late, later + Duration::hours(1)),
        Err(Rejection::StaleAttempt {
            current: 2,
            received: 1
        })
    );
}

/// A worker's answer for `attempt` carrying `lease`.
fn answer(attempt: u32, lease: Option<Lease>, outcome: Outcome) -> Command {
    Command::Complete {
        attempt,
        lease,
        outcome,
        provenance: None,
    }
}

fn dispatched_with(task: &Task, attempt: u32, lease: &Lease, now: DateTime<Utc>) -> Task {
    let command = Command::Dispatch {
        attempt,
        lease: lease.clone(),
    };
    applied(task, command, now)
}

#[test]
fn a_dispatch_keeps_its_lease_and_announces_it_in_task_ready_only() {
    let drawn = Lease::from_random([1; 16]);
    let running = dispatched_with(&submitted(3), 1, &drawn, t0());
    assert_eq!(running.lease.as_ref(), Some(&drawn));
    let ready = Event::announcing(&running).unwrap();
    assert_eq!(
        (ready.kind, ready.lease.as_ref()),
        (EventKind::Ready, Some(&drawn))
    );
    // A repeated timer draws another lease; the dispatch already made keeps the first.
    let again = Command::Dispatch {
        attempt: 1,
        lease: Lease::from_random([2; 16]),
    };
    let Ok(Decision::AlreadyApplied(effects)) = decide(&running, &again, t0()) else {
        panic!("a repeated dispatch is already applied");
    };
    assert_eq!(effects.events[0].lease.as_ref(), Some(&drawn));
    let done = applied(&running, answer(1, Some(drawn), failure()), t0());
    assert!(Event::announcing(&done).unwrap().lease.is_none());
}

#[test]
fn a_result_without_its_attempts_lease_moves_nothing_and_repeats_nothing() {
    let drawn = Lease::from_random([1; 16]);
    let forged = Lease::from_random([9; 16]);
    let running = dispatched_with(&submitted(3), 1, &drawn, t0());
    let ok = || Outcome::Succeeded { output: json!(1) };
    for lease in [None, Some(forged.clone())] {
        assert_eq!(
            decide(&running, &answer(1, lease, ok()), t0()),
            Err(Rejection::InvalidLease { attempt: 1 })
        );
    }
    // Finished, a duplicate with the lease is already applied; a forgery is refused, so it
    // cannot make Baton announce the result again either.
    let succeeded = applied(&running, answer(1, Some(drawn.clone()), ok()), t0());
    assert!(matches!(
        decide(&succeeded, &answer(1, Some(drawn.clone()), ok()), t0()),
        Ok(Decision::AlreadyApplied(_))
    ));
    assert_eq!(
        decide(&succeeded, &answer(1, Some(forged), ok()), t0()),
        Err(Rejection::InvalidLease { attempt: 1 })
    );
    // The previous attempt's worker, with its own old lease, is stale on the next attempt.
    let retried = applied(&running, answer(1, Some(drawn.clone()), failure()), t0());
    let second = Lease::from_random([2; 16]);
    let rerunning = dispatched_with(&retried, 2, &second, t0() + Duration::hours(1));
    assert_eq!(
        decide(&rerunning, &answer(1, Some(drawn.clone()), ok()), t0()),
        Err(Rejection::StaleAttempt {
            current: 2,
            received: 1
        })
    );
    assert_eq!(
        decide(&rerunning, &answer(2, Some(drawn), ok()), t0()),
        Err(Rejection::InvalidLease { attempt: 2 })
    );
    assert!(matches!(
        decide(&rerunning, &answer(2, Some(second), ok()), t0()),
        Ok(Decision::Apply(_))
    ));
}

#[test]
fn an_attempt_dispatched_before_leases_finishes_without_one() {
    let mut legacy = dispatched_with(&submitted(3), 1, &lease(), t0());
    legacy.lease = None;
    let ok = Outcome::Succeeded { output: json!(1) };
    assert!(matches!(
        decide(&legacy, &answer(1, None, ok), t0()),
        Ok(Decision::Apply(_))
    ));
}

#[test]
fn a_success_clears_the_error_and_keeps_only_its_own_provenance() {
    let drawn = lease();
    let running = dispatched_with(&submitted(3), 1, &drawn, t0());
    let mut failed = answer(1, Some(drawn.clone()), failure());
    if let Command::Complete { provenance, .. } = &mut failed {
        *provenance = serde_json::from_value(json!({"model": "m-1"})).unwrap();
    }
    let retried = applied(&running, failed, t0());
    assert!(retried.error.is_some() && retried.provenance.is_some());
    let rerunning = dispatched_with(&retried, 2, &drawn, t0() + Duration::hours(1));
    let ok = Outcome::Succeeded { output: json!(2) };
    let succeeded = applied(&rerunning, answer(2, Some(drawn), ok), t0());
    assert_eq!((succeeded.error, succeeded.provenance), (None, None));
}

#[test]
fn an_error_that_no_retry_can_help_fails_the_task_with_attempts_left() {
    let running = dispatched_with(&submitted(3), 1, &lease(), t0());
    let hopeless = Outcome::Failed {
        error: TaskError {
            code: "FORBIDDEN_DESTINATION".into(),
            message: "10.0.0.1 is not a public address".into(),
            retryable: false,
        },
    };
    let failed = applied(&running, answer(1, Some(lease()), hopeless), t0());
    assert_eq!((failed.status, failed.attempt), (Status::Failed, 1));
    assert!(!failed.error.unwrap().retryable);
    let retried = applied(&running, answer(1, Some(lease()), failure()), t0());
    assert_eq!((retried.status, retried.attempt), (Status::Scheduled, 2));
}

#[test]
fn a_history_keeps_at_most_max_notes_notes() {
    let mut task = submitted(3);
    for n in 0..baton_domain::MAX_NOTES {
        let note = Command::Note {
            cause: format!("redriven:{n}"),
        };
        task = applied(&task, note, t0());
    }
    let one_more = Command::Note {
        cause: "redriven:last".into(),
    };
    assert_eq!(decide(&task, &one_more, t0()), Err(Rejection::TooManyNotes));
    assert!(matches!(
        decide(&task, &Command::Cancel { reason: "r".into() }, t0()),
        Ok(Decision::Apply(_))
    ));
}

#[test]
fn a_timeout_before_the_deadline_is_refused() {
    let running = applied(
        &submitted(3),
        Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
        t0(),
    );
    assert!(matches!(
        decide(
            &running,
            &Command::TimeOut { attempt: 1 },
            t0() + Duration::seconds(59)
        ),
        Err(Rejection::DeadlineNotReached { .. })
    ));
}

#[test]
fn a_failed_attempt_is_retried_with_capped_jittered_exponential_backoff() {
    let policy = RetryPolicy {
        max_attempts: 10,
        backoff_seconds: 10,
        max_backoff_seconds: 60,
    };
    let id = TaskId::from_uuid(uuid::Uuid::now_v7());
    for (attempt, full) in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)] {
        let delay = policy.backoff(&id, attempt).num_milliseconds();
        assert!(
            (full * 500..=full * 1000).contains(&delay),
            "attempt {attempt}: {delay} ms not in [{}, {}]",
            full * 500,
            full * 1000
        );
        assert_eq!(delay, policy.backoff(&id, attempt).num_milliseconds());
    }
}

#[test]
fn the_retry_carries_the_error_and_a_timer_for_the_next_attempt() {
    let running = applied(
        &submitted(3),
        Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
        t0(),
    );
    let Ok(Decision::Apply(retry)) = decide(
        &running,
        &Command::Complete {
            lease: Some(lease()),
            attempt: 1,
            outcome: failure(),
            provenance: None,
        },
        t0(),
    ) else {
        panic!("expected a retry");
    };
    assert_eq!(retry.task.attempt, 2);
    assert_eq!(retry.task.error.as_ref().unwrap().code, "BOOM");
    let timer = retry.effects.timer.unwrap();
    assert_eq!((timer.attempt, timer.due_at), (2, retry.task.due_at));
    assert!(retry.task.due_at >= t0() + Duration::seconds(5));
    assert_eq!(retry.effects.events[0].kind, EventKind::Retrying);
}

#[test]
fn the_ready_event_carries_tier_input_and_the_identity_fields() {
    let running = applied(
        &submitted(3),
        Command::Dispatch {
            attempt: 1,
            lease: lease(),
        },
        t0(),
    );
    let event = Event::announcing(&running).unwrap();
    assert_eq!(event.kind.detail_type(), "TaskReady");
    let detail = serde_json::to_value(&event).unwrap();
    for field in ["task_id", "version", "attempt", "tier", "input", "deadline"] {
        assert!(detail.get(field).is_some(), "{field} missing from {detail}");
    }
    assert!(detail.get("output").is_none());
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (1u32..4).prop_map(|attempt| Command::Dispatch {
            attempt,
            lease: lease()
        }),
        (1u32..4).prop_map(success),
        (1u32..4).prop_map(|attempt| Command::Complete {
            lease: Some(lease()),
            attempt,
            outcome: failure(),
            provenance: None,
        }),
        (1u32..4).prop_map(|attempt| Command::TimeOut { attempt }),
        Just(Command::Cancel {
            reason: "stop".into()
        }),
        Just(Command::Rollback {
            reason: "bad".into(),
            taint: Taint {
                root: TaskId::from_uuid(uuid::Uuid::nil()),
                via: Some(TaskId::from_uuid(uuid::Uuid::nil())),
                request: "r1".into(),
            }
        }),
        Just(Command::Release {
            dependencies: Vec::new()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_lifecycle_invariants_hold_for_any_command_sequence(
        commands in proptest::collection::vec((any_command(), 0i64..7200), 1..40),
    ) {
        let mut task = submitted(3);
        let mut now = t0();
        for (command, advance) in commands {
            now += Duration::seconds(advance);
            let before = task.clone();
            match decide(&before, &command, now) {
                Ok(Decision::Apply(transition)) => {
                    let next = transition.task;
                    // Version grows by exactly one, with exactly one history entry.
                    prop_assert_eq!(next.version, before.version + 1);
                    prop_assert_eq!(next.history.len() as u64, next.version);
                    prop_assert_eq!(next.history.last().unwrap().to, next.status);
                    // Terminal states absorb; rollback is the one way out of Succeeded.
                    if before.status.is_terminal() {
                        prop_assert_eq!((before.status, next.status), (Status::Succeeded, Status::RolledBack));
                    }
                    prop_assert!(next.attempt >= before.attempt);
                    prop_assert!(next.attempt <= next.retry.max_attempts);
                    prop_assert_eq!(&transition.effects, &Effects::of(&next));
                    // Replaying the command is recognised and repeats the same effects.
                    prop_assert_eq!(
                        decide(&next, &command, now),
                        Ok(Decision::AlreadyApplied(transition.effects.clone()))
                    );
                    task = next;
                }
                Ok(Decision::AlreadyApplied(effects)) => {
                    // The effects are repeated, or there is nothing to repeat (a rollback that
                    // reaches a task another rollback or a failure finished already).
                    prop_assert!(effects == Effects::of(&before) || effects == Effects::default());
                }
                Ok(Decision::NotYetDue(timer)) => {
                    prop_assert_eq!(before.status, Status::Scheduled);
                    prop_assert!(now < timer.due_at);
                }
                Err(_) => {}
            }
            // Whatever the outcome, deciding is pure.
            prop_assert_eq!(decide(&before, &command, now), decide(&before, &command, now));
        }
    }
}
