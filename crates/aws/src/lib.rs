//! Baton's AWS adapters: the only place an AWS SDK call is written. DynamoDB stores tasks,
//! EventBridge carries events, SQS carries timers; [`lambda`] runs the functions' SQS batches.

#[cfg(test)]
mod captured;
#[cfg(feature = "chaos")]
mod chaos;
mod connections;
pub mod counts;
pub mod dlq;
mod dynamo;
pub mod emf;
mod eventbridge;
#[cfg(feature = "testing")]
pub mod faults;
mod flow;
pub mod inbound;
pub mod lambda;
mod logs;
mod push;
mod sqs;
pub mod stream;

use std::sync::Arc;

use baton_app::{Baton, Clock, Connections, Push, SystemClock, TimerQueue};

pub use connections::DynamoConnections;
pub use dynamo::DynamoStore;
pub use eventbridge::{EventBridgeBus, PublishedEvents, SOURCE};
pub use push::ApiGatewayPush;
pub use sqs::{BatchedSqsTimers, SqsTimers};

/// Where Baton's resources are, as the template passes them to every function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The task table (`TABLE_NAME`).
    pub table: String,
    /// The event bus (`BUS_NAME`).
    pub bus: String,
    /// The due-timer queue (`DUE_QUEUE_URL`).
    pub due_queue_url: String,
    /// The lifecycle events put on the bus (`PUBLISHED_EVENTS`; unset: all).
    pub published: PublishedEvents,
}

/// A required environment variable is missing, or says what it cannot.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    /// It is not set.
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    /// Its value is not one it may have.
    #[error("environment variable {0}: {1}")]
    Invalid(&'static str, String),
}

/// The value of environment variable `name`, which must be set.
fn required(name: &'static str) -> Result<String, SettingError> {
    std::env::var(name).map_err(|_| SettingError::Missing(name))
}

impl Settings {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Self, SettingError> {
        let published = std::env::var("PUBLISHED_EVENTS").unwrap_or_default();
        Ok(Self {
            table: required("TABLE_NAME")?,
            bus: required("BUS_NAME")?,
            due_queue_url: required("DUE_QUEUE_URL")?,
            published: PublishedEvents::parse(&published)
                .map_err(|why| SettingError::Invalid("PUBLISHED_EVENTS", why))?,
        })
    }
}

impl DynamoStore {
    /// The task table's store as the template configures a function (`TABLE_NAME`).
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, SettingError> {
        let table = required("TABLE_NAME")?;
        Ok(Self::new(aws_sdk_dynamodb::Client::new(sdk), &table))
    }
}

/// The SDK configuration from the environment. `AWS_ENDPOINT_URL`, when set, points every client
/// at an emulator (MiniStack, LocalStack); unset, at AWS.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    #[cfg(feature = "chaos")]
    if let Some(chaos) = chaos::Chaos::from_env()
        && chaos.lose > 0.0
    {
        return faults::FaultyHttp::losing(chaos.lose).sdk(&sdk);
    }
    sdk
}

/// The SDK clients the service calls through.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Tasks, projects, switches.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The bus.
    pub eventbridge: aws_sdk_eventbridge::Client,
    /// The due queue.
    pub sqs: aws_sdk_sqs::Client,
}

impl Clients {
    /// Each client built from `sdk` as it is.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            eventbridge: aws_sdk_eventbridge::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
        }
    }
}

/// The service wired to DynamoDB, EventBridge and SQS with the given clock, as a queue function
/// uses it (its outbox arms a batch's timers in `SendMessageBatch`es).
pub fn baton(sdk: &aws_config::SdkConfig, settings: &Settings, clock: Arc<dyn Clock>) -> Baton {
    baton_on(Clients::new(sdk), settings, clock)
}

/// [`baton`] on clients built by the caller (with interceptors of its own, say).
pub fn baton_on(clients: Clients, settings: &Settings, clock: Arc<dyn Clock>) -> Baton {
    let timers = SqsTimers::new(clients.sqs.clone(), &settings.due_queue_url);
    wired(clients, settings, clock, Arc::new(BatchedSqsTimers(timers)))
}

/// The service as the GraphQL gateway uses it: a request arms at most one timer, one
/// `SendMessage`.
pub fn gateway_baton(
    sdk: &aws_config::SdkConfig,
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> Baton {
    let clients = Clients::new(sdk);
    let timers = SqsTimers::new(clients.sqs.clone(), &settings.due_queue_url);
    wired(clients, settings, clock, Arc::new(timers))
}

fn wired(
    clients: Clients,
    settings: &Settings,
    clock: Arc<dyn Clock>,
    timers: Arc<dyn TimerQueue>,
) -> Baton {
    Baton::new(
        Arc::new(DynamoStore::new(clients.dynamodb, &settings.table)),
        Arc::new(
            EventBridgeBus::new(clients.eventbridge, &settings.bus)
                .publishing(settings.published.clone()),
        ),
        timers,
        clock,
    )
}

/// Where WebSocket connections are kept, and how messages reach them.
pub type LiveAdapters = (Arc<dyn Connections>, Arc<dyn Push>);

/// The WebSocket side as the template passes it to the gateway and the notifier: connections in
/// the task table, pushes through the API named by `WEBSOCKET_API_ID` and `WEBSOCKET_STAGE`.
pub fn live(
    sdk: &aws_config::SdkConfig,
    settings: &Settings,
) -> Result<LiveAdapters, SettingError> {
    let (api, stage) = websocket_api()?;
    let connections = DynamoConnections::new(aws_sdk_dynamodb::Client::new(sdk), &settings.table);
    let push = ApiGatewayPush::new(sdk, &api, &stage);
    Ok((Arc::new(connections), Arc::new(push)))
}

/// Where clients connect for subscriptions: the WebSocket API the template passes in
/// `WEBSOCKET_API_ID` and `WEBSOCKET_STAGE`, as a `wss://` (emulator: `ws://`) URL.
pub fn subscriptions_url(sdk: &aws_config::SdkConfig) -> Result<String, SettingError> {
    let (api, stage) = websocket_api()?;
    Ok(push::websocket_url(sdk, &api, &stage))
}

fn websocket_api() -> Result<(String, String), SettingError> {
    Ok((required("WEBSOCKET_API_ID")?, required("WEBSOCKET_STAGE")?))
}

/// The service as a deployed function uses it: settings from the environment, system clock,
/// metrics as EMF lines on stdout.
pub async fn baton_from_env() -> Result<Baton, SettingError> {
    let settings = Settings::from_env()?;
    let baton = baton(&sdk_config().await, &settings, Arc::new(SystemClock));
    Ok(baton.with_metrics(Arc::new(emf::EmfMetrics::from_env())))
}
