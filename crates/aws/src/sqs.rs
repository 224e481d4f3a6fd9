use async_trait::async_trait;
use aws_sdk_sqs::Client;
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

#[async_trait]
impl TimerQueue for SqsTimers {
    async fn arm(&self, timer: &Timer, delay: Duration) -> Result<(), InfraError> {
        let body = serde_json::to_string(timer).map_err(|e| InfraError::new("encode timer", e))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(delay_seconds(delay))
            .send()
            .await
            .map_err(|e| InfraError::new("SQS SendMessage", e))?;
        Ok(())
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
