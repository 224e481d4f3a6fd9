//! What every function shares: logging set-up and the SQS batch loop with partial failures.

use std::convert::Infallible;
use std::future::Future;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use baton_app::{Baton, Handled, InfraError};
use lambda_runtime::{LambdaEvent, service_fn};
use tracing::{Instrument, error, info, info_span, warn};

use crate::inbound::{Addressed, Malformed};

/// Why one message of a batch is failed (and so delivered again, then parked in the DLQ).
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// It can never be processed.
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// Infrastructure failed; a later delivery may succeed.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

/// Sets up logging: JSON lines on Lambda (CloudWatch parses them), plain text elsewhere;
/// `RUST_LOG` filters, `info` by default.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        builder.json().flatten_event(true).without_time().init();
    } else {
        builder.init();
    }
}

/// Runs `handle` on every message of `event`, one span each, and reports the failed ones so only
/// they are delivered again.
pub async fn for_each_message<F, Fut>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), MessageError>>,
{
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let receive_count = message
            .attributes
            .get("ApproximateReceiveCount")
            .cloned()
            .unwrap_or_default();
        let span = info_span!("message", message_id = %id, receive_count = %receive_count);
        let outcome = handle(message).instrument(span.clone()).await;
        let _entered = span.enter();
        match outcome {
            Ok(()) => {}
            Err(MessageError::Malformed(malformed)) => {
                error!(code = malformed.code, reason = %malformed.reason, "message rejected; it will be parked in the DLQ");
                response.batch_item_failures.push(failure(id));
            }
            Err(MessageError::Infra(infra)) => {
                error!(error = ?infra, "infrastructure failure; the message will be delivered again");
                response.batch_item_failures.push(failure(id));
            }
        }
    }
    response
}

fn failure(item_identifier: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = item_identifier;
    failure
}

/// Logs what became of a command; every outcome here is acknowledged.
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
        Handled::LostRace(rejection) => warn!(%rejection, "lost a race to another transition"),
        Handled::Rejected(rejection) => warn!(%rejection, "command rejected"),
        Handled::Rearmed(timer) => {
            info!(task_id = %timer.task_id, due_at = %timer.due_at, "timer early; armed again")
        }
        Handled::Parked(gate) => info!(gate = gate.as_str(), "due but held back; parked"),
        Handled::NotFound => warn!("no such task"),
    }
}

/// Runs `command` for its task inside a span naming the task; rejections are logged and
/// acknowledged, infrastructure failures fail the message.
pub async fn execute(baton: &Baton, (tenant, id, command): Addressed) -> Result<(), MessageError> {
    let span = info_span!("command", task_id = %id, tenant = %tenant, command = command.name());
    let handled = baton
        .execute(&tenant, &id, &command)
        .instrument(span.clone())
        .await?;
    span.in_scope(|| log_handled(&handled));
    Ok(())
}

/// Serves a function that consumes an SQS queue: logging, the service from the environment
/// (built once per process), then `handle` for every batch.
pub async fn run_sqs_consumer<F, Fut>(handle: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(&'static Baton, SqsEvent) -> Fut,
    Fut: Future<Output = SqsBatchResponse> + Send,
{
    init_tracing();
    // One service per process, alive as long as the process: leaking it gives handlers a plain
    // shared reference.
    let baton: &'static Baton = Box::leak(Box::new(crate::baton_from_env().await?));
    let handle = &handle;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let batch = handle(baton, event.payload);
        async move { Ok::<_, Infallible>(batch.await) }
    }))
    .await
}
