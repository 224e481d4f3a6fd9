//! Dead letters on the emulator's SQS, in process: functions park what they give up on with
//! why, `dlqStats` groups it, a filtered redrive moves only its class at its rate and the tasks
//! then complete, and a redrive stopped half way loses nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use aws_lambda_events::sqs::SqsEvent;
use baton_app::dead_letters::{DeadLetters, LetterFilter, Redrive, dlq_stats, redrive, redriven};
use baton_aws::dlq::Parking;
use baton_aws::emf::EmfMetrics;
use baton_aws::lambda::{Batch, Settlement};
use baton_domain::{Command, Outcome, Status, Task, TaskId, Tenant};
use baton_tests::{Letters, Sandbox, eventbridge_event, unique};
use serde_json::{Value, json};

fn submission(extra: Value) -> Value {
    let mut detail = json!({"tenant": "acme", "project": "ops", "name": "n", "tier": "gpu",
        "timeout_seconds": 60});
    detail
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    detail
}

async fn settlement() -> Settlement {
    let sdk = baton_tests::emulator().await;
    Settlement {
        parking: Parking::new(aws_sdk_sqs::Client::new(&sdk), "submit-under-test"),
        metrics: Arc::new(EmfMetrics::to(
            "submit-under-test",
            Box::new(std::io::sink()),
        )),
    }
}

/// Delivers up to `max` messages of `letters` to `handle`, settles the batch and
/// acknowledges what it did not fail, as the event source mapping does.
async fn deliver<F, Fut>(letters: &Letters, max: usize, handle: F) -> Result<usize>
where
    F: FnOnce(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = Batch>,
{
    let event = letters.deliver(max, 1).await?;
    let delivered = event.records.len();
    let response = settlement().await.settle(handle(event.clone()).await).await;
    letters.acknowledge(&event, &response).await?;
    Ok(delivered)
}

/// A `SubmitTask` event and the id of the task it creates.
fn submit_event(extra: Value) -> (String, TaskId) {
    let event = eventbridge_event("SubmitTask", &unique("event"), submission(extra));
    let envelope: Value = serde_json::from_str(&event).unwrap();
    let time = envelope["time"].as_str().unwrap().parse().unwrap();
    let id = TaskId::derived(envelope["id"].as_str().unwrap(), time);
    (event, id)
}

async fn task(sandbox: &Sandbox, id: TaskId) -> Result<Option<Task>> {
    Ok(sandbox.baton.task(&Tenant::parse("acme")?, &id).await?)
}

fn redrive_of(class: &str, rate_per_second: u32) -> Redrive {
    Redrive {
        queue: "submit".into(),
        filter: LetterFilter {
            class: Some(class.into()),
            ..LetterFilter::default()
        },
        rate_per_second,
        dry_run: false,
        budget: Duration::from_secs(20),
        hold: chrono::Duration::seconds(2),
    }
}

#[tokio::test]
async fn poison_is_parked_at_once_with_its_class_and_a_redrive_of_one_class_completes_its_tasks()
-> Result<()> {
    let sandbox = Sandbox::new().await?;
    let letters = Letters::new("ops-submit", 3).await?;
    // Submissions that name a dependency not submitted yet (events can arrive out of order),
    // two invalid ones, one that is not JSON at all.
    let (dependency_event, dependency) = submit_event(json!({}));
    let waiting: Vec<(String, TaskId)> = (0..3)
        .map(|_| submit_event(json!({"depends_on": [dependency]})))
        .collect();
    let mut bodies: Vec<String> = waiting.iter().map(|(event, _)| event.clone()).collect();
    bodies.push(submit_event(json!({"priority": 99999})).0);
    bodies.push(submit_event(json!({"timeout_seconds": 0})).0);
    bodies.push("{not json".to_owned());
    letters.send(&bodies).await?;
    let baton = &sandbox.baton;
    let delivered = deliver(&letters, 10, |batch| baton_fn_submit::handle(baton, batch)).await?;
    assert_eq!(delivered, 6);
    assert_eq!(
        letters.count(&letters.source_url).await?,
        0,
        "parked at once, not retried"
    );

    let dead = letters.dead_letters("submit");
    let stats = dlq_stats(&dead, chrono::Utc::now()).await?;
    let classes: Vec<(&str, usize)> = stats[0]
        .classes
        .iter()
        .map(|c| (c.class.as_str(), c.count))
        .collect();
    assert_eq!(
        classes,
        [
            ("SubmitTask/INVALID_DEPENDENCY", 3),
            ("SubmitTask/INVALID_SUBMISSION", 2),
            ("Unknown/MALFORMED_ENVELOPE", 1)
        ]
    );
    let dependency_class = &stats[0].classes[0].example;
    assert_eq!(dependency_class.project.as_deref(), Some("ops"));
    assert_eq!(dependency_class.tier.as_deref(), Some("gpu"));
    assert!(dependency_class.reason.contains(&dependency.to_string()));
    assert_eq!(
        stats[0].depth.visible, 6,
        "reading for stats hides nothing for good"
    );

    // The dependency arrives; only the class that can now succeed goes back, 2 per second.
    let response =
        baton_fn_submit::handle(baton, baton_tests::sqs_batch(&[dependency_event])).await;
    assert!(response.failed.is_empty());
    let started = Instant::now();
    let report = redrive(
        baton,
        &dead,
        &redrive_of("SubmitTask/INVALID_DEPENDENCY", 2),
    )
    .await?;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "3 sends at 2/s take 1 s or more"
    );
    assert!(report.complete);
    assert_eq!(
        (report.moved, report.noted),
        (3, 0),
        "their tasks do not exist yet"
    );
    assert_eq!(
        dead.depth("submit").await?.visible,
        3,
        "the other classes stay"
    );

    let delivered = deliver(&letters, 10, |batch| baton_fn_submit::handle(baton, batch)).await?;
    assert_eq!(delivered, 3);
    for (_, id) in &waiting {
        let created = task(&sandbox, *id).await?.expect("created on redrive");
        let causes: Vec<&str> = created.history.iter().map(|h| h.cause.as_str()).collect();
        assert_eq!(causes, ["submitted", &redriven(&report.id)]);
        assert_eq!(created.status, Status::Pending);
    }
    // And they complete: the dependency succeeds, which releases them; each runs and succeeds.
    let acme = Tenant::parse("acme")?;
    let succeed = |lease| Command::Complete {
        lease,
        attempt: 1,
        outcome: Outcome::Succeeded { output: json!(1) },
        provenance: None,
    };
    for id in std::iter::once(dependency).chain(waiting.iter().map(|(_, id)| *id)) {
        // The dependency was dispatched at its submission; a dispatch here finds it running.
        baton
            .execute(
                &acme,
                &id,
                &Command::Dispatch {
                    attempt: 1,
                    lease: baton_tests::lease(),
                },
            )
            .await?;
        let lease = task(&sandbox, id).await?.and_then(|task| task.lease);
        baton.execute(&acme, &id, &succeed(lease)).await?;
        assert_eq!(task(&sandbox, id).await?.unwrap().status, Status::Succeeded);
    }
    Ok(())
}

