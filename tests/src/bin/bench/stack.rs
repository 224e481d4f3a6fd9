//! Figures through the stack deployed in the emulator: throughput of immediate lifecycles driven
//! as upstream systems and workers drive them (events in, `TaskReady` out, `TaskResult` back),
//! and latency of the GraphQL API through the emulator's API Gateway and of due timers.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use baton_tests::{Stack, unique};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Sizes, progress};

/// The GraphQL submission the latency figures time.
pub const SUBMIT: &str =
    "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id status dueAt } }";
const STATUS: &str = "query($id: ID!) { task(id: $id) { id status version } }";

/// A new project of the stack's whose concurrency limit is the most there is, so no task of a
/// run waits for a slot.
async fn unlimited_project(stack: &Stack, prefix: &str) -> Result<String> {
    let project = unique(prefix);
    stack
        .graphql(
            "bench",
            "mutation($p: String!, $l: Int!) { setProjectLimit(projectId: $p, limit: $l, \
             reason: \"a benchmark runs every task at once\") { projectId } }",
            json!({"p": project, "l": baton_domain::MAX_CONCURRENCY_LIMIT}),
        )
        .await?;
    Ok(project)
}

/// Lifecycles per second through the stack: an end-to-end regression check of the deployed
/// functions, mappings and rules together. It measures the emulator (its ~97 ms Lambda path, its
/// table walks) more than Baton; Baton's own scale is in the hottest keys and the CPU figures.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Lifecycles per run.
    pub lifecycles: usize,
    /// Through the deployed stack, lifecycles/s.
    pub stack: f64,
}

/// p50, p95, p99 in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (at least one).
    pub fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
        Self {
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} / {:.1} / {:.1}", self.p50, self.p95, self.p99)
    }
}

/// Latency figures, warm.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// `GET /health` through API Gateway: the emulator's gateway-to-function round trip, with no
    /// AWS call behind it.
    pub floor: Percentiles,
    /// `submitTask` through API Gateway.
    pub submit: Percentiles,
    /// `task(id)` through API Gateway.
    pub status: Percentiles,
    /// From a task's due time to its `TaskReady` in a worker's queue.
    pub due_to_ready: Percentiles,
}

/// The stack's clients, as a worker and an upstream system hold them.
struct Clients {
    sqs: aws_sdk_sqs::Client,
    events: aws_sdk_eventbridge::Client,
    bus: String,
}

impl Clients {
    async fn new(stack: &Stack) -> Self {
        let sdk = baton_tests::emulator().await;
        Self {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            events: aws_sdk_eventbridge::Client::new(&sdk),
            bus: stack.output("BusName").to_owned(),
        }
    }

    /// Puts up to ten events in one request.
    async fn put(&self, detail_type: &str, details: &[Value]) -> Result<()> {
        let entries = details
            .iter()
            .map(|d| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus)
                    .source(baton_tests::source_for(d))
                    .detail_type(detail_type)
                    .detail(d.to_string())
                    .build()
            })
            .collect();
        let output = self
            .events
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await?;
        if output.failed_entry_count > 0 {
            bail!("PutEvents failed: {:?}", output.entries());
        }
        Ok(())
    }

    /// Receives up to ten events (waiting up to a second), deletes them, returns their details.
    async fn take(&self, url: &str) -> Result<Vec<Value>> {
        Ok(self
            .take_sent(url)
            .await?
            .into_iter()
            .map(|(d, _)| d)
            .collect())
    }

    /// [`Clients::take`], with the time each event entered the queue.
    async fn take_sent(&self, url: &str) -> Result<Vec<(Value, chrono::DateTime<chrono::Utc>)>> {
        let output = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await?;
        let messages = output.messages();
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.sqs
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await?;
        messages
            .iter()
            .map(|m| {
                let envelope: Value = serde_json::from_str(m.body().unwrap_or("{}"))?;
                let sent = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|ms| ms.parse().ok())
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .context("a message without its SentTimestamp")?;
                Ok((envelope["detail"].clone(), sent))
            })
            .collect()
    }
}

