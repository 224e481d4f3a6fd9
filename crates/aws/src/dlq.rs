//! Dead letters on SQS. A function that gives up on a message parks it in its queue's DLQ
//! itself, with why in the `baton.failure` message attribute: a malformed message at once (no
//! delivery could succeed), an infrastructure failure on its last delivery. A message the queue
//! moved on its own (the function crashed or could not park it) is classified from its body as
//! `UNCLASSIFIED`. [`SqsDeadLetters`] reads and redrives the DLQs for the gateway.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use aws_lambda_events::sqs::SqsMessage;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use baton_app::InfraError;
use baton_app::dead_letters::{DeadLetters, Depth, Failure, Letter};
use baton_domain::{TaskId, Tenant};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SettingError;

/// The message attribute holding why a message was parked (JSON, see [`FailureRecord`]).
pub const FAILURE_ATTRIBUTE: &str = "baton.failure";
/// The message attribute naming the redrive that sent a message back.
pub const REDRIVE_ATTRIBUTE: &str = "baton.redrive";
/// Longest reason kept on a parked message.
const MAX_REASON: usize = 1024;

/// A failure as it travels in [`FAILURE_ATTRIBUTE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct FailureRecord {
    code: String,
    reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tier: Option<String>,
    /// The function that parked it.
    function: String,
    /// When it was first sent to its source queue (its age counts from there).
    sent_at: DateTime<Utc>,
    /// When it was parked.
    failed_at: DateTime<Utc>,
}

impl FailureRecord {
    fn failure(&self) -> Failure {
        Failure {
            code: self.code.clone(),
            reason: self.reason.clone(),
            detail_type: self.detail_type.clone(),
            tenant: self.tenant.as_deref().and_then(|t| Tenant::parse(t).ok()),
            task_id: self.task_id.as_deref().and_then(|t| TaskId::parse(t).ok()),
            project: self.project.clone(),
            tier: self.tier.clone(),
        }
    }
}

/// The redrive that sent `message` back from its DLQ, if one did.
pub fn redrive_of(message: &SqsMessage) -> Option<&str> {
    message
        .message_attributes
        .get(REDRIVE_ATTRIBUTE)
        .and_then(|attribute| attribute.string_value.as_deref())
}

/// What a message body says about itself, read leniently (it may be malformed): the
/// detail-type (`Timer` for a due timer), tenant, task, project and tier where present. A
/// `SubmitTask`'s task is the one its event id derives. The code is `UNCLASSIFIED`.
pub fn describe(body: &str) -> Failure {
    let unclassified = Failure {
        code: "UNCLASSIFIED".to_owned(),
        reason: "parked by the queue without a recorded reason".to_owned(),
        ..Failure::default()
    };
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return unclassified;
    };
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let (detail_type, detail) = match text(&value, "detail-type") {
        Some(detail_type) => (
            detail_type,
            value.get("detail").cloned().unwrap_or_default(),
        ),
        None if value.get("due_at").is_some() => ("Timer".to_owned(), value.clone()),
        None => return unclassified,
    };
    let derived = || {
        let time = text(&value, "time")?.parse::<DateTime<Utc>>().ok()?;
        Some(TaskId::derived(&text(&value, "id")?, time))
    };
    let task_id = match detail_type.as_str() {
        "SubmitTask" => derived(),
        _ => text(&detail, "task_id").and_then(|id| TaskId::parse(&id).ok()),
    };
    Failure {
        detail_type: Some(detail_type),
        tenant: text(&detail, "tenant").and_then(|t| Tenant::parse(&t).ok()),
        task_id,
        project: text(&detail, "project"),
        tier: text(&detail, "tier"),
        ..unclassified
    }
}

/// Where a source queue parks its failures, from its redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spot {
    dlq_url: String,
    max_receive_count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RedrivePolicy {
    dead_letter_target_arn: String,
    max_receive_count: Value,
}

/// `arn:aws:sqs:{region}:{account}:{name}` → (account, name).
fn queue_of(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.rsplitn(3, ':');
    let name = parts.next()?;
    let account = parts.next()?;
    Some((account, name))
}

/// Parks the messages a function gives up on in the DLQ of the queue they came from, found
/// from that queue's redrive policy (read once per process).
pub struct Parking {
    client: Client,
    function: String,
    spots: Mutex<HashMap<String, Option<Spot>>>,
}

impl Parking {
    /// Parking for `function`'s messages.
    pub fn new(client: Client, function: &str) -> Self {
        Self {
            client,
            function: function.to_owned(),
            spots: Mutex::new(HashMap::new()),
        }
    }

