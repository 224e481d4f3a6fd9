//! What every function shares: the SQS batch loop, and how a batch is settled: a message
//! that can never succeed is parked in its DLQ at once with why, one that failed on
//! infrastructure is delivered again (and parked with why on its last delivery), the rest are
//! acknowledged.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use baton_app::{Baton, Gates, Handled, InfraError, Outbox};
use baton_domain::{TaskId, Tenant};
use lambda_runtime::{LambdaEvent, service_fn};
use tracing::{Instrument, error, info, info_span, warn};

use crate::dlq::Parking;
use crate::emf::EmfMetrics;
use crate::inbound::{Addressed, Malformed};
pub use crate::logs::init_tracing;

/// Why one message of a batch is failed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// It can never be processed: parked in the DLQ at once.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// Infrastructure failed; a later delivery may succeed, unless the store refused the write
    /// itself (a permanent error), which no delivery changes.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

impl MessageError {
    /// The code recorded on the message when it is parked: the malformed message's, or
    /// `STORE_REJECTED` for a write the store refused as invalid, or `INFRA_ERROR`.
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::Malformed(malformed) => malformed.code,
            MessageError::Infra(infra) if infra.permanent => "STORE_REJECTED",
            MessageError::Infra(_) => "INFRA_ERROR",
        }
    }

    /// Whether no later delivery can succeed, so the message is parked at once.
    pub fn permanent(&self) -> bool {
        match self {
            MessageError::Malformed(_) => true,
            MessageError::Infra(infra) => infra.permanent,
        }
    }
}

/// A message a handler failed, and why.
#[derive(Debug)]
pub struct Failed {
    /// The message.
    pub message: SqsMessage,
    /// Why.
    pub error: MessageError,
}

/// What a handler made of a batch: the messages it failed; every other one succeeded.
#[derive(Debug, Default)]
pub struct Batch {
    /// The failed messages, in batch order.
    pub failed: Vec<Failed>,
}

impl Batch {
    /// The ids of the failed messages.
    pub fn failed_ids(&self) -> Vec<&str> {
        self.failed
            .iter()
            .map(|f| f.message.message_id.as_deref().unwrap_or_default())
            .collect()
    }
}

/// Runs `handle` on every message of `event`, one span each, and collects the failures.
pub async fn for_each_message<F, Fut>(event: SqsEvent, handle: F) -> Batch
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), MessageError>>,
{
    let mut batch = Batch::default();
    for message in event.records {
        let span = message_span(&message);
        let outcome = handle(message.clone()).instrument(span.clone()).await;
        let _entered = span.enter();
        match outcome {
            Ok(()) => {}
            Err(error) => {
                match &error {
                    MessageError::Malformed(malformed) => {
                        error!(code = malformed.code, reason = %malformed.reason, "message rejected")
                    }
                    MessageError::Infra(infra) => {
                        error!(error = ?infra, "infrastructure failure")
                    }
                }
                batch.failed.push(Failed { message, error });
            }
        }
    }
    batch
}

/// [`for_each_message`] for commands: each message's command runs through its own [`Baton`],
/// whose lifecycle events and timers an [`Outbox`] holds until the batch is done and then sends
/// together (a batch of ten dispatches: one `PutEvents`, not ten). A message whose events or
/// timers could not all be sent is failed, so it is delivered again and its command repeats
/// them.
pub async fn for_each_command<F, Fut>(baton: &Baton, event: SqsEvent, handle: F) -> Batch
where
    F: Fn(Baton, SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), MessageError>>,
{
    let outbox = Outbox::new(baton);
    let messages = event.records.clone();
    let id = |message: &SqsMessage| message.message_id.clone().unwrap_or_default();
    let mut batch = for_each_message(event, |message| {
        handle(outbox.holding(baton, &id(&message)), message)
    })
    .await;
    for (owner, error) in outbox.flush().await {
        let failed_already = batch.failed.iter().any(|f| id(&f.message) == owner);
        let message = messages.iter().find(|m| id(m) == owner);
        if let Some(message) = message.filter(|_| !failed_already) {
            message_span(message)
                .in_scope(|| error!(error = ?error, "its events or timers were not sent"));
            batch.failed.push(Failed {
                message: message.clone(),
                error: MessageError::Infra(error),
            });
        }
    }
    let place = |failed: &Failed| messages.iter().position(|m| id(m) == id(&failed.message));
    batch.failed.sort_by_key(place);
    batch
}

