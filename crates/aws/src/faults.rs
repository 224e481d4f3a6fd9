//! Faults at the SDK boundary, for tests and the chaos run; compiled only with the `testing`
//! feature, so no release binary carries them.
//!
//! [`FaultyHttp`] sits between the AWS SDK and the emulator: for the requests a test names (or at
//! random, in the chaos run) it applies the request and answers 500 in place of its response (the
//! write is done, the response lost), sends it twice, answers throttling or 503 without sending
//! it, or holds it back. Everything above it — the SDK's retries, the adapters' error mapping, the
//! service's classification — runs as in production. It speaks plain HTTP only, as the emulator
//! does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use tracing::warn;

/// What befalls one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdkFault {
    /// Sent and applied; the caller gets a 500 instead of the response.
    LoseResponse,
    /// Sent twice; the caller gets the second response.
    Duplicate,
    /// Not sent; the caller gets DynamoDB's throttling error.
    Throttle,
    /// Not sent; the caller gets a 503.
    Unavailable,
    /// Sent after this long.
    Delay(Duration),
}

/// The plan: faults queued per operation (`TransactWriteItems`, `GetItem`, `PutEvents`, ...),
/// each taken by the next request of that operation, and the faults injected so far.
#[derive(Debug, Default)]
struct Plan {
    queued: VecDeque<(&'static str, SdkFault)>,
    /// The share of other requests whose response is lost (the chaos run).
    lose: f64,
    injected: Vec<(String, SdkFault)>,
}

/// An SDK HTTP client that injects the faults it is told to. Clone it into a configuration with
/// [`FaultyHttp::sdk`]; every clone shares one plan.
#[derive(Debug, Clone)]
pub struct FaultyHttp {
    inner: SharedHttpClient,
    plan: Arc<Mutex<Plan>>,
}

impl FaultyHttp {
    /// A client over plain HTTP (the emulator's), with nothing planned.
    pub fn new() -> Self {
        Self {
            inner: aws_smithy_http_client::Builder::new().build_http(),
            plan: Arc::default(),
        }
    }

    /// A client that loses the response of `lose` of all requests, at random.
    pub fn losing(lose: f64) -> Self {
        let client = Self::new();
        client.plan.lock().expect("plan").lose = lose;
        client
    }

    /// `sdk` with its requests going through this client.
    pub fn sdk(&self, sdk: &SdkConfig) -> SdkConfig {
        sdk.to_builder().http_client(self.clone()).build()
    }

    /// The next request of `operation` meets `fault` (after those queued before it).
    pub fn next(&self, operation: &'static str, fault: SdkFault) -> &Self {
        let mut plan = self.plan.lock().expect("plan");
        plan.queued.push_back((operation, fault));
        self
    }

    /// The faults injected so far, by operation, oldest first.
    pub fn injected(&self) -> Vec<(String, SdkFault)> {
        self.plan.lock().expect("plan").injected.clone()
    }

    /// Takes the fault planned for a request of `operation`, or draws one, if any.
    fn take(&self, operation: &str) -> Option<SdkFault> {
        let mut plan = self.plan.lock().expect("plan");
        let fault = match plan.queued.iter().position(|(op, _)| *op == operation) {
            Some(position) => plan.queued.remove(position).map(|(_, fault)| fault),
            None => (fastrand::f64() < plan.lose).then_some(SdkFault::LoseResponse),
        }?;
        warn!(operation, ?fault, "injected fault");
        plan.injected.push((operation.to_owned(), fault));
        Some(fault)
    }
}

impl Default for FaultyHttp {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient for FaultyHttp {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            inner: self.inner.http_connector(settings, components),
            client: self.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultyConnector {
    inner: SharedHttpConnector,
    client: FaultyHttp,
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        // JSON-protocol services name the operation in `X-Amz-Target`: `Service.Operation`.
        let operation = request
            .headers()
            .get("x-amz-target")
            .and_then(|target| target.rsplit('.').next())
            .unwrap_or_default()
            .to_owned();
        let fault = self.client.take(&operation);
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            match fault {
                None => inner.call(request).await,
                Some(SdkFault::LoseResponse) => {
                    inner.call(request).await?;
                    Ok(error(
                        500,
                        "InternalServerError",
                        "injected: the response was lost",
                    ))
                }
                Some(SdkFault::Duplicate) => {
                    let copy = request.try_clone().expect("a request body held in memory");
                    inner.call(copy).await?;
                    inner.call(request).await
                }
                Some(SdkFault::Throttle) => Ok(error(
                    400,
                    "com.amazonaws.dynamodb.v20120810#ThrottlingException",
                    "injected: rate exceeded",
                )),
                Some(SdkFault::Unavailable) => {
                    Ok(error(503, "ServiceUnavailable", "injected: unavailable"))
                }
                Some(SdkFault::Delay(delay)) => {
                    tokio::time::sleep(delay).await;
                    inner.call(request).await
                }
            }
        })
    }
}

/// An error response in the JSON protocol's shape.
fn error(status: u16, kind: &str, message: &str) -> HttpResponse {
    let body = serde_json::json!({"__type": kind, "message": message}).to_string();
    let mut response = HttpResponse::new(
        StatusCode::try_from(status).expect("a status code"),
        SdkBody::from(body),
    );
    response
        .headers_mut()
        .insert("content-type", "application/x-amz-json-1.0");
    response
}