    async fn url(&self, arn: &str) -> Result<String, InfraError> {
        let (account, name) = queue_of(arn)
            .ok_or_else(|| InfraError::new("parse queue ARN", format!("not a queue ARN: {arn}")))?;
        let output = self
            .client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| InfraError::new("SQS GetQueueUrl", e))?;
        Ok(output.queue_url.unwrap_or_default())
    }

    /// The DLQ of the queue `source_arn`, if it has one.
    async fn spot(&self, source_arn: &str) -> Result<Option<Spot>, InfraError> {
        if let Some(spot) = self.spots.lock().unwrap().get(source_arn) {
            return Ok(spot.clone());
        }
        let source = self.url(source_arn).await?;
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(source)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| InfraError::new("SQS GetQueueAttributes", e))?;
        let policy = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .and_then(|p| serde_json::from_str::<RedrivePolicy>(p).ok());
        let spot = match policy {
            Some(policy) => Some(Spot {
                dlq_url: self.url(&policy.dead_letter_target_arn).await?,
                max_receive_count: match &policy.max_receive_count {
                    Value::String(text) => text.parse().unwrap_or(1),
                    other => other.as_u64().unwrap_or(1) as u32,
                },
            }),
            None => None,
        };
        self.spots
            .lock()
            .unwrap()
            .insert(source_arn.to_owned(), spot.clone());
        Ok(spot)
    }

    /// Whether a failed delivery of `message` is its last: the queue would park it next.
    pub async fn last_delivery(&self, message: &SqsMessage) -> Result<bool, InfraError> {
        let Some(source) = message.event_source_arn.as_deref() else {
            return Ok(false);
        };
        let receives: u32 = message
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        Ok(self
            .spot(source)
            .await?
            .is_some_and(|spot| receives >= spot.max_receive_count))
    }

    /// Parks `message` in its queue's DLQ with `code` and `reason` recorded beside it. `false`
    /// when its queue has no DLQ (the caller then fails it and the queue keeps it).
    pub async fn park(
        &self,
        message: &SqsMessage,
        code: &str,
        reason: &str,
    ) -> Result<bool, InfraError> {
        let Some(source) = message.event_source_arn.as_deref() else {
            return Ok(false);
        };
        let Some(spot) = self.spot(source).await? else {
            return Ok(false);
        };
        let body = message.body.clone().unwrap_or_default();
        let described = describe(&body);
        let now = Utc::now();
        let sent_at = message
            .attributes
            .get("SentTimestamp")
            .and_then(|ms| epoch_millis(ms))
            .unwrap_or(now);
        let mut reason = reason.to_owned();
        if reason.len() > MAX_REASON {
            let cut = reason.floor_char_boundary(MAX_REASON);
            reason.truncate(cut);
        }
        let record = FailureRecord {
            code: code.to_owned(),
            reason,
            detail_type: described.detail_type,
            tenant: described.tenant.map(|t| t.to_string()),
            task_id: described.task_id.map(|t| t.to_string()),
            project: described.project,
            tier: described.tier,
            function: self.function.clone(),
            sent_at,
            failed_at: now,
        };
        let record = serde_json::to_string(&record).map_err(|e| InfraError::new("encode", e))?;
        self.client
            .send_message()
            .queue_url(&spot.dlq_url)
            .message_body(body)
            .message_attributes(FAILURE_ATTRIBUTE, string_attribute(&record)?)
            .send()
            .await
            .map_err(|e| InfraError::new("SQS SendMessage (park)", e))?;
        Ok(true)
    }
}

/// An SQS timestamp attribute (milliseconds since the epoch) as a time.
fn epoch_millis(text: &str) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(text.parse().ok()?).single()
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, InfraError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| InfraError::new("build message attribute", e))
}

/// A queue and its DLQ.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QueuePair {
    /// The DLQ's URL.
    pub dlq: String,
    /// The source queue's URL, where a redrive sends letters back.
    pub source: String,
}

/// The DLQs on SQS, by the short name of their source queue.
pub struct SqsDeadLetters {
    client: Client,
    queues: BTreeMap<String, QueuePair>,
}

impl SqsDeadLetters {
    /// DLQs at `queues`.
    pub fn new(client: Client, queues: BTreeMap<String, QueuePair>) -> Self {
        Self { client, queues }
    }

    /// The DLQs the template lists in `DEAD_LETTER_QUEUES`:
    /// `{"submit": {"dlq": url, "source": url}, ...}`.
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, SettingError> {
        let queues = std::env::var("DEAD_LETTER_QUEUES")
            .ok()
            .and_then(|json| serde_json::from_str(&json).ok())
            .ok_or(SettingError::Missing("DEAD_LETTER_QUEUES"))?;
        Ok(Self::new(Client::new(sdk), queues))
    }

