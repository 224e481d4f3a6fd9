//! `http-executor`: Baton's built-in worker for tier `http`. A task whose input is an HTTP
//! request spec is run when it becomes ready: a 2xx answer succeeds the attempt with the status,
//! headers and body; anything else fails it with the reason, and Baton retries it under the
//! task's policy. Only `http` and `https` URLs to public addresses are called ([`guard`]: checked
//! after resolution and on every redirect, private ones only through an allowlist), never
//! through a proxy. The request has a timeout: the spec's, at most [`MAX_TIMEOUT`], never past
//! the attempt's deadline, and ending [`baton_aws::lambda::FINISH_MARGIN`] before the
//! invocation's, so the result is reported rather than the function killed and the endpoint
//! called again. A body over the cap fails the attempt instead of being read to the end.
//!
//! ```json
//! {"method": "POST", "url": "https://example.com/hook", "headers": {"x-key": "v"},
//!  "body": {"any": "json"}, "timeout_seconds": 10, "max_response_bytes": 65536}
//! ```

pub mod guard;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_lambda_events::sqs::SqsEvent;
use baton_aws::EventBridgeBus;
use baton_aws::inbound::{Ready, TaskResult, body, envelope};
use baton_aws::lambda::{Batch, for_each_message, time_left};
use baton_domain::{Outcome, TaskError};
use chrono::Utc;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{Instrument, info, info_span};

use crate::guard::{Allowlist, GuardedResolver, Lookup, check_url, forbidden_in, redirects};

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
/// Redirects followed, each checked like the first URL.
const MAX_REDIRECTS: usize = 5;
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

/// A failed attempt. A request that can never be made (`INVALID_REQUEST`) or may never be sent
/// (`FORBIDDEN_DESTINATION`) is not worth another attempt: the task fails at once.
fn failed(code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        error: TaskError {
            code: code.to_owned(),
            message: message.into(),
            retryable: !matches!(code, "INVALID_REQUEST" | "FORBIDDEN_DESTINATION"),
        },
    }
}

/// Makes the requests tasks describe, through the guard: a client whose resolver and redirect
/// policy check every destination, and which ignores proxy settings.
pub struct Requester {
    client: reqwest::Client,
    allowlist: Allowlist,
}

impl Requester {
    /// A requester that resolves names with the system's resolver.
    pub fn new(allowlist: Allowlist) -> Result<Self, reqwest::Error> {
        Self::with_lookup(allowlist, guard::system_lookup())
    }

    /// A requester that resolves names with `lookup`. Sends `User-Agent: baton-http-executor`.
    pub fn with_lookup(allowlist: Allowlist, lookup: Lookup) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent("baton-http-executor")
            .no_proxy()
            .redirect(redirects(MAX_REDIRECTS, allowlist.clone()))
            .dns_resolver(std::sync::Arc::new(GuardedResolver::new(
                lookup,
                allowlist.clone(),
            )))
            .build()?;
        Ok(Self { client, allowlist })
    }

    /// Runs the request `input` describes, within `limit`, and answers the attempt's outcome.
    pub async fn execute(&self, input: &Value, limit: Duration) -> Outcome {
        let spec: RequestSpec = match serde_json::from_value(input.clone()) {
            Ok(spec) => spec,
            Err(e) => {
                return failed(
                    "INVALID_REQUEST",
                    format!("the input is not a request: {e}"),
                );
            }
        };
        let url = match Url::parse(&spec.url) {
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
        if let Err(forbidden) = check_url(&url, &self.allowlist) {
            return failed("FORBIDDEN_DESTINATION", forbidden.0);
        }
        let Ok(method) = Method::from_bytes(spec.method.to_ascii_uppercase().as_bytes()) else {
            return failed(
                "INVALID_REQUEST",
                format!("method `{}` is not valid", spec.method),
            );
        };
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &spec.headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.append(name, value);
                }
                _ => {
                    return failed(
                        "INVALID_REQUEST",
                        format!(
                            "header `{}` is not a valid name and value (no control characters)",
                            name.escape_debug()
                        ),
                    );
                }
            }
        }
        let cap = spec
            .max_response_bytes
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES)
            .min(MAX_RESPONSE_BYTES);
        let timeout = spec
            .timeout_seconds
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
            .min(MAX_TIMEOUT)
            .min(limit);
        if timeout.is_zero() {
            return failed("TIMEOUT", "no time was left for the request");
        }
        let mut request = self
            .client
            .request(method, url)
            .timeout(timeout)
            .headers(headers);
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
}

fn transport(error: &reqwest::Error, timeout: Duration) -> Outcome {
    if let Some(forbidden) = forbidden_in(error) {
        failed("FORBIDDEN_DESTINATION", forbidden.0.clone())
    } else if error.is_timeout() {
        failed("TIMEOUT", format!("no complete answer within {timeout:?}"))
    } else {
        failed("CONNECTION_FAILED", error.to_string())
    }
}

/// What the executor runs with.
pub struct Executor {
    /// Makes the requests (connection pools are kept between invocations).
    pub requester: Requester,
    /// Where results go.
    pub bus: EventBridgeBus,
}

impl Executor {
    /// An executor reporting to `bus`, allowing the private destinations in
    /// `HTTP_ALLOWED_DESTINATIONS` (comma-separated `host:port`s).
    pub fn from_env(bus: EventBridgeBus) -> Result<Self, String> {
        let list = std::env::var("HTTP_ALLOWED_DESTINATIONS").unwrap_or_default();
        let allowlist =
            Allowlist::parse(&list).map_err(|e| format!("HTTP_ALLOWED_DESTINATIONS: {e}"))?;
        let requester = Requester::new(allowlist).map_err(|e| e.to_string())?;
        Ok(Self { requester, bus })
    }
}

/// Handles a batch of `TaskReady` events of tier `http`: each request runs, its result goes to
/// the bus with the attempt's lease. Batches run their messages one after another; each request
/// ends [`baton_aws::lambda::FINISH_MARGIN`] before `deadline`, the invocation's.
pub async fn handle(executor: &Executor, event: SqsEvent, deadline: SystemTime) -> Batch {
    for_each_message(event, |message| async move {
        let ready = envelope::<Ready>(body(&message)?, "TaskReady")?.detail;
        let span = info_span!("task", task_id = %ready.task_id, tenant = %ready.tenant,
            attempt = ready.attempt, correlation_id = %ready.correlation_id);
        let invocation = time_left(deadline);
        let limit = ready
            .deadline
            .and_then(|deadline| (deadline - Utc::now()).to_std().ok())
            .unwrap_or(MAX_TIMEOUT)
            .min(invocation);
        let outcome = executor
            .requester
            .execute(&ready.input, limit)
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
            lease: ready.lease,
            outcome,
            provenance: None,
        };
        executor.bus.report(SOURCE, &result).await?;
        Ok(())
    })
    .await
}
