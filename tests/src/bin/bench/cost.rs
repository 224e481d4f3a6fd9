//! AWS calls and list cost per lifecycle. N tasks of each kind run through the functions'
//! handlers in this process against a sandbox in the emulator, with the service's SDK clients
//! counted by [`Calls`]; what the event source mappings, EventBridge's deliveries and the worker
//! add is derived from the messages that moved, at the template's batch size.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use baton_app::Clock;
use baton_graphql::live::Live;
use baton_tests::{Sandbox, eventbridge_event, sqs_batch, unique};
use serde::Serialize;
use serde_json::{Value, json};

use crate::calls::{Calls, Tallies};
use crate::keys::HotKeys;
use crate::progress;

/// AWS list prices used (us-east-1, on-demand, arm64), in $ per million units.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Prices {
    /// DynamoDB on-demand write request unit.
    pub dynamodb_write_unit: f64,
    /// DynamoDB on-demand read request unit.
    pub dynamodb_read_unit: f64,
    /// SQS standard queue request (per 64 KB chunk).
    pub sqs_request: f64,
    /// EventBridge custom event published (per 64 KB chunk).
    pub eventbridge_event: f64,
    /// Lambda request.
    pub lambda_request: f64,
    /// Lambda arm64 compute, per million GB-seconds.
    pub lambda_gb_second: f64,
    /// Step Functions standard state transition, for comparison.
    pub step_functions_transition: f64,
}

/// The prices the report states.
pub const PRICES: Prices = Prices {
    dynamodb_write_unit: 0.625,
    dynamodb_read_unit: 0.125,
    sqs_request: 0.40,
    eventbridge_event: 1.00,
    lambda_request: 0.20,
    lambda_gb_second: 13.3334,
    step_functions_transition: 25.0,
};

/// The template's event source mappings deliver up to this many messages per invocation; under
/// load they fill.
const ESM_BATCH: usize = 10;
/// The template's function memory, in GB.
const MEMORY_GB: f64 = 0.125;
/// The functions the table's stream feeds, by their names among the handlers.
const COUNTER: &str = "counter";
const NOTIFIER: &str = "notifier";
/// Stream records per notifier invocation at most (the template's `BatchSize`).
const NOTIFY_BATCH: usize = 100;
/// How long the counter's mapping gathers records before it invokes (the template's
/// `MaximumBatchingWindowInSeconds`).
const STREAM_WINDOW: Duration = Duration::from_secs(1);
/// The lifecycles counted, each at the batch size its messages are delivered in: full batches,
/// and the immediate lifecycle again at low traffic, one message per invocation; all with every
/// lifecycle event published (the template's default), and the immediate one again with only
/// `TaskReady` (`PublishedEvents=TaskReady`).
pub const RUNS: [(Kind, usize, Events); 6] = [
    (Kind::Immediate, ESM_BATCH, Events::All),
    (Kind::Scheduled, ESM_BATCH, Events::All),
    (Kind::Retried, ESM_BATCH, Events::All),
    (Kind::Waiting, ESM_BATCH, Events::All),
    (Kind::Immediate, 1, Events::All),
    (Kind::Immediate, ESM_BATCH, Events::Ready),
];

/// The lifecycle events a run's stack publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Events {
    /// All of them.
    All,
    /// `TaskReady` alone, what workers need.
    Ready,
}

/// A kind of lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Due now: submit → ready → result → succeeded.
    Immediate,
    /// Due in 2 s: the same after the due timer.
    Scheduled,
    /// The first attempt fails, the retry (1 s backoff) succeeds.
    Retried,
    /// Due now in a project of one slot: each task but the first waits in the ready set until a
    /// result admits it, then the same as immediate.
    Waiting,
}

impl Kind {
    fn extra(self) -> Value {
        match self {
            Kind::Immediate | Kind::Waiting => json!({}),
            Kind::Scheduled => json!({"delay_seconds": 2}),
            Kind::Retried => json!({"retry": {"max_attempts": 2, "backoff_seconds": 1}}),
        }
    }