/// `n` immediate lifecycles through the stack: submitted as `SubmitTask` events ten to a request,
/// answered by `concurrency` workers, counted when `TaskSucceeded` arrives. Lifecycles/s.
async fn through_stack(stack: &Stack, n: usize, concurrency: usize) -> Result<f64> {
    let clients = Arc::new(Clients::new(stack).await);
    let tier = unique("bench");
    let project = unlimited_project(stack, "throughput").await?;
    let ready = stack.worker_queue(&tier).await?.url().to_owned();
    let done = stack
        .listener(json!({"detail-type": ["TaskSucceeded"], "detail": {"project": [project]}}))
        .await?
        .url()
        .to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (clients, ready, stop) = (clients.clone(), ready.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let tasks = clients.take(&ready).await?;
                    let answers: Vec<Value> = tasks
                        .iter()
                        .map(|t| {
                            json!({"tenant": t["tenant"], "task_id": t["task_id"],
                            "attempt": t["attempt"], "lease": t["lease"], "status": "succeeded",
                            "output": {"ok": true}})
                        })
                        .collect();
                    if !answers.is_empty() {
                        clients.put("TaskResult", &answers).await?;
                    }
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let start = Instant::now();
    let submissions: Vec<Value> = (0..n)
        .map(|i| {
            json!({"tenant": "bench", "project": project, "name": "step", "tier": tier,
            "input": {"i": i}, "timeout_seconds": 300})
        })
        .collect();
    stream::iter(submissions.chunks(10))
        .map(|chunk| clients.put("SubmitTask", chunk))
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    let mut succeeded = HashSet::new();
    let limit = start + Duration::from_secs(120 + n as u64 / 2);
    while succeeded.len() < n {
        if Instant::now() > limit {
            stop.store(true, Ordering::Relaxed);
            bail!("{} of {n} lifecycles finished in time", succeeded.len());
        }
        for detail in clients.take(&done).await? {
            succeeded.insert(detail["task_id"].as_str().unwrap_or_default().to_owned());
        }
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await??;
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// The stack's rate for `sizes.tasks` immediate lifecycles.
pub async fn throughput(stack: &Stack, sizes: &Sizes) -> Result<Throughput> {
    progress(&format!(
        "throughput: {} lifecycles through the stack",
        sizes.tasks
    ));
    let rate = through_stack(stack, sizes.tasks, sizes.concurrency).await?;
    Ok(Throughput {
        lifecycles: sizes.tasks,
        stack: rate,
    })
}

/// GraphQL through API Gateway: `submitTask` and `task(id)` timed one at a time; then tasks due
/// in two seconds, timed from their due time to their `TaskReady`.
pub async fn latency(stack: &Stack, sizes: &Sizes) -> Result<Latency> {
    let http = reqwest::Client::new();
    let url = stack.graphql_url();
    let token = stack.token("bench");
    let tier = unique("latency");
    let project = unlimited_project(stack, "latency").await?;
    let call = |query: &'static str, variables: Value| {
        let request = http
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({"query": query, "variables": variables}));
        async move {
            let start = Instant::now();
            let response: Value = request.send().await?.error_for_status()?.json().await?;
            let elapsed = start.elapsed().as_secs_f64() * 1000.0;
            if let Some(errors) = response.get("errors") {
                bail!("GraphQL errors: {errors}");
            }
            anyhow::Ok((elapsed, response["data"].clone()))
        }
    };
    let submission = |delay: u64| {
        json!({"input": {"projectId": project, "name": "timed", "tier": tier,
            "input": {"n": 1}, "delaySeconds": delay}})
    };
    progress(&format!(
        "latency: {} submitTask and task(id) through API Gateway",
        sizes.samples
    ));
    // Warm the gateway's process and connections first.
    for _ in 0..5 {
        call(SUBMIT, submission(3600)).await?;
    }
    // The floor: the same route to the same function answering without a single AWS call.
    let health = format!("{}health", url.trim_end_matches("graphql"));
    let mut floor = Vec::new();
    for _ in 0..sizes.samples {
        let start = Instant::now();
        http.get(&health).send().await?.error_for_status()?;
        floor.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let (mut submits, mut ids) = (Vec::new(), Vec::new());
    for _ in 0..sizes.samples {
        let (ms, data) = call(SUBMIT, submission(3600)).await?;
        submits.push(ms);
        ids.push(data["submitTask"]["id"].clone());
    }
    let mut statuses = Vec::new();
    for id in &ids {
        statuses.push(call(STATUS, json!({"id": id})).await?.0);
    }
    progress(&format!(
        "latency: {} tasks due in 2 s, due → TaskReady",
        sizes.samples
    ));
    let ready = stack.worker_queue(&tier).await?.url().to_owned();
    let clients = Clients::new(stack).await;
    let mut due = std::collections::HashMap::new();
    for _ in 0..sizes.samples {
        let (_, data) = call(SUBMIT, submission(2)).await?;
        let task = &data["submitTask"];
        let at: chrono::DateTime<chrono::Utc> = serde_json::from_value(task["dueAt"].clone())?;
        due.insert(task["id"].as_str().context("an id")?.to_owned(), at);
    }
    let mut delays = Vec::new();
    let limit = Instant::now() + Duration::from_secs(60);
    while delays.len() < due.len() && Instant::now() < limit {
        for (detail, sent) in clients.take_sent(&ready).await? {
            let id = detail["task_id"].as_str().unwrap_or_default();
            if let Some(at) = due.get(id) {
                delays.push((sent - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
    }
    if delays.len() < due.len() {
        bail!(
            "{} of {} due tasks became ready in time",
            delays.len(),
            due.len()
        );
    }
    Ok(Latency {
        floor: Percentiles::of(floor),
        submit: Percentiles::of(submits),
        status: Percentiles::of(statuses),
        due_to_ready: Percentiles::of(delays),
    })
}
