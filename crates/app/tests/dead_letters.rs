//! DLQ insight and redrive over in-memory queues: grouping by class, filters, rate, history
//! notes, and a redrive interrupted half way.

mod common;

use std::collections::BTreeSet;
use std::time::Duration as StdDuration;

use baton_app::dead_letters::{
    DeadLetterError, Failure, LetterFilter, Redrive, dlq_stats, redrive, redriven,
};
use baton_app::memory::MemoryDeadLetters;
use baton_domain::{Task, TaskId};
use chrono::Duration;
use common::{t0, world};
use serde_json::json;
use tokio::time::Instant;

fn failure(detail_type: &str, code: &str, task: Option<&Task>) -> Failure {
    Failure {
        code: code.into(),
        reason: format!("{code} happened"),
        detail_type: Some(detail_type.into()),
        tenant: task.map(|t| t.tenant.clone()),
        task_id: task.map(|t| t.id),
        project: task.map(|t| t.project.to_string()),
        tier: task.map(|t| t.tier.to_string()),
    }
}

fn chosen(class: &str, rate_per_second: u32) -> Redrive {
    Redrive {
        queue: "result".into(),
        filter: LetterFilter {
            class: Some(class.into()),
            ..LetterFilter::default()
        },
        rate_per_second,
        dry_run: false,
        budget: StdDuration::from_secs(60),
        hold: Duration::seconds(30),
    }
}

#[tokio::test]
async fn stats_group_letters_by_class_tier_and_project_with_the_oldest_age() {
    let w = world();
    let task = w.submit(json!({})).await;
    let dead = MemoryDeadLetters::new(&["result", "submit"]);
    for minutes in [5, 1, 3] {
        dead.park(
            "result",
            failure("TaskResult", "INVALID_DETAIL", Some(&task)),
            t0() - Duration::minutes(minutes),
        );
    }
    dead.park(
        "result",
        failure("TaskResult", "INFRA_ERROR", None),
        t0() - Duration::minutes(2),
    );
    dead.park(
        "submit",
        failure("SubmitTask", "INVALID_SUBMISSION", None),
        t0(),
    );

    let stats = dlq_stats(&dead, t0()).await.unwrap();
    let result = stats.iter().find(|s| s.queue == "result").unwrap();
    assert_eq!((result.depth.visible, result.scanned), (4, 4));
    assert_eq!(result.oldest_age, Some(Duration::minutes(5)));
    let classes: Vec<_> = result
        .classes
        .iter()
        .map(|c| (c.class.as_str(), c.count, c.oldest_age.num_minutes()))
        .collect();
    assert_eq!(
        classes,
        [
            ("TaskResult/INVALID_DETAIL", 3, 5),
            ("TaskResult/INFRA_ERROR", 1, 2)
        ]
    );
    let invalid = &result.classes[0].example;
    assert_eq!(invalid.tier.as_deref(), Some("gpu"));
    assert_eq!(invalid.project.as_deref(), Some("p"));
    let submit = stats.iter().find(|s| s.queue == "submit").unwrap();
    assert_eq!(submit.classes[0].class, "SubmitTask/INVALID_SUBMISSION");
    // Reading for stats hides nothing for good.
    assert_eq!(dead.parked("result").len(), 4);
    assert_eq!(
        dlq_stats(&dead, t0()).await.unwrap()[0].scanned,
        4,
        "a second look sees them all"
    );
}

#[tokio::test(start_paused = true)]
async fn a_filtered_redrive_moves_only_its_class_at_its_rate_and_notes_each_task() {
    let w = world();
    let dead = MemoryDeadLetters::new(&["result"]);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let task = w.submit(json!({})).await;
        dead.park(
            "result",
            failure("TaskResult", "INFRA_ERROR", Some(&task)),
            t0(),
        );
        tasks.push(task);
    }
    let poison = dead.park(
        "result",
        failure("TaskResult", "INVALID_DETAIL", None),
        t0(),
    );

    let published = w.bus.published().len();
    let started = Instant::now();
    let report = redrive(&w.baton, &dead, &chosen("TaskResult/INFRA_ERROR", 2))
        .await
        .unwrap();
    // Five sends at 2 per second: the first at once, the last 2 s later.
    assert!(started.elapsed() >= StdDuration::from_secs(2));
    assert!(report.complete);
    assert_eq!((report.moved, report.noted), (5, 5));
    assert_eq!(dead.parked("result"), [poison], "the other class stays");
    let back = dead.sent_back("result");
    assert_eq!(back.len(), 5);
    assert!(back.iter().all(|(_, id)| *id == report.id));
    for task in &tasks {
        let noted = w.reload(task).await;
        let entry = noted.history.last().unwrap();
        assert_eq!(entry.cause, redriven(&report.id));
        assert_eq!((entry.from, entry.to), (Some(noted.status), noted.status));
        assert_eq!(noted.status, task.status, "a note does not move the task");
    }
    assert_eq!(w.bus.published().len(), published, "notes announce nothing");
}