#[tokio::test]
async fn a_redrive_stopped_half_way_loses_nothing_and_the_next_one_finishes() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let letters = Letters::new("ops-stop", 3).await?;
    let unknown = TaskId::from_uuid(uuid::Uuid::now_v7());
    let bodies: Vec<String> = (0..6)
        .map(|_| submit_event(json!({"depends_on": [unknown]})).0)
        .collect();
    letters.send(&bodies).await?;
    let baton = &sandbox.baton;
    deliver(&letters, 10, |batch| baton_fn_submit::handle(baton, batch)).await?;
    let dead = letters.dead_letters("submit");
    assert_eq!(dead.depth("submit").await?.visible, 6);

    // Killed mid-way, as a function past its timeout would be: at 4 per second, after 0.6 s
    // about three have moved.
    let class = "SubmitTask/INVALID_DEPENDENCY";
    let stopped = tokio::time::timeout(
        Duration::from_millis(600),
        redrive(baton, &dead, &redrive_of(class, 4)),
    )
    .await;
    assert!(stopped.is_err(), "the redrive was stopped");
    let moved = letters.count(&letters.source_url).await?;
    let parked = letters.count(&letters.dlq_url).await?;
    assert!((1..6).contains(&moved), "stopped half way: {moved} moved");
    assert!(
        moved + parked >= 6,
        "{moved} moved + {parked} parked: nothing lost"
    );

    // The stopped redrive's hold ends; the next one moves the rest.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = redrive(baton, &dead, &redrive_of(class, 50)).await?;
    assert!(report.complete);
    assert_eq!(letters.count(&letters.dlq_url).await?, 0);
    assert!(letters.count(&letters.source_url).await? >= 6);
    Ok(())
}

#[tokio::test]
async fn an_infrastructure_failure_is_delivered_again_then_parked_with_its_code() -> Result<()> {
    let sandbox = Sandbox::new().await?;
    let letters = Letters::new("ops-infra", 2).await?;
    // A service whose table is gone: every command fails on infrastructure.
    let sdk = baton_tests::emulator().await;
    let mut settings = sandbox.settings.clone();
    settings.table = unique("missing");
    let broken = baton_aws::baton(&sdk, &settings, sandbox.clock.clone());
    let result = json!({"tenant": "acme", "task_id": TaskId::from_uuid(uuid::Uuid::now_v7()),
        "attempt": 1, "status": "succeeded", "output": 1});
    letters
        .send(&[eventbridge_event("TaskResult", &unique("e"), result)])
        .await?;
    let handle = |batch| baton_fn_on_result::handle(&broken, batch);
    assert_eq!(deliver(&letters, 10, handle).await?, 1);
    assert_eq!(
        letters.count(&letters.dlq_url).await?,
        0,
        "the first delivery fails and waits to be delivered again"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(deliver(&letters, 10, handle).await?, 1);
    let stats = dlq_stats(&letters.dead_letters("result"), chrono::Utc::now()).await?;
    assert_eq!(stats[0].classes[0].class, "TaskResult/INFRA_ERROR");
    assert_eq!(letters.count(&letters.source_url).await?, 0);
    Ok(())
}
