//! Cold init and peak memory per function: each release binary runs as Lambda would run it, under
//! a minimal Lambda Runtime API on loopback. Init is the time from exec to the binary's first
//! `GET /next`; the first invocation is the time from handing it its first event to its answer.
//! Then the process handles `BENCH_EVENTS` events of its kind against a sandbox in the emulator,
//! and its peak RSS (`VmHWM`) is read before it is stopped.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use baton_domain::{SubmitRequest, TaskId, Tenant};
use baton_tests::{Sandbox, TestServer, eventbridge_event, read_request, sqs_batch, unique};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{Sizes, progress};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// One SQS batch holds this many records, as the template's mappings deliver them.
const BATCH: usize = 10;

/// One function's figures.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionFigures {
    /// The function.
    pub function: String,
    /// Median time from exec to the first `/next`, over the cold starts.
    pub init_ms: f64,
    /// Median time of the first invocation.
    pub first_invocation_ms: f64,
    /// Events handled in the memory run.
    pub events: usize,
    /// What those events were.
    pub workload: &'static str,
    /// Peak resident set over the run, MiB.
    pub peak_rss_mb: f64,
    /// The arm64 package from `cargo lambda build --release --arm64`, MiB.
    pub zip_mb: Option<f64>,
}

/// How the process answered: its response, or its error document.
type Answer = Result<Vec<u8>, Vec<u8>>;

/// An invocation handed to the process, answered through `done`.
struct Invocation {
    payload: Vec<u8>,
    done: oneshot::Sender<Answer>,
}

/// The Runtime API stand-in: `/next` hands out queued invocations, `/response` and `/error`
/// answer them; `PUT /cfn` takes a custom resource's answer.
struct RuntimeApi {
    address: String,
    invocations: mpsc::Sender<Invocation>,
    first_next: Arc<Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ApiState {
    pending: std::sync::Mutex<HashMap<String, oneshot::Sender<Answer>>>,
}

impl RuntimeApi {
    async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?.to_string();
        let (invocations, queue) = mpsc::channel::<Invocation>(1);
        let queue = Arc::new(Mutex::new(queue));
        let first_next = Arc::new(Mutex::new(None));
        let state = Arc::new(ApiState::default());
        let seen = first_next.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(connection(
                    stream,
                    queue.clone(),
                    seen.clone(),
                    state.clone(),
                ));
            }
        });
        Ok(Self {
            address,
            invocations,
            first_next,
            task,
        })
    }

    /// Hands `payload` to the process and waits for its answer.
    async fn invoke(&self, payload: &Value) -> Result<Vec<u8>> {
        let (done, answer) = oneshot::channel();
        self.invocations
            .send(Invocation {
                payload: serde_json::to_vec(payload)?,
                done,
            })
            .await
            .context("the runtime stand-in stopped")?;
        match tokio::time::timeout(Duration::from_secs(30), answer).await {
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(error))) => bail!("invocation error: {}", String::from_utf8_lossy(&error)),
            Ok(Err(_)) => bail!("the process hung up"),
            Err(_) => bail!("no answer in 30 s"),
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one keep-alive connection of the runtime client.
async fn connection(
    stream: TcpStream,
    queue: Arc<Mutex<mpsc::Receiver<Invocation>>>,
    first_next: Arc<Mutex<Option<Instant>>>,
    state: Arc<ApiState>,
) {
    let mut reader = BufReader::new(stream);
    while let Some((method, path, body)) = read_request(&mut reader).await {
        let at = Instant::now();
        let (status, headers, answer) = if path.ends_with("/invocation/next") {
            first_next.lock().await.get_or_insert(at);
            let Some(invocation) = queue.lock().await.recv().await else {
                return;
            };
            let id = uuid::Uuid::now_v7().to_string();
            state
                .pending
                .lock()
                .expect("pending")
                .insert(id.clone(), invocation.done);
            let deadline = chrono::Utc::now().timestamp_millis() + 30_000;
            let headers = format!(
                "lambda-runtime-aws-request-id: {id}\r\nlambda-runtime-deadline-ms: {deadline}\r\n\
                 lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:000000000000:function:bench\r\n\
                 lambda-runtime-trace-id: Root=1-00000000-000000000000000000000000\r\n"
            );
            (200, headers, invocation.payload)
        } else if let Some(rest) = path.strip_prefix("/2018-06-01/runtime/invocation/") {
            let (id, outcome) = rest.split_once('/').unwrap_or((rest, ""));
            if let Some(done) = state.pending.lock().expect("pending").remove(id) {
                let _ = done.send(match outcome {
                    "response" => Ok(body),
                    _ => Err(body),
                });
            }
            (202, String::new(), b"{}".to_vec())
        } else if method == "PUT" {
            (200, String::new(), Vec::new())
        } else {
            (404, String::new(), b"{}".to_vec())
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n",
            answer.len()
        );
        let stream = reader.get_mut();
        if stream.write_all(head.as_bytes()).await.is_err()
            || stream.write_all(&answer).await.is_err()
        {
            return;
        }
    }
}

