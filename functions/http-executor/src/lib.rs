//! `http-executor`: Baton's built-in worker for tier `http`. A task whose input is an HTTP
//! request spec is run when it becomes ready: a 2xx answer succeeds the attempt with the status,
//! headers and body; anything else fails it with the reason, and Baton retries it under the
//! task's policy. Only `http` and `https` URLs are called; the request has a timeout (the spec's,
//! at most [`MAX_TIMEOUT`] and never past the attempt's deadline); a body over the cap fails the
//! attempt instead of being read to the end.
//!
//! ```json
//! {"method": "POST", "url": "https://example.com/hook", "headers": {"x-key": "v"},
//!  "body": {"any": "json"}, "timeout_seconds": 10, "max_response_bytes": 65536}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use aws_lambda_events::sqs::SqsEvent;
use baton_aws::EventBridgeBus;
use baton_aws::inbound::{Ready, TaskResult, body, envelope};
use baton_aws::lambda::{Batch, for_each_message};
use baton_domain::{Outcome, TaskError};
use chrono::Utc;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{Instrument, info, info_span};

/// The `source` of the results the executor reports.
pub const SOURCE: &str = "baton.http";
/// The longest a request may take (the function's own timeout must be longer).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(25);
/// The timeout of a spec that names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The body cap of a spec that names none, and the largest one may ask for: the result must
/// fit a task item and an event.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The largest body cap a spec may ask for.
pub const MAX_RESPONSE_BYTES: usize = 128 * 1024;
/// How much of a failed answer's body its error message quotes.
const QUOTED: usize = 512;

/// A task's input: the request to make.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// `GET` unless given.
    #[serde(default = "get")]
    pub method: String,
    /// An `http` or `https` URL.
    pub url: String,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body: a string is sent as is, anything else as JSON.
    #[serde(default)]
    pub body: Option<Value>,
    /// Seconds the whole request may take (capped at [`MAX_TIMEOUT`]).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Largest response body accepted (at most [`MAX_RESPONSE_BYTES`]).
    #[serde(default)]
    pub max_response_bytes: Option<usize>,
}

fn get() -> String {
    "GET".to_owned()
}

fn failed(code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        error: TaskError {
            code: code.to_owned(),
            message: message.into(),
        },
    }
}

/// Runs the request `input` describes, within `limit`, and answers the attempt's outcome.
pub async fn execute(client: &reqwest::Client, input: &Value, limit: Duration) -> Outcome {
    let spec: RequestSpec = match serde_json::from_value(input.clone()) {
        Ok(spec) => spec,
        Err(e) => {
            return failed(
                "INVALID_REQUEST",
                format!("the input is not a request: {e}"),
            );
        }
    };
    let url = match reqwest::Url::parse(&spec.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        Ok(url) => {
            let scheme = url.scheme();
            return failed(
                "INVALID_REQUEST",
                format!("scheme `{scheme}` is refused: use http or https"),
            );
        }
        Err(e) => return failed("INVALID_REQUEST", format!("url: {e}")),
    };
    let Ok(method) = Method::from_bytes(spec.method.to_ascii_uppercase().as_bytes()) else {
        return failed(
            "INVALID_REQUEST",
            format!("method `{}` is not valid", spec.method),
        );
    };
    let cap = spec
        .max_response_bytes
        .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES)
        .min(MAX_RESPONSE_BYTES);
    let timeout = spec
        .timeout_seconds
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
        .min(MAX_TIMEOUT)
        .min(limit);
    let mut request = client.request(method, url).timeout(timeout);
    for (name, value) in &spec.headers {
        request = request.header(name, value);
    }
    request = match spec.body {
        Some(Value::String(text)) => request.body(text),
        Some(value) => request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(value.to_string()),
        None => request,
    };
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => return transport(&e, timeout),
    };
    let status = response.status();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > cap {
                    return failed(
                        "RESPONSE_TOO_LARGE",
                        format!("the response body is over the {cap}-byte cap"),
                    );
                }
            }
            Ok(None) => break,
            Err(e) => return transport(&e, timeout),
        }
    }
    let text = String::from_utf8_lossy(&body);
    if !status.is_success() {
        let quoted: String = text.chars().take(QUOTED).collect();
        return failed(
            &format!("HTTP_{}", status.as_u16()),
            format!("{status}: {quoted}"),
        );
    }
    let headers: BTreeMap<&str, &str> = response
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let succeeded = Outcome::Succeeded {
        output: json!({"status": status.as_u16(), "headers": headers, "body": text}),
    };
    // Escaped as JSON, a body under the cap may still not fit the result's events.
    match succeeded.check(None) {
        Ok(()) => succeeded,
        Err(reason) => failed("RESPONSE_TOO_LARGE", reason),
    }
}

fn transport(error: &reqwest::Error, timeout: Duration) -> Outcome {
    if error.is_timeout() {
        failed("TIMEOUT", format!("no complete answer within {timeout:?}"))
    } else {
        failed("CONNECTION_FAILED", error.to_string())
    }
}

/// What the executor runs with.
pub struct Executor {
    /// The HTTP client (connection pools are kept between invocations).
    pub client: reqwest::Client,
    /// Where results go.
    pub bus: EventBridgeBus,
}

impl Executor {
    /// A client that sends `User-Agent: baton-http-executor` and follows up to 5 redirects
    /// (to http or https only).
    pub fn new(bus: EventBridgeBus) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent("baton-http-executor")
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()?;
        Ok(Self { client, bus })
    }
}

/// Handles a batch of `TaskReady` events of tier `http`: each request runs, its result goes to
/// the bus. Batches run their messages one after another, so keep `BatchSize` × timeout under
/// the function's timeout.
pub async fn handle(executor: &Executor, event: SqsEvent) -> Batch {
    for_each_message(event, |message| async move {
        let ready = envelope::<Ready>(body(&message)?, "TaskReady")?.detail;
        let span = info_span!("task", task_id = %ready.task_id, tenant = %ready.tenant,
            attempt = ready.attempt, correlation_id = %ready.correlation_id);
        let limit = ready
            .deadline
            .and_then(|deadline| (deadline - Utc::now()).to_std().ok())
            .unwrap_or(MAX_TIMEOUT);
        let outcome = execute(&executor.client, &ready.input, limit)
            .instrument(span.clone())
            .await;
        span.in_scope(|| match &outcome {
            Outcome::Succeeded { .. } => info!("request succeeded"),
            Outcome::Failed { error } => {
                info!(code = %error.code, reason = %error.message, "request failed")
            }
        });
        let result = TaskResult {
            tenant: ready.tenant,
            task_id: ready.task_id,
            attempt: ready.attempt,
            outcome,
            provenance: None,
        };
        executor.bus.report(SOURCE, &result).await?;
        Ok(())
    })
    .await
}
