use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use baton_app::{InfraError, TimerQueue};
use baton_domain::Timer;
use chrono::Duration;

/// Due timers as delayed messages on the due queue, which feeds `on-due`.
#[derive(Debug, Clone)]
pub struct SqsTimers {
    client: Client,
    queue_url: String,
}

impl SqsTimers {
    /// Timers on the queue at `queue_url`.
    pub fn new(client: Client, queue_url: &str) -> Self {
        Self {
            client,
            queue_url: queue_url.to_owned(),
        }
    }
}

/// SQS delays are whole seconds up to 900; round up so a timer never fires early by design.
fn delay_seconds(delay: Duration) -> i32 {
    let millis = delay.num_milliseconds().clamp(0, 900_000);
    ((millis + 999) / 1000) as i32
}

fn body(timer: &Timer) -> Result<String, InfraError> {
    serde_json::to_string(timer).map_err(|e| InfraError::new("encode timer", e))
}

#[async_trait]
impl TimerQueue for SqsTimers {
    async fn arm(&self, timer: &Timer, delay: Duration) -> Result<(), InfraError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body(timer)?)
            .delay_seconds(delay_seconds(delay))
            .send()
            .await
            .map_err(|e| InfraError::new("SQS SendMessage", e))?;
        Ok(())
    }
}

/// [`SqsTimers`] that arm a batch's timers ten to a `SendMessageBatch`, as a queue function's
/// outbox sends them. A type of its own, so that a function which never arms a batch (the
/// GraphQL gateway, and the notifier that links it) carries no batch send.
#[derive(Debug, Clone)]
pub struct BatchedSqsTimers(pub SqsTimers);

#[async_trait]
impl TimerQueue for BatchedSqsTimers {
    async fn arm(&self, timer: &Timer, delay: Duration) -> Result<(), InfraError> {
        self.0.arm(timer, delay).await
    }

    /// Ten timers to a `SendMessageBatch` (a timer is a few hundred bytes, far below the
    /// request's 256 KB); a timer answers its request's failure or its own entry's.
    async fn arm_each(&self, timers: &[(Timer, Duration)]) -> Vec<Result<(), InfraError>> {
        let mut answers = Vec::with_capacity(timers.len());
        for chunk in timers.chunks(MAX_BATCH) {
            answers.extend(self.0.send_batch(chunk).await);
        }
        answers
    }
}

/// SendMessageBatch takes at most this many entries.
const MAX_BATCH: usize = 10;

impl SqsTimers {
    async fn send_batch(&self, timers: &[(Timer, Duration)]) -> Vec<Result<(), InfraError>> {
        let entries: Result<Vec<_>, InfraError> = timers
            .iter()
            .enumerate()
            .map(|(i, (timer, delay))| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body(timer)?)
                    .delay_seconds(delay_seconds(*delay))
                    .build()
                    .map_err(|e| InfraError::new("build SQS batch entry", e))
            })
            .collect();
        let sent = match entries {
            Ok(entries) => self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| InfraError::new("SQS SendMessageBatch", e)),
            Err(error) => Err(error),
        };
        let output = match sent {
            Ok(output) => output,
            Err(error) => return timers.iter().map(|_| Err(error.shared())).collect(),
        };
        let mut answers: Vec<Result<(), InfraError>> = timers.iter().map(|_| Ok(())).collect();
        for failed in output.failed() {
            let reason = format!(
                "{}: {}",
                failed.code(),
                failed.message().unwrap_or_default()
            );
            let error = InfraError::new("SQS SendMessageBatch", reason);
            match failed
                .id()
                .parse::<usize>()
                .ok()
                .and_then(|i| answers.get_mut(i))
            {
                Some(answer) => *answer = Err(error),
                // An id SQS made up: no timer of this request can be trusted to have gone.
                None => return timers.iter().map(|_| Err(error.shared())).collect(),
            }
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_whole_seconds_within_the_sqs_limit() {
        assert_eq!(delay_seconds(Duration::milliseconds(1)), 1);
        assert_eq!(delay_seconds(Duration::zero()), 0);
        assert_eq!(delay_seconds(Duration::seconds(-5)), 0);
        assert_eq!(delay_seconds(Duration::minutes(20)), 900);
    }
}