    /// The project its lifecycles run in.
    fn project(self) -> &'static str {
        match self {
            Kind::Waiting => "cost-waiting",
            _ => "cost",
        }
    }

    /// The outcome a worker reports for `attempt`.
    fn outcome(self, attempt: u64) -> Value {
        match (self, attempt) {
            (Kind::Retried, 1) => {
                json!({"status": "failed", "error": {"code": "FLAKY", "message": "try again"}})
            }
            _ => json!({"status": "succeeded", "output": {"ok": true}}),
        }
    }
}

/// Per lifecycle, one kind.
#[derive(Debug, Clone, Serialize)]
pub struct LifecycleCost {
    /// The kind.
    pub kind: Kind,
    /// Messages per invocation.
    pub batch: usize,
    /// The lifecycle events published.
    pub published: Events,
    /// Lifecycles run.
    pub lifecycles: usize,
    /// Baton's own requests per lifecycle by `service.operation`, with the DynamoDB capacity
    /// units (or EventBridge entries) they took.
    pub baton_calls: BTreeMap<String, PerLifecycle>,
    /// DynamoDB write request units per lifecycle.
    pub write_units: f64,
    /// DynamoDB read request units per lifecycle.
    pub read_units: f64,
    /// SQS requests per lifecycle: Baton's, EventBridge's deliveries, the mappings' receives and
    /// deletes, the worker's.
    pub sqs_requests: f64,
    /// EventBridge events per lifecycle: Baton's and the client's and worker's.
    pub events: f64,
    /// Lambda invocations per lifecycle at full batches.
    pub invocations: f64,
    /// Lambda GB-seconds per lifecycle (handler time measured here, at the template's memory).
    pub gb_seconds: f64,
    /// $ per million lifecycles by part.
    pub dollars: BTreeMap<&'static str, f64>,
    /// $ per million lifecycles.
    pub per_million: f64,
    /// Step Functions standard, same number of transitions, $ per million.
    pub step_functions_per_million: f64,
    /// Baton's CPU time per lifecycle, summed over its handlers, in milliseconds.
    pub cpu_ms: f64,
    /// Per handler: its AWS requests per message (made one after another) and its CPU time
    /// per message in milliseconds.
    pub handlers: BTreeMap<&'static str, HandlerFigures>,
    /// The load on each key the lifecycles wrote, and the bounds it sets.
    pub hot_keys: HotKeys,
}

/// One handler's figures per message.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct HandlerFigures {
    /// AWS requests per message, in sequence.
    pub requests: f64,
    /// CPU time per message, ms.
    pub cpu_ms: f64,
}

/// One operation's requests and units per lifecycle.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PerLifecycle {
    /// Requests.
    pub calls: f64,
    /// DynamoDB capacity units, or EventBridge entries.
    pub units: f64,
}

/// Where an event goes: the queues the template's rules (and a worker's rule for `TaskReady`)
/// deliver it to.
fn targets(rules: &[(Vec<String>, usize)], detail_type: &str) -> f64 {
    let routed: usize = rules
        .iter()
        .filter(|(types, _)| types.iter().any(|t| t == detail_type))
        .map(|(_, n)| n)
        .sum();
    let worker = usize::from(detail_type == "TaskReady");
    (routed + worker) as f64
}

/// The template's rules that match any tier: `(detail-types, targets)`.
fn template_rules() -> Result<Vec<(Vec<String>, usize)>> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/template.yaml"
    ))?;
    let template: serde_norway::Value = serde_norway::from_str(&text)?;
    let resources = template["Resources"]
        .as_mapping()
        .context("template resources")?;
    Ok(resources
        .values()
        .filter(|r| r["Type"].as_str() == Some("AWS::Events::Rule"))
        .filter(|r| r["Properties"]["EventPattern"].get("detail").is_none())
        .map(|r| {
            let pattern = &r["Properties"]["EventPattern"]["detail-type"];
            let types = pattern
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let targets = r["Properties"]["Targets"].as_sequence().map_or(0, Vec::len);
            (types, targets)
        })
        .collect())
}

