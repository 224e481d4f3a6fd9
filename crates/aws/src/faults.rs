//! Faults for tests and the chaos run, never active in a production deploy.
//!
//! [`FaultyHttp`] sits between the AWS SDK and the emulator: for the requests a test names (or at
//! random, in the chaos run) it applies the request and answers 500 in place of its response (the
//! write is done, the response lost), sends it twice, answers throttling or 503 without sending
//! it, or holds it back. Everything above it — the SDK's retries, the adapters' error mapping, the
//! service's classification — runs as in production. It speaks plain HTTP only, as the emulator
//! does.
//!
//! [`Chaos`] is the chaos run's switch: `BATON_CHAOS`, which the template sets only when its
//! `Chaos` parameter is given on the `local` or `test` stage.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
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
use tracing::{error, warn};

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

/// The chaos run's faults, as shares: responses lost at the SDK boundary, acknowledged messages
/// delivered again, batches whose process is killed after their commits and before their
/// acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Chaos {
    /// The share of SDK requests whose response is lost.
    pub lose: f64,
    /// The share of handled messages reported failed anyway, so SQS delivers them again.
    pub duplicate: f64,
    /// The share of batches after which the process dies unacknowledged.
    pub crash: f64,
}

impl Chaos {
    /// From `BATON_CHAOS` (`lose=0.1,duplicate=0.1,crash=0.02`), read once per process; `None`
    /// when unset. A value that does not parse is logged and ignored: chaos is never switched on
    /// by accident.
    pub fn from_env() -> Option<Self> {
        static CHAOS: OnceLock<Option<Chaos>> = OnceLock::new();
        *CHAOS.get_or_init(|| Self::read(&std::env::var("BATON_CHAOS").ok()?))
    }

    fn read(text: &str) -> Option<Self> {
        match Self::parse(text) {
            Ok(chaos) => {
                warn!(?chaos, "chaos is on: faults will be injected");
                Some(chaos)
            }
            Err(reason) => {
                error!(%text, %reason, "BATON_CHAOS ignored");
                None
            }
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut chaos = Chaos::default();
        for pair in text.split(',').filter(|pair| !pair.trim().is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not name=share"))?;
            let share: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|share| (0.0..=1.0).contains(share))
                .ok_or_else(|| format!("`{value}` is not a share between 0 and 1"))?;
            match name.trim() {
                "lose" => chaos.lose = share,
                "duplicate" => chaos.duplicate = share,
                "crash" => chaos.crash = share,
                other => return Err(format!("unknown fault `{other}`")),
            }
        }
        Ok(chaos)
    }

    /// Whether a draw falls within `share`.
    pub fn strikes(share: f64) -> bool {
        fastrand::f64() < share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_parses_its_shares_and_refuses_anything_else() {
        let chaos = Chaos::parse("lose=0.1, duplicate=0.1,crash=0.02").unwrap();
        assert_eq!(
            chaos,
            Chaos {
                lose: 0.1,
                duplicate: 0.1,
                crash: 0.02
            }
        );
        assert!(Chaos::parse("lose=2").is_err());
        assert!(Chaos::parse("explode=0.1").is_err());
        assert!(Chaos::parse("lose").is_err());
    }
}