#[tokio::test]
async fn a_dry_run_lists_what_would_move_and_moves_nothing() {
    let w = world();
    let dead = MemoryDeadLetters::new(&["result"]);
    let task = w.submit(json!({})).await;
    dead.park(
        "result",
        failure("TaskResult", "INFRA_ERROR", Some(&task)),
        t0() - Duration::hours(2),
    );
    dead.park(
        "result",
        failure("TaskResult", "INFRA_ERROR", None),
        t0() - Duration::minutes(5),
    );
    let mut dry = chosen("TaskResult/INFRA_ERROR", 10);
    dry.dry_run = true;
    dry.filter.older_than = Some(Duration::hours(1));
    let report = redrive(&w.baton, &dead, &dry).await.unwrap();
    assert_eq!(
        report.matched.len(),
        1,
        "only the letter older than an hour"
    );
    assert_eq!(report.matched[0].failure.task_id, Some(task.id));
    assert_eq!(report.moved, 0);
    assert_eq!(dead.parked("result").len(), 2);
    assert!(dead.sent_back("result").is_empty());
    assert_eq!(w.reload(&task).await.version, task.version, "no note");

    dry.filter = LetterFilter {
        task_ids: vec![TaskId::from_uuid(uuid::Uuid::now_v7())],
        ..LetterFilter::default()
    };
    assert!(
        redrive(&w.baton, &dead, &dry)
            .await
            .unwrap()
            .matched
            .is_empty()
    );
}

#[tokio::test]
async fn an_interrupted_redrive_loses_nothing_and_a_second_one_finishes() {
    let w = world();
    let dead = MemoryDeadLetters::new(&["result"]);
    let mut all = BTreeSet::new();
    for _ in 0..6 {
        let task = w.submit(json!({})).await;
        all.insert(dead.park(
            "result",
            failure("TaskResult", "INFRA_ERROR", Some(&task)),
            t0(),
        ));
    }
    dead.fail_sends_after(2);
    let interrupted = redrive(&w.baton, &dead, &chosen("TaskResult/INFRA_ERROR", 100)).await;
    assert!(matches!(interrupted, Err(DeadLetterError::Infra(_))));
    let back: BTreeSet<String> = dead
        .sent_back("result")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let parked: BTreeSet<String> = dead.parked("result").into_iter().collect();
    assert_eq!(back.len(), 2);
    assert_eq!(
        &back | &parked,
        all,
        "every letter is in one queue or the other"
    );

    // The stopped redrive's letters reappear when its hold ends; the next one moves the rest.
    dead.fail_sends_after(usize::MAX);
    dead.end_holds();
    let report = redrive(&w.baton, &dead, &chosen("TaskResult/INFRA_ERROR", 100))
        .await
        .unwrap();
    assert_eq!(report.moved, 4);
    assert!(dead.parked("result").is_empty());
    let back: BTreeSet<String> = dead
        .sent_back("result")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(back, all);
}

#[tokio::test]
async fn unknown_queues_and_rates_out_of_bounds_are_refused() {
    let w = world();
    let dead = MemoryDeadLetters::new(&["result"]);
    let mut unknown = chosen("x", 10);
    unknown.queue = "nope".into();
    assert!(matches!(
        redrive(&w.baton, &dead, &unknown).await,
        Err(DeadLetterError::UnknownQueue(_))
    ));
    for rate in [0, 101] {
        assert!(matches!(
            redrive(&w.baton, &dead, &chosen("x", rate)).await,
            Err(DeadLetterError::Rate(r)) if r == rate
        ));
    }
}