/// What one function's handler did while lifecycles ran.
#[derive(Default)]
struct Handled {
    /// Messages it consumed.
    messages: usize,
    /// Its AWS requests (each one after the other: a handler works through its batch in turn).
    requests: u64,
    /// The time its thread spent on a CPU while it ran (the SDK's serialization and HTTP client
    /// included; the emulator is another process).
    cpu: Duration,
}

/// Message counts and handler time while lifecycles run.
#[derive(Default)]
struct Flow {
    /// What each function's handler did.
    handlers: BTreeMap<&'static str, Handled>,
    /// Events published on the bus, by detail-type (Baton's, the client's, the worker's).
    events: BTreeMap<String, usize>,
    /// Time spent in handlers.
    busy: Duration,
    /// The invocations of the stream's consumers: stream batches, not queue messages.
    stream_batches: usize,
    /// Transitions made (for the Step Functions comparison).
    transitions: usize,
}

struct Driver<'a> {
    sandbox: &'a Sandbox,
    live: &'a Live,
    calls: &'a Calls,
    /// Messages per invocation.
    batch: usize,
    flow: Flow,
    /// When the counter was last given the stream's records, and those it has not been given.
    counted: Instant,
    gathered: Vec<Value>,
}

/// The time the calling thread has spent on a CPU, from the scheduler's own account
/// (nanoseconds, user and kernel).
fn thread_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("/proc/thread-self/schedstat")?;
    Ok(Duration::from_nanos(nanos))
}

