//! The chaos run: `CHAOS_TASKS` tasks (1,000) through a stack deployed with `BATON_CHAOS` (by
//! `localstack/chaos.sh`), whose functions lose SDK responses, report handled messages failed so
//! SQS delivers them again, and die between a batch's commits and its acknowledgement. A worker
//! answers every `TaskReady` (one attempt in ten fails). When every task is terminal, or after
//! `CHAOS_MINUTES` (10), each task is checked: it exists, it is terminal, its history holds one
//! entry per version, each move forward from the last, one dispatch per attempt; the project's
//! counters equal the tasks; every DLQ is empty or its letters are listed with their codes.
//! Exits non-zero on any lost task or double transition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use baton_app::dead_letters::dlq_stats;
use baton_app::{SystemClock, TaskQuery};
use baton_aws::Settings;
use baton_aws::dlq::{QueuePair, SqsDeadLetters};
use baton_domain::{ProjectId, Status, Task, Tenant};
use baton_tests::{Stack, unique};
use serde_json::json;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<()> {
    let tasks = setting("CHAOS_TASKS", 1000) as usize;
    let limit = Duration::from_secs(setting("CHAOS_MINUTES", 10) * 60);
    let stack = Stack::deployed().await?;
    let settings = Settings {
        table: stack.output("TableName").to_owned(),
        bus: stack.output("BusName").to_owned(),
        due_queue_url: stack.output("DueQueueUrl").to_owned(),
        published: baton_aws::PublishedEvents::All,
    };
    // The checker's own service is not disturbed: only the stack's functions are.
    let sdk = baton_tests::emulator().await;
    let baton = baton_aws::baton(&sdk, &settings, Arc::new(SystemClock));
    let tenant = Tenant::parse("acme")?;
    let project_name = unique("chaos");
    let project = ProjectId::parse(&project_name)?;
    let operator = baton_app::Operator {
        by: "chaos",
        reason: "every task may run at once",
    };
    baton
        .set_limit(
            &tenant,
            &project,
            baton_domain::MAX_CONCURRENCY_LIMIT,
            &operator,
        )
        .await?;
    let tier = unique("tier");
    let worker = stack.worker_queue(&tier).await?;

    let start = Instant::now();
    for i in 0..tasks {
        let submission = json!({"tenant": "acme", "project": project_name, "name": "chaos",
            "tier": tier, "timeout_seconds": 20, "idempotency_key": format!("chaos-{i}"),
            "retry": {"max_attempts": 3, "backoff_seconds": 1}});
        stack.put_event("SubmitTask", &submission).await?;
    }
    eprintln!(
        "chaos: {tasks} submitted in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let mut answered = 0u64;
    let mut failed_on_purpose = 0u64;
    let settled = loop {
        for ready in worker.all_ready().await? {
            answered += 1;
            let result = match fastrand::u8(0..10) {
                0 => {
                    failed_on_purpose += 1;
                    json!({"status": "failed", "error": {"code": "CHAOS", "message": "worker failed"}})
                }
                _ => json!({"status": "succeeded", "output": {"answered": answered}}),
            };
            let mut detail = json!({"tenant": ready["tenant"], "task_id": ready["task_id"],
                "attempt": ready["attempt"], "lease": ready["lease"]});
            detail
                .as_object_mut()
                .unwrap()
                .extend(result.as_object().unwrap().clone());
            stack.put_event("TaskResult", &detail).await?;
        }
        let status = baton.project_status(&tenant, &project).await?;
        let terminal: u64 = [Status::Succeeded, Status::Failed, Status::Cancelled]
            .iter()
            .map(|s| status.count(*s))
            .sum();
        if terminal as usize == tasks && status.total() as usize == tasks {
            break true;
        }
        if start.elapsed() > limit {
            break false;
        }
        eprintln!(
            "chaos: {:>4} s, {terminal}/{tasks} terminal, {} in all, {answered} TaskReady answered",
            start.elapsed().as_secs(),
            status.total()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let elapsed = start.elapsed().as_secs_f64();

    let mut stored: Vec<Task> = Vec::new();
    let mut query = TaskQuery::project(tenant.clone(), project.clone(), 100);
    loop {
        let page = baton.tasks(&query).await?;
        query.after = page.tasks.last().map(|task| task.id);
        stored.extend(page.tasks);
        if !page.has_next_page {
            break;
        }
    }
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    let mut doubled = Vec::new();
    let mut retried = 0;
    for task in &stored {
        *by_status.entry(task.status.as_str()).or_default() += 1;
        retried += u64::from(task.attempt > 1);
        if let Err(why) = task.check_history() {
            doubled.push(format!("{}: {why}", task.id));
        }
    }
    let status = baton.project_status(&tenant, &project).await?;
    let counters_match = Status::ALL
        .iter()
        .all(|s| status.count(*s) == stored.iter().filter(|t| t.status == *s).count() as u64);
    let lost = tasks.saturating_sub(stored.len());
    let unfinished = stored.iter().filter(|t| !t.status.is_terminal()).count();

    println!(
        "chaos run: {tasks} tasks, BATON_CHAOS={}",
        std::env::var("BATON_CHAOS").unwrap_or_default()
    );
    println!(
        "  settled: {settled} after {elapsed:.1} s; {answered} TaskReady answered ({failed_on_purpose} with a failure)"
    );
    println!(
        "  tasks found {} (lost {lost}), not terminal {unfinished}, by status {by_status:?}, retried {retried}",
        stored.len()
    );
    println!(
        "  double transitions or broken histories: {}",
        doubled.len()
    );
    for line in doubled.iter().take(10) {
        println!("    {line}");
    }
    println!("  project counters equal the tasks: {counters_match}");
    // Every DLQ, with its letters grouped by class: empty, or each letter explained.
    let queues = ["Submit", "Result", "Cancel", "Rollback", "Due", "Http"]
        .into_iter()
        .map(|name| {
            let pair = QueuePair {
                dlq: stack.output(&format!("{name}DlqUrl")).to_owned(),
                source: stack.output(&format!("{name}QueueUrl")).to_owned(),
            };
            (name.to_lowercase(), pair)
        })
        .collect();
    let dead = SqsDeadLetters::new(aws_sdk_sqs::Client::new(&sdk), queues);
    for stats in dlq_stats(&dead, chrono::Utc::now()).await? {
        let classes: Vec<String> = stats
            .classes
            .iter()
            .map(|c| format!("{} × {} ({})", c.count, c.class, c.example.reason))
            .collect();
        println!(
            "  DLQ {}: {} {classes:?}",
            stats.queue,
            stats.depth.visible + stats.depth.in_flight
        );
    }
    // The notifier's stream batches it gave up on, recorded in its DLQ.
    let notify_dlq = aws_sdk_sqs::Client::new(&sdk)
        .get_queue_attributes()
        .queue_url(stack.output("NotifyDlqUrl"))
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await?;
    let given_up = notify_dlq
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .cloned()
        .unwrap_or_default();
    println!("  DLQ notify (stream batches given up): {given_up}");
    if lost > 0 || unfinished > 0 || !doubled.is_empty() || !counters_match {
        bail!("the chaos run lost or doubled something (see above)");
    }
    Ok(())
}