fn message_span(message: &SqsMessage) -> tracing::Span {
    let id = message.message_id.as_deref().unwrap_or_default();
    let receive_count = message
        .attributes
        .get("ApproximateReceiveCount")
        .map(String::as_str)
        .unwrap_or_default();
    info_span!("message", message_id = %id, receive_count = %receive_count)
}

/// What a function settles its batches with.
pub struct Settlement {
    /// Parks messages in their DLQ.
    pub parking: Parking,
    /// Counts rejections and DLQ sends.
    pub metrics: Arc<EmfMetrics>,
}

impl Settlement {
    /// Parks the failed messages that can never succeed, and those on their last delivery,
    /// with why; answers the rest as failed so they are delivered again. A message that cannot
    /// be parked is failed too, and its queue parks it without a reason in the end.
    pub async fn settle(&self, batch: Batch) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        for Failed { message, error } in batch.failed {
            let span = message_span(&message);
            let _entered = span.enter();
            let park_now = match error.permanent() {
                true => {
                    self.metrics.malformed(error.code());
                    Ok(true)
                }
                false => self.parking.last_delivery(&message).await,
            };
            let parked = match park_now {
                Ok(true) => {
                    self.parking
                        .park(&message, error.code(), &error.to_string())
                        .await
                }
                other => other.map(|_| false),
            };
            match parked {
                Ok(true) => {
                    self.metrics.dlq_sent(error.code());
                    warn!(code = error.code(), "parked in the DLQ");
                }
                Ok(false) => {
                    info!(code = error.code(), "failed; it will be delivered again");
                    response
                        .batch_item_failures
                        .push(failure(message.message_id.clone().unwrap_or_default()));
                }
                Err(infra) => {
                    error!(error = ?infra, "could not park; it will be delivered again");
                    response
                        .batch_item_failures
                        .push(failure(message.message_id.clone().unwrap_or_default()));
                }
            }
        }
        response
    }
}

/// The failure of the message with `id`, so SQS delivers it again.
pub(crate) fn failure(id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = id;
    failure
}

/// Logs what became of a command; every outcome here is acknowledged, and each that changed
/// nothing is logged with a code.
pub fn log_handled(handled: &Handled) {
    match handled {
        Handled::Applied(task) => info!(
            task_id = %task.id, tenant = %task.tenant, project = %task.project,
            version = task.version, correlation_id = %task.correlation_id,
            status = task.status.as_str(), "transition applied"
        ),
        Handled::AlreadyApplied(task) => info!(
            task_id = %task.id, tenant = %task.tenant, project = %task.project,
            version = task.version, correlation_id = %task.correlation_id,
            "already applied; effects repeated"
        ),
        Handled::LostRace(rejection) => warn!(
            code = rejection.code(), %rejection, "lost a race to another transition"
        ),
        Handled::Rejected(rejection) => {
            warn!(code = rejection.code(), %rejection, "command rejected")
        }
        Handled::Rearmed(timer) => {
            info!(task_id = %timer.task_id, due_at = %timer.due_at, "timer early; armed again")
        }
        Handled::Parked(gate) => info!(gate = gate.as_str(), "due but held back; parked"),
        // An unknown task, or one of another tenant: the same answer, so nothing is learned
        // about other tenants' ids.
        Handled::NotFound => warn!(code = "TASK_NOT_FOUND", "no such task of this tenant"),
    }
}

