//! `submit`: a `SubmitTask` event. Checks that its source may speak for its tenant, validates it
//! (an invalid one is parked in the DLQ with every wrong field named), creates the task with an
//! id derived from the event, so a redelivery creates nothing twice, and starts it: a task due
//! now is dispatched here at once (its kill switches read once per batch, its pause and its
//! project's limit checked in the dispatch's write, as `on-due` does), a later one gets its timer
//! when it is due within the timer window. An idempotency key already used with another payload
//! parks the event in the DLQ too. A submission redriven from the DLQ notes the redrive in its
//! task's history.

use aws_lambda_events::sqs::SqsEvent;
use baton_app::dead_letters::redriven;
use baton_app::{Baton, Gates, Start, SubmitError};
use baton_aws::dlq::redrive_of;
use baton_aws::inbound::{Malformed, SubmitTask, body, envelope};
use baton_aws::lambda::{Batch, MessageError, for_each_command, log_handled};
use baton_domain::{Command, TaskId};
use tracing::info;

/// Handles a batch of `SubmitTask` events. The batch reads each kill switch once, when its first
/// task due now needs it (see [`Gates`]).
pub async fn handle(baton: &Baton, event: SqsEvent) -> Batch {
    let switches = &Gates::default();
    for_each_command(baton, event, |baton, message| async move {
        let submission = envelope::<SubmitTask>(body(&message)?, "SubmitTask")?;
        // Without a tenant the submission is invalid anyway, and says so below.
        if let Some(tenant) = &submission.detail.tenant {
            submission.speaks_for(tenant)?;
        }
        let id = TaskId::derived(&submission.id, submission.time);
        match baton
            .submit_in(&submission.detail, id, Start::Here(switches))
            .await
        {
            Ok(submitted) => {
                let task = &submitted.task;
                info!(
                    task_id = %task.id, tenant = %task.tenant, project = %task.project,
                    version = task.version, correlation_id = %task.correlation_id,
                    duplicate = submitted.duplicate, due_at = %task.due_at, "task submitted"
                );
                if let Some(started) = &submitted.started {
                    log_handled(started);
                }
                if let Some(redrive) = redrive_of(&message) {
                    let note = Command::Note {
                        cause: redriven(redrive),
                    };
                    baton.execute(&task.tenant, &task.id, &note).await?;
                }
                Ok(())
            }
            Err(SubmitError::Invalid(invalid)) => Err(MessageError::Malformed(Malformed::new(
                "INVALID_SUBMISSION",
                invalid.to_string(),
            ))),
            Err(SubmitError::Dependency(refused)) => Err(MessageError::Malformed(Malformed::new(
                "INVALID_DEPENDENCY",
                format!("{}: {refused}", refused.code()),
            ))),
            Err(conflict @ SubmitError::IdempotencyConflict { .. }) => {
                Err(MessageError::Malformed(Malformed::new(
                    "IDEMPOTENCY_CONFLICT",
                    conflict.to_string(),
                )))
            }
            Err(SubmitError::Infra(infra)) => Err(infra.into()),
        }
    })
    .await
}
