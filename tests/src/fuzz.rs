//! Bad input for Baton's entry points, shared by the cargo-fuzz targets (`fuzz/`) and the
//! property-based fuzz that `make test` runs (`tests/tests/emulator/bad_input.rs`).
//!
//! A [`Harness`] is the service on in-memory adapters with the handlers of every function that
//! consumes events and the GraphQL gateway over it. Each input must get an answer Baton can
//! account for: an SQS message is acknowledged (its outcome logged with a code) or failed with a
//! known code, which parks it in its DLQ with that code; a GraphQL request gets JSON with data or
//! coded errors. Anything else, a panic included, is a finding.

use std::sync::{Arc, OnceLock};

use baton_app::memory::{MemoryBus, MemoryConnections, MemoryPush, MemoryStore, MemoryTimers};
use baton_app::{Baton, Caller, SystemClock};
use baton_aws::lambda::{Batch, MessageError};
use baton_domain::{Command, SubmitRequest, Task, TaskId, Tenant};
use baton_graphql::auth::{Verifier, mint};
use baton_graphql::live::Live;
use serde_json::{Value, json};

use crate::{http_api_request, sqs_batch};

/// The codes a message may be failed with; each parks it in its DLQ with that code.
pub const MESSAGE_CODES: &[&str] = &[
    "EVENT_TOO_LARGE",
    "MALFORMED_ENVELOPE",
    "UNEXPECTED_DETAIL_TYPE",
    "INVALID_DETAIL",
    "INVALID_SUBMISSION",
    "INVALID_DEPENDENCY",
    "IDEMPOTENCY_CONFLICT",
    "FORBIDDEN_SOURCE",
    "MALFORMED_TIMER",
];

/// The HTTP statuses the gateway may answer a POST with.
const HTTP_STATUSES: &[u16] = &[200, 400, 401, 413];

const SECRET: &[u8] = b"fuzz-secret";

/// The functions that consume events, with the service they run on.
pub struct Harness {
    /// The service.
    pub baton: Baton,
    /// Its store, read directly.
    pub store: Arc<MemoryStore>,
    gateway: baton_fn_graphql::Gateway,
    /// A task of `acme`, running its first attempt when the harness starts.
    pub task: Task,
}

/// What the functions made of one message: for each function, the code it failed the message
/// with (`None`: acknowledged).
pub type Answers = Vec<(&'static str, Option<&'static str>)>;