/// Runs the command each message of `event` carries (`parse` reads it) through
/// [`for_each_command`], with the batch's tasks read together first (one read per tenant,
/// not one per message) and its dispatches sharing `switches`. If that read fails, each command
/// reads its own task.
pub async fn execute_batch<P>(baton: &Baton, switches: &Gates, event: SqsEvent, parse: P) -> Batch
where
    P: Fn(&SqsMessage) -> Result<Addressed, MessageError>,
{
    let id = |message: &SqsMessage| message.message_id.clone().unwrap_or_default();
    let mut parsed: HashMap<String, Result<Addressed, MessageError>> = HashMap::new();
    for message in &event.records {
        let span = message_span(message);
        parsed.insert(id(message), span.in_scope(|| parse(message)));
    }
    let wanted: Vec<(Tenant, TaskId)> = parsed
        .values()
        .filter_map(|command| command.as_ref().ok())
        .map(|(tenant, task_id, _)| (tenant.clone(), *task_id))
        .collect();
    let read = match baton.read_tasks(&wanted).await {
        Ok(read) => Some(read),
        Err(error) => {
            warn!(error = ?error, "the batch's tasks could not be read together; each reads its own");
            None
        }
    };
    let parsed = std::sync::Mutex::new(parsed);
    let (read, parsed) = (&read, &parsed);
    for_each_command(baton, event, |baton, message| async move {
        let command = parsed.lock().unwrap().remove(&id(&message));
        // SQS gives each message of a batch its own id.
        let (tenant, task_id, command) = command.unwrap_or_else(|| {
            Err(InfraError::new("batch", "two messages of the batch share an id").into())
        })?;
        let span =
            info_span!("command", task_id = %task_id, tenant = %tenant, command = command.name());
        let task = match read {
            Some(read) => read.get(&(tenant, task_id)).cloned(),
            None => baton.task(&tenant, &task_id).await?,
        };
        let handled = baton
            .execute_read(switches, task, &command)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| log_handled(&handled));
        Ok(())
    })
    .await
}

/// What a function leaves of its invocation's time to finish the work in hand, report it and
/// answer, rather than be stopped midway and have its work delivered again.
pub const FINISH_MARGIN: Duration = Duration::from_secs(2);

/// The time a function may still start work in before `deadline` (its invocation's), less
/// [`FINISH_MARGIN`]; zero once that has passed.
pub fn time_left(deadline: SystemTime) -> Duration {
    deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(FINISH_MARGIN)
}

/// Serves a function that consumes an SQS queue with `state` built once per process: logging,
/// then `handle` for every batch, settled against the queue's DLQ.
pub async fn serve_batches<S, F, Fut>(
    state: &'static S,
    metrics: Arc<EmfMetrics>,
    handle: F,
) -> Result<(), lambda_runtime::Error>
where
    S: Sync + 'static,
    F: Fn(&'static S, SqsEvent) -> Fut,
    Fut: Future<Output = Batch> + Send,
{
    serve_batches_until(state, metrics, move |state, event, _| handle(state, event)).await
}

/// [`serve_batches`] for a handler that needs the invocation's deadline (when Lambda stops
/// the function), to finish its work before it.
pub async fn serve_batches_until<S, F, Fut>(
    state: &'static S,
    metrics: Arc<EmfMetrics>,
    handle: F,
) -> Result<(), lambda_runtime::Error>
where
    S: Sync + 'static,
    F: Fn(&'static S, SqsEvent, SystemTime) -> Fut,
    Fut: Future<Output = Batch> + Send,
{
    let sdk = crate::sdk_config().await;
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
    let settlement: &'static Settlement = Box::leak(Box::new(Settlement {
        parking: Parking::new(aws_sdk_sqs::Client::new(&sdk), &function),
        metrics,
    }));
    let handle = &handle;
    #[cfg(feature = "chaos")]
    let chaos = crate::chaos::Chaos::from_env();
    // Boxed: the runtime's future nested in the caller's is deeper than the compiler's layout
    // limit.
    Box::pin(lambda_runtime::run(service_fn(
        move |event: LambdaEvent<SqsEvent>| {
            #[cfg(feature = "chaos")]
            let ids = crate::chaos::message_ids(chaos, &event.payload);
            let batch = handle(state, event.payload, event.context.deadline());
            async move {
                let response = settlement.settle(batch.await).await;
                #[cfg(feature = "chaos")]
                let response = crate::chaos::disturbed(chaos, &ids, response);
                Ok::<_, Infallible>(response)
            }
        },
    )))
    .await
}

/// Serves a function that runs commands from an SQS queue: the service from the environment,
/// then [`serve_batches`].
pub async fn run_sqs_consumer<F, Fut>(handle: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(&'static Baton, SqsEvent) -> Fut,
    Fut: Future<Output = Batch> + Send,
{
    init_tracing();
    // One service per process, alive as long as the process: leaking it gives handlers a plain
    // shared reference.
    let baton: &'static Baton = Box::leak(Box::new(crate::baton_from_env().await?));
    serve_batches(baton, Arc::new(EmfMetrics::from_env()), handle).await
}
