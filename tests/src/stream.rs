//! A table's stream read as Lambda would deliver it: what the in-process tests and the benchmark
//! feed the counter function, where a deployed stack has its event source mapping.

use std::collections::HashMap;

use anyhow::{Context, Result};
use aws_config::SdkConfig;
use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use serde_json::{Value, json};

/// Reads a table's stream from its start, each call the records written since the last.
pub struct StreamReader {
    client: aws_sdk_dynamodbstreams::Client,
    arn: String,
    /// Per shard, the sequence number of the last record read.
    read: HashMap<String, String>,
}

impl StreamReader {
    /// A reader of `table`'s stream, before its first record.
    pub async fn new(sdk: &SdkConfig, table: &str) -> Result<Self> {
        let described = aws_sdk_dynamodb::Client::new(sdk)
            .describe_table()
            .table_name(table)
            .send()
            .await?;
        let arn = described
            .table()
            .and_then(|t| t.latest_stream_arn())
            .with_context(|| format!("table {table} has no stream"))?
            .to_owned();
        Ok(Self {
            client: aws_sdk_dynamodbstreams::Client::new(sdk),
            arn,
            read: HashMap::new(),
        })
    }

    /// The records written since the last call, in each shard's order, as Lambda's `Records`.
    pub async fn records(&mut self) -> Result<Vec<Value>> {
        let stream = self
            .client
            .describe_stream()
            .stream_arn(&self.arn)
            .send()
            .await?;
        let shards: Vec<String> = stream
            .stream_description()
            .map(|d| {
                d.shards()
                    .iter()
                    .filter_map(|s| s.shard_id())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut records = Vec::new();
        for shard in shards {
            let iterator = self
                .client
                .get_shard_iterator()
                .stream_arn(&self.arn)
                .shard_id(&shard);
            let iterator = match self.read.get(&shard) {
                Some(last) => iterator
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .sequence_number(last),
                None => iterator.shard_iterator_type(ShardIteratorType::TrimHorizon),
            };
            let mut next = iterator.send().await?.shard_iterator;
            while let Some(position) = next.take() {
                let page = self
                    .client
                    .get_records()
                    .shard_iterator(position)
                    .send()
                    .await?;
                if page.records().is_empty() {
                    break;
                }
                for record in page.records() {
                    if let Some(sequence) = record.dynamodb().and_then(|d| d.sequence_number()) {
                        self.read.insert(shard.clone(), sequence.to_owned());
                    }
                    records.push(lambda_record(record));
                }
                next = page.next_shard_iterator;
            }
        }
        Ok(records)
    }
}

/// A record in the shape Lambda delivers it (DynamoDB JSON images).
fn lambda_record(record: &Record) -> Value {
    let change = record.dynamodb();
    let image = |image: Option<&HashMap<String, AttributeValue>>| {
        image.map(|image| {
            Value::Object(
                image
                    .iter()
                    .map(|(name, value)| (name.clone(), attribute(value)))
                    .collect(),
            )
        })
    };
    let mut dynamodb = json!({
        "SequenceNumber": change.and_then(|c| c.sequence_number()),
        "Keys": image(change.and_then(|c| c.keys())),
    });
    if let Some(new) = image(change.and_then(|c| c.new_image())) {
        dynamodb["NewImage"] = new;
    }
    if let Some(old) = image(change.and_then(|c| c.old_image())) {
        dynamodb["OldImage"] = old;
    }
    json!({
        "eventID": record.event_id(),
        "eventName": record.event_name().map(|n| n.as_str()),
        "eventSource": "aws:dynamodb",
        "dynamodb": dynamodb,
    })
}

fn attribute(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(_) => json!({"NULL": true}),
        AttributeValue::Ss(ss) => json!({"SS": ss}),
        AttributeValue::Ns(ns) => json!({"NS": ns}),
        AttributeValue::L(items) => json!({"L": items.iter().map(attribute).collect::<Vec<_>>()}),
        AttributeValue::M(map) => json!({"M": map
            .iter()
            .map(|(name, value)| (name.clone(), attribute(value)))
            .collect::<serde_json::Map<_, _>>()}),
        // Binary values: no task attribute is one.
        _ => Value::Null,
    }
}