    /// Every queue URL, sources and DLQs, for readiness checks.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.queues
            .values()
            .flat_map(|pair| [pair.source.as_str(), pair.dlq.as_str()])
    }

    fn pair(&self, queue: &str) -> Result<&QueuePair, InfraError> {
        self.queues
            .get(queue)
            .ok_or_else(|| InfraError::new("dead letters", format!("no queue {queue}")))
    }

    /// Checks that a queue answers.
    pub async fn reachable(&self, url: &str) -> Result<(), InfraError> {
        self.client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| InfraError::new("SQS GetQueueAttributes", e))?;
        Ok(())
    }
}

fn letter(message: aws_sdk_sqs::types::Message) -> Letter {
    let first_sent = message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|ms| epoch_millis(ms))
        .unwrap_or_else(Utc::now);
    let record = message
        .message_attributes()
        .and_then(|a| a.get(FAILURE_ATTRIBUTE))
        .and_then(|v| v.string_value())
        .and_then(|json| serde_json::from_str::<FailureRecord>(json).ok());
    let body = message.body().unwrap_or_default();
    let (failure, sent_at) = match record {
        Some(record) => (record.failure(), record.sent_at),
        None => (describe(body), first_sent),
    };
    Letter {
        id: message.message_id().unwrap_or_default().to_owned(),
        receipt: message.receipt_handle().unwrap_or_default().to_owned(),
        body: body.to_owned(),
        sent_at,
        failure,
    }
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    fn queues(&self) -> Vec<String> {
        self.queues.keys().cloned().collect()
    }

    async fn depth(&self, queue: &str) -> Result<Depth, InfraError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.pair(queue)?.dlq)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| InfraError::new("SQS GetQueueAttributes", e))?;
        let count = |name: QueueAttributeName| {
            output
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Depth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }

    async fn receive(&self, queue: &str, hold: Duration) -> Result<Vec<Letter>, InfraError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.pair(queue)?.dlq)
            .max_number_of_messages(10)
            .visibility_timeout(hold.num_seconds().clamp(1, 43_200) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names(FAILURE_ATTRIBUTE)
            .send()
            .await
            .map_err(|e| InfraError::new("SQS ReceiveMessage", e))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(letter)
            .collect())
    }

    async fn release(&self, queue: &str, letters: &[Letter]) -> Result<(), InfraError> {
        let dlq = &self.pair(queue)?.dlq;
        for chunk in letters.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, letter)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&letter.receipt)
                        .visibility_timeout(0)
                        .build()
                        .map_err(|e| InfraError::new("build visibility change", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.client
                .change_message_visibility_batch()
                .queue_url(dlq)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| InfraError::new("SQS ChangeMessageVisibilityBatch", e))?;
        }
        Ok(())
    }

    async fn send_back(
        &self,
        queue: &str,
        letter: &Letter,
        redrive: &str,
    ) -> Result<(), InfraError> {
        let pair = self.pair(queue)?;
        self.client
            .send_message()
            .queue_url(&pair.source)
            .message_body(&letter.body)
            .message_attributes(REDRIVE_ATTRIBUTE, string_attribute(redrive)?)
            .send()
            .await
            .map_err(|e| InfraError::new("SQS SendMessage (redrive)", e))?;
        Ok(())
    }

    async fn delete(&self, queue: &str, letter: &Letter) -> Result<(), InfraError> {
        self.client
            .delete_message()
            .queue_url(&self.pair(queue)?.dlq)
            .receipt_handle(&letter.receipt)
            .send()
            .await
            .map_err(|e| InfraError::new("SQS DeleteMessage", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_describes_its_event_task_and_tier_leniently() {
        let submit = json!({"id": "e-1", "time": "2026-03-01T12:00:00Z", "detail-type": "SubmitTask",
            "detail": {"tenant": "acme", "project": "p", "tier": "http"}});
        let described = describe(&submit.to_string());
        assert_eq!(described.class(), "SubmitTask/UNCLASSIFIED");
        assert_eq!(
            described.task_id,
            Some(TaskId::derived(
                "e-1",
                "2026-03-01T12:00:00Z".parse().unwrap()
            ))
        );
        assert_eq!(
            (described.project.as_deref(), described.tier.as_deref()),
            (Some("p"), Some("http"))
        );
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        let timer = json!({"tenant": "acme", "task_id": id, "attempt": 1, "due_at": "2026-03-01T12:00:00Z"});
        let described = describe(&timer.to_string());
        assert_eq!(
            (described.class().as_str(), described.task_id),
            ("Timer/UNCLASSIFIED", Some(id))
        );
        assert_eq!(describe("not json").class(), "Unknown/UNCLASSIFIED");
        assert_eq!(describe(r#"{"detail-type": 3}"#).detail_type, None);
    }

    #[test]
    fn a_queue_arn_names_its_account_and_queue() {
        assert_eq!(
            queue_of("arn:aws:sqs:eu-west-1:123456789012:baton-submit-dlq"),
            Some(("123456789012", "baton-submit-dlq"))
        );
        assert_eq!(queue_of("nonsense"), None);
    }
}