impl Driver<'_> {
    /// Keeps the sandbox's clock on real time, so the due timers SQS delays meet due tasks.
    fn tick(&self) {
        let behind = chrono::Utc::now() - self.sandbox.clock.now();
        if behind > chrono::Duration::zero() {
            self.sandbox.clock.advance(behind);
        }
    }

    /// Delivers `bodies` to `function` in batches as its event source mapping would, one batch
    /// at a time, on this thread (the run's runtime has no other), so the thread's CPU time
    /// across a handler is the handler's.
    async fn deliver(&mut self, function: &'static str, bodies: Vec<String>) -> Result<()> {
        self.tick();
        let baton = &self.sandbox.baton;
        for chunk in bodies.chunks(self.batch) {
            let event = sqs_batch(chunk);
            let (requests, cpu, start) = (self.calls.requests(), thread_cpu()?, Instant::now());
            let batch = match function {
                "submit" => baton_fn_submit::handle(baton, event).await,
                "on-due" => baton_fn_on_due::handle(baton, event).await,
                "on-result" => baton_fn_on_result::handle(baton, event).await,
                other => bail!("no handler {other}"),
            };
            let handled = self.flow.handlers.entry(function).or_default();
            handled.cpu += thread_cpu()? - cpu;
            handled.requests += self.calls.requests() - requests;
            handled.messages += chunk.len();
            self.flow.busy += start.elapsed();
            if !batch.failed.is_empty() {
                bail!("{function} failed: {:?}", batch.failed);
            }
        }
        Ok(())
    }

    /// Hands the table's stream records written since the last call to its consumers, as their
    /// mappings would: to the notifier at once, in batches of at most [`NOTIFY_BATCH`]; to the
    /// counter what its batching window gathered, once the window has passed (`flush`: now).
    async fn stream(&mut self, flush: bool) -> Result<()> {
        let (sandbox, live) = (self.sandbox, self.live);
        let records = sandbox.stream_records().await?;
        for chunk in records.chunks(NOTIFY_BATCH) {
            let event = json!({ "Records": chunk });
            self.consume(NOTIFIER, chunk.len(), async {
                baton_fn_notifier::handle(live, &event).await?;
                Ok(())
            })
            .await?;
        }
        self.gathered.extend(records);
        if !flush && self.counted.elapsed() < STREAM_WINDOW {
            return Ok(());
        }
        self.counted = Instant::now();
        let gathered = std::mem::take(&mut self.gathered);
        for chunk in gathered.chunks(baton_tests::COUNTER_BATCH) {
            self.consume(COUNTER, chunk.len(), async {
                sandbox.count_batch(chunk).await?;
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Runs one stream batch of `records` records through `function`'s handler (`handled`),
    /// measured as [`Driver::deliver`] measures a queue batch.
    async fn consume(
        &mut self,
        function: &'static str,
        records: usize,
        handled: impl Future<Output = Result<()>>,
    ) -> Result<()> {
        let (requests, cpu, start) = (self.calls.requests(), thread_cpu()?, Instant::now());
        handled.await?;
        let figures = self.flow.handlers.entry(function).or_default();
        figures.cpu += thread_cpu()? - cpu;
        figures.requests += self.calls.requests() - requests;
        figures.messages += records;
        self.flow.busy += start.elapsed();
        self.flow.stream_batches += 1;
        Ok(())
    }

    /// Runs `n` lifecycles of `kind` until every task has succeeded.
    async fn run(&mut self, kind: Kind, n: usize) -> Result<()> {
        let submissions: Vec<String> = (0..n)
            .map(|i| {
                let mut detail = json!({"tenant": "bench", "project": kind.project(), "name": "step",
                    "tier": "cpu", "input": {"i": i}, "timeout_seconds": 60});
                detail
                    .as_object_mut()
                    .expect("an object")
                    .extend(kind.extra().as_object().expect("an object").clone());
                eventbridge_event("SubmitTask", &unique("submit"), detail)
            })
            .collect();
        *self.flow.events.entry("SubmitTask".into()).or_default() += n;
        self.deliver("submit", submissions).await?;
        let mut succeeded = 0;
        // Waiting lifecycles run one at a time: a round of the loop each.
        let patience = Duration::from_secs(60) + Duration::from_millis(100) * n as u32;
        let deadline = Instant::now() + patience;
        while succeeded < n {
            if Instant::now() > deadline {
                bail!("{kind:?}: {succeeded} of {n} succeeded after {patience:?}");
            }
            let timers = self.sandbox.due_timers().await?;
            let published = self.sandbox.published().await?;
            if timers.is_empty() && published.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            self.deliver("on-due", timers).await?;
            let mut results = Vec::new();
            for (detail_type, detail) in published {
                *self.flow.events.entry(detail_type.clone()).or_default() += 1;
                if detail_type != "TaskReady" {
                    continue;
                }
                let attempt = detail["attempt"].as_u64().unwrap_or(1);
                let mut answer = json!({"tenant": detail["tenant"],
                    "task_id": detail["task_id"], "attempt": attempt, "lease": detail["lease"]});
                answer.as_object_mut().expect("an object").extend(
                    kind.outcome(attempt)
                        .as_object()
                        .expect("an object")
                        .clone(),
                );
                // A success is counted as its answer is handled (TaskSucceeded may not be
                // published).
                succeeded += usize::from(answer["status"] == "succeeded");
                results.push(eventbridge_event("TaskResult", &unique("result"), answer));
            }
            *self.flow.events.entry("TaskResult".into()).or_default() += results.len();
            self.deliver("on-result", results).await?;
            self.stream(false).await?;
        }
        self.stream(true).await
    }
}

/// A sandbox whose service's calls `calls` counts, and the notifier's side on it.
async fn counted(calls: &Calls, events: Events) -> Result<(Sandbox, Live)> {
    let counted = calls.clone();
    let published = match events {
        Events::All => baton_aws::PublishedEvents::All,
        Events::Ready => baton_aws::PublishedEvents::parse("TaskReady").expect("an event list"),
    };
    let sandbox = Sandbox::publishing(published, move |sdk| baton_aws::Clients {
        dynamodb: aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(sdk)
                .interceptor(counted.clone())
                .build(),
        ),
        eventbridge: aws_sdk_eventbridge::Client::from_conf(
            aws_sdk_eventbridge::config::Builder::from(sdk)
                .interceptor(counted.clone())
                .build(),
        ),
        sqs: aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(sdk)
                .interceptor(counted)
                .build(),
        ),
    })
    .await?;
    let live = live(&sandbox, calls).await;
    sandbox
        .unlimited("bench", Kind::Immediate.project())
        .await?;
    let operator = baton_app::Operator {
        by: "bench",
        reason: "its tasks wait for the one slot",
    };
    let tenant = baton_domain::Tenant::parse("bench")?;
    let waiting = baton_domain::ProjectId::parse(Kind::Waiting.project())?;
    sandbox
        .baton
        .set_limit(&tenant, &waiting, 1, &operator)
        .await?;
    sandbox.published().await?;
    Ok((sandbox, live))
}

/// Runs `n` lifecycles of each kind, one batch at a time, and prices them: on a runtime of one
/// thread of its own, so a handler's CPU time is its thread's.
pub async fn measure(n: usize) -> Result<Vec<LifecycleCost>> {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(measure_here(n))
    })
    .await?
}