impl Harness {
    /// The service on in-memory adapters, with one running task of `acme`.
    pub async fn new() -> Self {
        let store = Arc::new(MemoryStore::default());
        let baton = Baton::new(
            store.clone(),
            Arc::new(MemoryBus::default()),
            Arc::new(MemoryTimers::default()),
            Arc::new(SystemClock),
        );
        let request: SubmitRequest = serde_json::from_value(json!({
            "tenant": "acme", "project": "fuzz", "name": "n", "tier": "gpu"
        }))
        .expect("a submission");
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        baton.submit(&request, id).await.expect("submitted");
        let tenant = Tenant::parse("acme").expect("a tenant");
        baton
            .execute(
                &tenant,
                &id,
                &Command::Dispatch {
                    attempt: 1,
                    lease: crate::lease(),
                },
            )
            .await
            .expect("dispatched");
        let task = baton.task(&tenant, &id).await.unwrap().expect("the task");
        let schema = baton_graphql::schema(baton.clone(), baton_graphql::Options::default());
        let verifier = Some(Verifier::hs256(SECRET, "baton-fuzz", "baton"));
        let live = Live::new(
            baton.clone(),
            schema.clone(),
            Arc::new(MemoryConnections::default()),
            Arc::new(MemoryPush::default()),
            verifier.clone(),
        );
        // Dead letters are admin-only and the fuzz's token is not: no call reaches SQS.
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                .build(),
        );
        let gateway = baton_fn_graphql::Gateway {
            schema,
            live,
            verifier,
            baton: baton.clone(),
            queues: Arc::new(baton_aws::dlq::SqsDeadLetters::new(sqs, Default::default())),
            dashboard: baton_graphql::dashboard::page(&Default::default()).into(),
            dashboard_policy: baton_graphql::dashboard::policy(&Default::default(), true).into(),
        };
        Self {
            baton,
            store,
            gateway,
            task,
        }
    }

    /// Hands `body` as one SQS message to every function that consumes events. Each must
    /// acknowledge it or fail it with one of [`MESSAGE_CODES`].
    pub async fn event(&self, body: &str) -> Result<Answers, String> {
        let batch = || sqs_batch(&[body.to_owned()]);
        let baton = &self.baton;
        let batches: [(&'static str, Batch); 5] = [
            ("submit", baton_fn_submit::handle(baton, batch()).await),
            ("on-due", baton_fn_on_due::handle(baton, batch()).await),
            (
                "on-result",
                baton_fn_on_result::handle(baton, batch()).await,
            ),
            ("cancel", baton_fn_cancel::handle(baton, batch()).await),
            ("rollback", baton_fn_rollback::handle(baton, batch()).await),
        ];
        batches
            .into_iter()
            .map(|(function, batch)| match batch.failed.as_slice() {
                [] => Ok((function, None)),
                [failed] => match &failed.error {
                    MessageError::Malformed(malformed)
                        if MESSAGE_CODES.contains(&malformed.code) =>
                    {
                        Ok((function, Some(malformed.code)))
                    }
                    other => Err(format!("{function} failed the message: {other:?}")),
                },
                more => Err(format!("{function} failed {} messages of one", more.len())),
            })
            .collect()
    }

    /// POSTs `body` to the gateway with a token of `tenant`. The answer must be JSON: data, or
    /// errors that each carry a code.
    pub async fn graphql(&self, tenant: &str, body: &str) -> Result<(u16, Value), String> {
        let caller = Caller {
            tenant: Tenant::parse(tenant).map_err(|e| e.to_string())?,
            subject: "fuzz".to_owned(),
            admin: false,
        };
        let token = mint(
            SECRET,
            "baton-fuzz",
            "baton",
            &caller,
            chrono::Duration::hours(1),
        );
        // The body as given, not re-serialized: the fuzz's bytes reach the gateway unchanged.
        let mut request = http_api_request(&token, &Value::Null);
        request["body"] = json!(body);
        let request = lambda_http::request::from_str(&request.to_string())
            .map_err(|e| format!("the request fixture: {e}"))?;
        let response = baton_fn_graphql::handle(&self.gateway, request)
            .await
            .map_err(|e| format!("the gateway failed: {e}"))?;
        let status = response.status().as_u16();
        let answer: Value = serde_json::from_slice(response.body())
            .map_err(|e| format!("{status}: the body is not JSON: {e}"))?;
        if !HTTP_STATUSES.contains(&status) {
            return Err(format!("answered {status}: {answer}"));
        }
        // A batch answers with an array of responses.
        let responses = match &answer {
            Value::Array(responses) => responses.clone(),
            single => vec![single.clone()],
        };
        for response in &responses {
            let errors = response["errors"].as_array().cloned().unwrap_or_default();
            if errors.is_empty() && response.get("data").is_none() {
                return Err(format!("{status}: neither data nor errors: {answer}"));
            }
            for error in &errors {
                if !error["extensions"]["code"].is_string() {
                    return Err(format!("{status}: an error without a code: {error}"));
                }
            }
        }
        Ok((status, answer))
    }
}

/// Runs `f` on one harness per process, on a runtime of its own: for fuzz targets, which hand
/// inputs over one at a time from a synchronous callback.
pub fn on_shared<T>(f: impl AsyncFnOnce(&Harness) -> T) -> T {
    static SHARED: OnceLock<(tokio::runtime::Runtime, Harness)> = OnceLock::new();
    let (runtime, harness) = SHARED.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let harness = runtime.block_on(Harness::new());
        (runtime, harness)
    });
    runtime.block_on(f(harness))
}