/// A release binary running under a stand-in.
struct Process {
    api: RuntimeApi,
    child: tokio::process::Child,
    spawned: Instant,
    log_path: String,
}

impl Process {
    async fn spawn(function: &str, env: &HashMap<String, String>) -> Result<Self> {
        let api = RuntimeApi::start().await?;
        let binaries =
            std::env::var("BENCH_BINARIES").unwrap_or_else(|_| format!("{ROOT}/target/release"));
        let binary = format!("{binaries}/baton-fn-{function}");
        // What the process writes (its log lines), for a look after a failure.
        let log_path = format!("{ROOT}/target/bench/{function}.log");
        let log = std::fs::File::create(&log_path)?;
        let spawned = Instant::now();
        let child = tokio::process::Command::new(&binary)
            .envs(env)
            .env("AWS_LAMBDA_RUNTIME_API", &api.address)
            .env("AWS_LAMBDA_FUNCTION_NAME", format!("bench-{function}"))
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("exec {binary}"))?;
        Ok(Self {
            api,
            child,
            spawned,
            log_path,
        })
    }

    /// Waits for the first `/next` and returns the time since exec.
    async fn init(&self) -> Result<Duration> {
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(at) = *self.api.first_next.lock().await {
                return Ok(at - self.spawned);
            }
            if Instant::now() > limit {
                bail!("no /next within 10 s (its output: {})", self.log_path);
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Peak resident set so far, MiB.
    fn peak_rss_mb(&self) -> Result<f64> {
        let pid = self.child.id().context("the process exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("VmHWM")?;
        Ok(kb / 1024.0)
    }
}

/// The events a function handles, built against the sandbox as the run goes.
struct Workloads {
    sandbox: Sandbox,
    server: TestServer,
    /// Tasks `submit` created and `on-due` ran.
    running: Vec<String>,
    /// The table's stream records, read once for the functions that consume them.
    stream: Vec<Value>,
}

fn sqs_records(bodies: &[String]) -> Result<Value> {
    Ok(serde_json::to_value(sqs_batch(bodies))?)
}

impl Workloads {
    /// The table's stream records of the runs so far, read on first use.
    async fn stream(&mut self) -> Result<Vec<Value>> {
        if self.stream.is_empty() {
            self.stream = self.sandbox.stream_records().await?;
        }
        Ok(self.stream.clone())
    }

    /// The payloads for `function`'s memory run of about `events` events, and what they are.
    async fn payloads(
        &mut self,
        function: &str,
        events: usize,
    ) -> Result<(Vec<Value>, &'static str)> {
        let envelopes = |detail_type: &str, details: Vec<Value>| -> Vec<String> {
            details
                .into_iter()
                .map(|d| eventbridge_event(detail_type, &unique("bench"), d))
                .collect()
        };
        let batches = |bodies: Vec<String>, size: usize| -> Result<Vec<Value>> {
            bodies.chunks(size).map(sqs_records).collect()
        };
        Ok(match function {
            "submit" => {
                let details = (0..events)
                    .map(|i| json!({"tenant": "bench", "project": "memory", "name": "step",
                        "tier": "cpu", "input": {"i": i}, "timeout_seconds": 300}))
                    .collect();
                (batches(envelopes("SubmitTask", details), BATCH)?, "SubmitTask, new tasks")
            }
            "on-due" => {
                // `submit` dispatches a task due now itself; these get timers, as the tasks
                // GraphQL submits do.
                self.submitted(events, 0).await?;
                let mut timers = Vec::new();
                let limit = Instant::now() + Duration::from_secs(30);
                while timers.len() < events && Instant::now() < limit {
                    timers.extend(self.sandbox.due_timers().await?);
                }
                self.running = timers
                    .iter()
                    .filter_map(|t| serde_json::from_str::<Value>(t).ok())
                    .filter_map(|t| t["task_id"].as_str().map(str::to_owned))
                    .collect();
                (batches(timers, BATCH)?, "due timers, dispatches")
            }
            "on-result" => {
                // Each answer carries the lease its dispatch drew, as a worker's does.
                let tenant = Tenant::parse("bench")?;
                let mut details = Vec::with_capacity(self.running.len());
                for id in &self.running {
                    let task = self.sandbox.baton.task(&tenant, &TaskId::parse(id)?).await?;
                    let lease = task.and_then(|task| task.lease);
                    details.push(json!({"tenant": "bench", "task_id": id, "attempt": 1,
                        "lease": lease, "status": "succeeded", "output": {"ok": true}}));
                }
                (batches(envelopes("TaskResult", details), BATCH)?, "TaskResult, successes")
            }
            "rollback" => {
                let details = self
                    .running
                    .iter()
                    .map(|id| json!({"tenant": "bench", "task_id": id, "reason": "bench"}))
                    .collect();
                (batches(envelopes("RollbackRequested", details), BATCH)?, "RollbackRequested, applied")
            }
            "cancel" => {
                let ids = self.submitted(events, 600).await?;
                let details = ids
                    .iter()
                    .map(|id| json!({"tenant": "bench", "task_id": id, "reason": "bench"}))
                    .collect();
                (batches(envelopes("CancelTask", details), BATCH)?, "CancelTask, applied")
            }
            "notifier" | "counter" => {
                let payloads = self
                    .stream()
                    .await?
                    .chunks(BATCH)
                    .map(|chunk| json!({ "Records": chunk }))
                    .collect();
                (payloads, "the table's stream records of the runs above, no subscriber")
            }
            "http-executor" => {
                let details = (0..events)
                    .map(|i| json!({"tenant": "bench", "task_id": TaskId::from_uuid(uuid::Uuid::now_v7()).to_string(),
                        "project": "memory", "name": "call", "tier": "http", "attempt": 1, "version": 2, "correlation_id": "bench",
                        "deadline": chrono::Utc::now() + chrono::Duration::seconds(60),
                        "input": {"method": "POST", "url": format!("{}/echo", self.server.url), "body": {"i": i}}}))
                    .collect();
                (batches(envelopes("TaskReady", details), 1)?, "TaskReady (http), one per batch")
            }
            "graphql" => {
                let token = baton_tests::token("bench");
                let request = |i: usize| {
                    let query = if i.is_multiple_of(2) {
                        json!({"query": crate::stack::SUBMIT, "variables": {"input": {
                            "projectId": "memory", "name": "api", "tier": "cpu", "input": {"i": i}}}})
                    } else {
                        json!({"query": "{ tasks(filter: {projectId: \"memory\"}, first: 10) { edges { node { id status } } } }"})
                    };
                    baton_tests::http_api_request(&token, &query)
                };
                ((0..events).map(request).collect(), "HTTP API: submitTask and tasks, alternating")
            }
            "sweeper" => (
                (0..events / BATCH).map(|_| json!({"source": "aws.events", "detail-type": "Scheduled Event"})).collect(),
                "scheduled sweeps (one per ten events)",
            ),
            "setup" => (
                (0..events / BATCH).map(|i| json!({"RequestType": "Update",
                    "ResponseURL": "http://{address}/cfn", "StackId": "bench", "RequestId": format!("r{i}"),
                    "LogicalResourceId": "Setup"})).collect(),
                "custom resource updates (one per ten events)",
            ),
            other => bail!("no workload for {other}"),
        })
    }

    /// Creates `n` tasks due in `delay_seconds`, in process, each with its timer: for `on-due` to
    /// dispatch, or for cancels to meet.
    async fn submitted(&self, n: usize, delay_seconds: u32) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for i in 0..n {
            let request: SubmitRequest = serde_json::from_value(json!({"tenant": "bench",
                "project": "memory", "name": "later", "tier": "cpu", "input": {"i": i},
                "delay_seconds": delay_seconds}))?;
            let id = TaskId::from_uuid(uuid::Uuid::now_v7());
            self.sandbox.baton.submit(&request, id).await?;
            ids.push(id.to_string());
        }
        Ok(ids)
    }
}

/// The functions, in the order their workloads build on each other.
const ORDER: [&str; 11] = [
    "submit",
    "on-due",
    "on-result",
    "notifier",
    "counter",
    "rollback",
    "cancel",
    "http-executor",
    "graphql",
    "sweeper",
    "setup",
];

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

/// Cold starts, then the memory run, for every function.
pub async fn measure(sizes: &Sizes) -> Result<Vec<FunctionFigures>> {
    let sandbox = Sandbox::new().await?;
    sandbox.unlimited("bench", "memory").await?;
    let server = TestServer::start(0).await?;
    let mut env = function_env(&sandbox);
    // The executor calls the loopback echo server, so the bench allows it as a stack would.
    let echo = server.url.trim_start_matches("http://").to_owned();
    env.insert("HTTP_ALLOWED_DESTINATIONS".to_owned(), echo);
    let mut workloads = Workloads {
        sandbox,
        server,
        running: Vec::new(),
        stream: Vec::new(),
    };
    let listed = std::fs::read_to_string(format!("{ROOT}/infra/functions"))?;
    let mut figures = Vec::new();
    for function in ORDER {
        if !listed.lines().any(|l| l.trim() == function) {
            bail!("{function} is not in infra/functions");
        }
        let outcome = one(function, sizes, &env, &mut workloads).await;
        match outcome {
            Ok(f) => figures.push(f),
            Err(failure) => {
                return Err(failure.context(function));
            }
        }
    }
    Ok(figures)
}

async fn one(
    function: &'static str,
    sizes: &Sizes,
    env: &HashMap<String, String>,
    workloads: &mut Workloads,
) -> Result<FunctionFigures> {
    let (payloads, workload) = workloads.payloads(function, sizes.events).await?;
    let first = payloads.first().context("no events")?;
    progress(&format!("cold init: {function} ×{}", sizes.cold_starts));
    let (mut inits, mut firsts) = (Vec::new(), Vec::new());
    // Each cold start answers the first event; later copies are repeats, acknowledged as such.
    for _ in 0..sizes.cold_starts {
        let process = Process::spawn(function, env).await?;
        inits.push(process.init().await?);
        let start = Instant::now();
        process
            .api
            .invoke(&address(first, &process.api.address))
            .await?;
        firsts.push(start.elapsed());
    }
    progress(&format!(
        "memory: {function}, {} invocations ({workload})",
        payloads.len()
    ));
    let process = Process::spawn(function, env).await?;
    process.init().await?;
    for payload in &payloads {
        process
            .api
            .invoke(&address(payload, &process.api.address))
            .await?;
    }
    let peak_rss_mb = process.peak_rss_mb()?;
    let events = payloads
        .iter()
        .map(|p| p["Records"].as_array().map_or(1, Vec::len))
        .sum();
    Ok(FunctionFigures {
        function: function.to_owned(),
        init_ms: median(inits),
        first_invocation_ms: median(firsts),
        events,
        workload,
        peak_rss_mb,
        zip_mb: zip_mb(function),
    })
}

/// The custom resource's answer goes to this stand-in.
fn address(payload: &Value, api: &str) -> Value {
    match payload["ResponseURL"].as_str() {
        Some(url) => {
            let mut payload = payload.clone();
            payload["ResponseURL"] = json!(url.replace("{address}", api));
            payload
        }
        None => payload.clone(),
    }
}

/// The size of `function`'s arm64 package in `$BENCH_PACKAGES` (set when the run built them).
fn zip_mb(function: &str) -> Option<f64> {
    let packages = std::env::var("BENCH_PACKAGES").ok()?;
    std::fs::metadata(format!("{packages}/{function}.zip"))
        .ok()
        .map(|m| m.len() as f64 / 1_048_576.0)
}

/// What the template passes every function, pointed at the sandbox.
fn function_env(sandbox: &Sandbox) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .collect();
    let settings = &sandbox.settings;
    for (key, value) in [
        ("TABLE_NAME", settings.table.as_str()),
        ("BUS_NAME", settings.bus.as_str()),
        ("DUE_QUEUE_URL", settings.due_queue_url.as_str()),
        ("RUST_LOG", "info"),
        ("BATON_STAGE", "bench"),
        ("WEBSOCKET_API_ID", "bench"),
        ("WEBSOCKET_STAGE", "bench"),
        ("GRAPHQL_INTROSPECTION", "false"),
        // The gateway's dead-letter view: no queues in a sandbox.
        ("DEAD_LETTER_QUEUES", "{}"),
    ] {
        env.insert(key.to_owned(), value.to_owned());
    }
    for (key, from) in [
        ("JWT_SECRET", "BATON_JWT_SECRET"),
        ("JWT_ISSUER", "BATON_JWT_ISSUER"),
        ("JWT_AUDIENCE", "BATON_JWT_AUDIENCE"),
    ] {
        let value = std::env::var(from).unwrap_or_default();
        env.insert(key.to_owned(), value.to_owned());
    }
    env
}