async fn measure_here(n: usize) -> Result<Vec<LifecycleCost>> {
    let calls = Calls::new()?;
    let rules = template_rules()?;
    let mut costs = Vec::new();
    for events in [Events::All, Events::Ready] {
        let (sandbox, live) = counted(&calls, events).await?;
        let runs = RUNS.iter().filter(|(_, _, e)| *e == events);
        for &(kind, batch, _) in runs {
            let cost = run(&sandbox, &live, &calls, &rules, (kind, batch, events), n).await;
            match cost {
                Ok(cost) => costs.push(cost),
                Err(failure) => {
                    return Err(failure);
                }
            }
        }
    }
    Ok(costs)
}

/// Runs and prices `n` lifecycles of one kind.
async fn run(
    sandbox: &Sandbox,
    live: &Live,
    calls: &Calls,
    rules: &[(Vec<String>, usize)],
    (kind, batch, events): (Kind, usize, Events),
    n: usize,
) -> Result<LifecycleCost> {
    progress(&format!(
        "cost: {n} {kind:?} lifecycles, batches of {batch}, {events:?} events"
    ));
    calls.take();
    let mut driver = Driver {
        sandbox,
        live,
        calls,
        batch,
        flow: Flow::default(),
        counted: Instant::now(),
        gathered: Vec::new(),
    };
    driver.run(kind, n).await?;
    let (tallies, keys) = calls.take();
    driver.flow.transitions = transitions(sandbox, kind, n).await?;
    let hot_keys = keys.report(n, &format!("bench#{}", kind.project()));
    Ok(price(
        (kind, batch, events),
        n,
        &tallies,
        hot_keys,
        &driver.flow,
        rules,
    ))
}

/// The notifier's side: connections in the sandbox table through a counted client, no
/// subscribers (the cost of a lifecycle nobody watches).
async fn live(sandbox: &Sandbox, calls: &Calls) -> Live {
    let sdk = baton_tests::emulator().await;
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(calls.clone())
            .build(),
    );
    let schema = baton_graphql::schema(sandbox.baton.clone(), baton_graphql::Options::default());
    Live::new(
        sandbox.baton.clone(),
        schema,
        Arc::new(baton_aws::DynamoConnections::new(
            dynamodb,
            &sandbox.settings.table,
        )),
        Arc::new(baton_app::memory::MemoryPush::default()),
        None,
    )
}

/// Transitions in `n` lifecycles: every entry of the newest task's history, its submission
/// included, as Step Functions counts its start.
async fn transitions(sandbox: &Sandbox, kind: Kind, n: usize) -> Result<usize> {
    let tenant = baton_domain::Tenant::parse("bench")?;
    let project = baton_domain::ProjectId::parse(kind.project())?;
    let page = sandbox
        .baton
        .tasks(&baton_app::TaskQuery::project(tenant, project, 1))
        .await?;
    let task = page.tasks.first().context("a task")?;
    Ok(task.history.len() * n)
}

fn price(
    (kind, batch, published): (Kind, usize, Events),
    n: usize,
    tallies: &Tallies,
    hot_keys: HotKeys,
    flow: &Flow,
    rules: &[(Vec<String>, usize)],
) -> LifecycleCost {
    let per = |x: f64| x / n as f64;
    let mut baton_calls = BTreeMap::new();
    let (mut write_units, mut read_units, mut baton_sqs, mut baton_events) = (0.0, 0.0, 0.0, 0.0);
    for ((service, operation), tally) in tallies {
        let units = match service.as_str() {
            "EventBridge" => tally.entries as f64,
            _ => tally.units,
        };
        baton_calls.insert(
            format!("{service}.{operation}"),
            PerLifecycle {
                calls: per(tally.calls as f64),
                units: per(units),
            },
        );
        match service.to_ascii_lowercase().as_str() {
            "dynamodb" if is_read(operation) => read_units += per(tally.units),
            "dynamodb" => write_units += per(tally.units),
            "sqs" => baton_sqs += per(tally.calls as f64),
            _ => baton_events += per(tally.entries as f64),
        }
    }
    // Events the client and the worker put, then every event's deliveries to queues.
    let outside = per((flow.events.get("SubmitTask").copied().unwrap_or(0)
        + flow.events.get("TaskResult").copied().unwrap_or(0)) as f64);
    let deliveries: f64 = flow
        .events
        .iter()
        .map(|(t, count)| per(*count as f64) * targets(rules, t))
        .sum();
    // Queue messages: the stream's consumers get records, read by their mappings at no charge.
    let consumed: f64 = flow
        .handlers
        .iter()
        .filter(|(function, _)| ![COUNTER, NOTIFIER].contains(*function))
        .map(|(_, h)| per(h.messages as f64))
        .sum();
    let worker_messages = per(flow.events.get("TaskReady").copied().unwrap_or(0) as f64);
    // Each consumer (a mapping, or the worker) receives and deletes a batch per request.
    let polling = 2.0 * (consumed + worker_messages) / batch as f64;
    let sqs_requests = baton_sqs + deliveries + polling;
    let events = baton_events + outside;
    let invocations = consumed / batch as f64 + per(flow.stream_batches as f64);
    let gb_seconds = per(flow.busy.as_secs_f64()) * MEMORY_GB;
    let p = PRICES;
    let dollars = BTreeMap::from([
        (
            "dynamodb",
            write_units * p.dynamodb_write_unit + read_units * p.dynamodb_read_unit,
        ),
        ("sqs", sqs_requests * p.sqs_request),
        ("eventbridge", events * p.eventbridge_event),
        (
            "lambda",
            invocations * p.lambda_request + gb_seconds * p.lambda_gb_second,
        ),
    ]);
    let per_million = dollars.values().sum();
    LifecycleCost {
        kind,
        batch,
        published,
        lifecycles: n,
        baton_calls,
        write_units,
        read_units,
        sqs_requests,
        events,
        invocations,
        gb_seconds,
        dollars,
        per_million,
        step_functions_per_million: per(flow.transitions as f64) * p.step_functions_transition,
        cpu_ms: per(flow
            .handlers
            .values()
            .map(|h| h.cpu.as_secs_f64() * 1000.0)
            .sum()),
        handlers: flow
            .handlers
            .iter()
            .map(|(function, h)| {
                let messages = h.messages.max(1) as f64;
                let figures = HandlerFigures {
                    requests: h.requests as f64 / messages,
                    cpu_ms: h.cpu.as_secs_f64() * 1000.0 / messages,
                };
                (*function, figures)
            })
            .collect(),
        hot_keys,
    }
}

fn is_read(operation: &str) -> bool {
    matches!(
        operation,
        "GetItem" | "BatchGetItem" | "Query" | "Scan" | "TransactGetItems"
    )
}
