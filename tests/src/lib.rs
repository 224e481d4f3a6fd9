//! Helpers for Baton's tests against the emulator: a [`Sandbox`] of isolated resources for
//! in-process handler tests, a [`Stack`] for end-to-end tests of a deployed stack, and fixtures.
//!
//! Both kinds need an emulator at `$AWS_ENDPOINT_URL` (default `http://127.0.0.1:4566`);
//! `make test` starts one and deploys the stack.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_config::SdkConfig;
use aws_lambda_events::sqs::SqsEvent;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use baton_app::memory::ManualClock;
use baton_app::{Baton, Handled};
use baton_aws::Settings;
use baton_domain::{Command, Outcome, SubmitRequest, Task, TaskError, TaskId};
use serde_json::{Value, json};

pub mod fuzz;
mod owned;
pub mod stream;

use owned::Owned;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The SDK configuration for the emulator (dummy credentials, `us-east-1` unless set).
pub async fn emulator() -> SdkConfig {
    let endpoint =
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned());
    let region = std::env::var("AWS_DEFAULT_REGION").unwrap_or_else(|_| "us-east-1".to_owned());
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::for_tests())
        .load()
        .await
}

/// A name no other test run uses: `{prefix}-{12 hex digits}`.
pub fn unique(prefix: &str) -> String {
    let simple = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}-{}", &simple[simple.len() - 12..])
}

/// Stream records per counter invocation at most (the template's `BatchSize` for the counter).
pub const COUNTER_BATCH: usize = 1000;

/// Polls `probe` every 100 ms until it gives a value or `limit` passes.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An SQS batch as Lambda's event source mapping delivers it, one record per body.
pub fn sqs_batch(bodies: &[String]) -> SqsEvent {
    let fixture: Value = fixture("sqs-batch.json");
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut record = fixture["Records"][0].clone();
            record["messageId"] = json!(format!("message-{i}"));
            record["body"] = json!(body);
            record
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("an SQS event")
}

/// The source a producer of the tenant `detail` names puts its events from (`{tenant}.tests`),
/// or `tests` for a detail that names none.
pub fn source_for(detail: &Value) -> String {
    detail["tenant"]
        .as_str()
        .map_or_else(|| "tests".to_owned(), |tenant| format!("{tenant}.tests"))
}

/// An EventBridge event of `detail_type` as a rule delivers it to SQS, from the source of the
/// tenant it names; `id` makes it unique.
pub fn eventbridge_event(detail_type: &str, id: &str, detail: Value) -> String {
    let mut event: Value = fixture("eventbridge-event.json");
    event["detail-type"] = json!(detail_type);
    event["source"] = json!(source_for(&detail));
    event["id"] = json!(id);
    event["time"] = json!(chrono::Utc::now().to_rfc3339());
    event["detail"] = detail;
    event.to_string()
}

/// A bearer token for `tenant` as an operator, signed with the local stack's settings
/// (`BATON_JWT_*` from `localstack/env.sh`).
pub fn token(tenant: &str) -> String {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let caller = baton_app::Caller {
        tenant: baton_domain::Tenant::parse(tenant).expect("a tenant name"),
        subject: "e2e".to_owned(),
        admin: true,
    };
    baton_graphql::auth::mint(
        var("BATON_JWT_SECRET").as_bytes(),
        &var("BATON_JWT_ISSUER"),
        &var("BATON_JWT_AUDIENCE"),
        &caller,
        chrono::Duration::hours(1),
    )
}

/// A GraphQL POST as API Gateway's HTTP API hands it to the gateway function, with `token`.
pub fn http_api_request(token: &str, body: &Value) -> Value {
    let mut request = fixture("apigw-v2-post-graphql.json");
    request["headers"]["authorization"] = json!(format!("Bearer {token}"));
    request["body"] = json!(body.to_string());
    request
}

/// An invocation's deadline a minute away, as Lambda gives a function with a 60 s timeout.
pub fn lambda_deadline() -> std::time::SystemTime {
    std::time::SystemTime::now() + Duration::from_secs(60)
}

/// The lease the in-process tests' dispatches draw, so their workers' answers carry it.
pub fn lease() -> baton_domain::Lease {
    baton_domain::Lease::from_random([7; 16])
}

/// A worker's success for `attempt`.
pub fn succeed(attempt: u32) -> Command {
    Command::Complete {
        lease: Some(lease()),
        attempt,
        outcome: Outcome::Succeeded {
            output: json!({"ok": true}),
        },
        provenance: None,
    }
}

/// A worker's failure of `attempt`.
pub fn fail(attempt: u32) -> Command {
    Command::Complete {
        lease: Some(lease()),
        attempt,
        outcome: Outcome::Failed {
            error: TaskError {
                code: "BOOM".into(),
                message: "failed".into(),
                retryable: true,
            },
        },
        provenance: None,
    }
}

/// A fixture file from `tests/fixtures`, parsed.
pub fn fixture(name: &str) -> Value {
    let path = format!("{ROOT}/tests/fixtures/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The task table's definition, read from `infra/template.yaml` so tests and deployments share it.
fn table_definition() -> Result<Value> {
    let text = std::fs::read_to_string(format!("{ROOT}/infra/template.yaml"))?;
    let template: serde_norway::Value = serde_norway::from_str(&text)?;
    let properties = &template["Resources"]["TaskTable"]["Properties"];
    // Only the untagged parts (keys, indexes) are needed; `!Sub`-tagged names are dropped.
    let keep = [
        "AttributeDefinitions",
        "KeySchema",
        "GlobalSecondaryIndexes",
        "StreamSpecification",
    ];
    let mut definition = serde_json::Map::new();
    for name in keep {
        let value = serde_json::to_value(&properties[name])
            .with_context(|| format!("TaskTable.{name} in the template"))?;
        definition.insert(name.to_owned(), value);
    }
    Ok(Value::Object(definition))
}

/// The task table's indexes as the template declares them: `(index name, partition key
/// attribute)`.
pub fn table_indexes() -> Result<Vec<(String, String)>> {
    let definition = table_definition()?;
    Ok(definition["GlobalSecondaryIndexes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|index| {
            let hash = index["KeySchema"]
                .as_array()?
                .iter()
                .find(|key| key["KeyType"] == "HASH")?;
            Some((
                index["IndexName"].as_str()?.to_owned(),
                hash["AttributeName"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

fn key_schema(value: &Value) -> Vec<KeySchemaElement> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|key| {
            KeySchemaElement::builder()
                .attribute_name(key["AttributeName"].as_str().unwrap_or_default())
                .key_type(KeyType::from(key["KeyType"].as_str().unwrap_or_default()))
                .build()
                .expect("a key schema element")
        })
        .collect()
}

async fn create_table(sdk: &SdkConfig, name: &str) -> Result<()> {
    let definition = table_definition()?;
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let mut create = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&definition["KeySchema"])));
    for attribute in definition["AttributeDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        create = create.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attribute["AttributeName"].as_str().unwrap_or_default())
                .attribute_type(ScalarAttributeType::from(
                    attribute["AttributeType"].as_str().unwrap_or_default(),
                ))
                .build()?,
        );
    }
    for index in definition["GlobalSecondaryIndexes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let projection = ProjectionType::from(
            index["Projection"]["ProjectionType"]
                .as_str()
                .unwrap_or_default(),
        );
        create = create.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index["IndexName"].as_str().unwrap_or_default())
                .set_key_schema(Some(key_schema(&index["KeySchema"])))
                .projection(Projection::builder().projection_type(projection).build())
                .build()?,
        );
    }
    if let Some(view) = definition["StreamSpecification"]["StreamViewType"].as_str() {
        create = create.stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::from(view))
                .build()?,
        );
    }
    create.send().await.context("create the sandbox table")?;
    Ok(())
}

/// Isolated emulator resources for in-process handler tests: a table built from the template's
/// definition, a bus whose every event is captured in a queue, and a due queue. Handlers run
/// against a service wired to them with a clock the test moves.
pub struct Sandbox {
    /// The service the handlers under test use.
    pub baton: Baton,
    /// Its clock.
    pub clock: Arc<ManualClock>,
    /// Where the resources are.
    pub settings: Settings,
    sqs: aws_sdk_sqs::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    capture_queue_url: String,
    /// The table's stream, and the counter function's store (the service's client).
    stream: tokio::sync::Mutex<stream::StreamReader>,
    counter: baton_aws::DynamoStore,
    /// Removed when the sandbox is dropped.
    _owned: Owned,
}

impl Sandbox {
    /// Creates a fresh set of resources.
    pub async fn new() -> Result<Self> {
        Self::with_clients(baton_aws::Clients::new).await
    }

    /// [`Sandbox::new`] with the service's SDK clients built by `clients` (to count or disturb
    /// its calls); the sandbox's own calls use plain clients.
    pub async fn with_clients(
        clients: impl FnOnce(&SdkConfig) -> baton_aws::Clients,
    ) -> Result<Self> {
        Self::publishing(baton_aws::PublishedEvents::All, clients).await
    }

    /// [`Sandbox::with_clients`] with a service that puts only the lifecycle events `published`
    /// names on the bus.
    pub async fn publishing(
        published: baton_aws::PublishedEvents,
        clients: impl FnOnce(&SdkConfig) -> baton_aws::Clients,
    ) -> Result<Self> {
        let sdk = emulator().await;
        let name = unique("sandbox");
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let events = aws_sdk_eventbridge::Client::new(&sdk);
        // Whatever was created is removed, even when a later step fails.
        let mut owned = Owned::default();
        create_table(&sdk, &name).await?;
        owned.table(&name);
        // As the stack's setup resource does: dispatch needs the global switch present.
        baton_aws::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &name)
            .install_global_switch()
            .await?;
        events.create_event_bus().name(&name).send().await?;
        owned.bus(&name);
        let due_queue_url = create_queue(&sqs, &format!("{name}-due")).await?;
        owned.queue(&due_queue_url);
        let capture_queue_url = create_queue(&sqs, &format!("{name}-events")).await?;
        owned.queue(&capture_queue_url);
        let rule = format!("{name}-all");
        subscribe(
            &sqs,
            &events,
            &name,
            &rule,
            &capture_queue_url,
            json!({"source": ["baton"]}),
        )
        .await?;
        owned.rule(&rule, &name);
        let settings = Settings {
            table: name.clone(),
            bus: name,
            due_queue_url,
            published,
        };
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let clients = clients(&sdk);
        let counter = baton_aws::DynamoStore::new(clients.dynamodb.clone(), &settings.table);
        let stream =
            tokio::sync::Mutex::new(stream::StreamReader::new(&sdk, &settings.table).await?);
        let baton = baton_aws::baton_on(clients, &settings, clock.clone());
        Ok(Self {
            stream,
            counter,
            baton,
            clock,
            settings,
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            sqs,
            capture_queue_url,
            _owned: owned,
        })
    }

    /// Lifts the concurrency limit of `tenant`'s `project` to the most there is, so none of its
    /// tasks waits for a slot however many run at once.
    pub async fn unlimited(&self, tenant: &str, project: &str) -> Result<()> {
        let operator = baton_app::Operator {
            by: "tests",
            reason: "every task of a run starts at once",
        };
        self.baton
            .set_limit(
                &baton_domain::Tenant::parse(tenant)?,
                &baton_domain::ProjectId::parse(project)?,
                baton_domain::MAX_CONCURRENCY_LIMIT,
                &operator,
            )
            .await?;
        Ok(())
    }

    /// Submits a task of `acme`'s `project` (1 s timeout, 2 attempts, 60 s apart) that depends
    /// on `depends_on`.
    pub async fn submit_task(&self, project: &str, depends_on: &[TaskId]) -> Result<Task> {
        let request: SubmitRequest = serde_json::from_value(json!({"tenant": "acme",
            "project": project, "name": "reliability", "tier": "cpu", "timeout_seconds": 1,
            "retry": {"max_attempts": 2, "backoff_seconds": 60},
            "depends_on": depends_on.iter().map(ToString::to_string).collect::<Vec<_>>()}))?;
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        Ok(self.baton.submit(&request, id).await?.task)
    }

    /// A task of `project` in its first attempt.
    pub async fn running(&self, project: &str) -> Result<Task> {
        let task = self.submit_task(project, &[]).await?;
        self.run(
            &task,
            &Command::Dispatch {
                attempt: 1,
                lease: lease(),
            },
        )
        .await?;
        self.reload(&task).await
    }

    /// Runs `command` against `task`.
    pub async fn run(&self, task: &Task, command: &Command) -> Result<Handled> {
        Ok(self.baton.execute(&task.tenant, &task.id, command).await?)
    }

    /// `task` as stored now.
    pub async fn reload(&self, task: &Task) -> Result<Task> {
        let stored = self.baton.task(&task.tenant, &task.id).await?;
        stored.ok_or_else(|| anyhow::anyhow!("task {} is gone", task.id))
    }

    /// Events published on the sandbox bus since the last call: `(detail-type, detail)`.
    pub async fn published(&self) -> Result<Vec<(String, Value)>> {
        let envelopes = drain(&self.sqs, &self.capture_queue_url).await?;
        Ok(envelopes
            .into_iter()
            .map(|envelope| {
                let detail_type = envelope["detail-type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (detail_type, envelope["detail"].clone())
            })
            .collect())
    }

    /// Timer messages on the due queue that are deliverable now (removed from the queue).
    pub async fn due_timers(&self) -> Result<Vec<String>> {
        let messages = receive(&self.sqs, &self.settings.due_queue_url, 0).await?;
        Ok(messages.into_iter().map(|(_, body)| body).collect())
    }

    /// Timer messages on the due queue still waiting out their delay.
    pub async fn delayed_timers(&self) -> Result<u64> {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.settings.due_queue_url)
            .attribute_names(
                aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            )
            .send()
            .await?;
        let delayed = attributes
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok(delayed)
    }

    /// The table's stream records written since the last call (Lambda's `Records`).
    pub async fn stream_records(&self) -> Result<Vec<Value>> {
        self.stream.lock().await.records().await
    }

    /// Runs the counter function on stream `records` delivered as one batch.
    pub async fn count_batch(&self, records: &[Value]) -> Result<baton_aws::counts::Counted> {
        let event = json!({ "Records": records });
        Ok(baton_fn_counter::handle(&self.counter, &event).await?)
    }

    /// Brings the projects' status counters up to date: the counter function on every record
    /// written since the last call, as the stack's stream mapping would deliver them.
    pub async fn count(&self) -> Result<()> {
        let records = self.stream_records().await?;
        for batch in records.chunks(COUNTER_BATCH) {
            self.count_batch(batch).await?;
        }
        Ok(())
    }

    /// Deletes one item of the sandbox table, as an operator's mistake or a bad restore would.
    pub async fn delete_item(&self, pk: &str, sk: &str) -> Result<()> {
        delete_item(&self.dynamodb, &self.settings.table, pk, sk).await
    }
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String> {
    let created = sqs.create_queue().queue_name(name).send().await?;
    created.queue_url.context("CreateQueue returned no URL")
}

/// Routes events matching `pattern` on `bus` to the queue at `queue_url`, as a worker would.
async fn subscribe(
    sqs: &aws_sdk_sqs::Client,
    events: &aws_sdk_eventbridge::Client,
    bus: &str,
    rule: &str,
    queue_url: &str,
    pattern: Value,
) -> Result<()> {
    let arn = queue_arn(sqs, queue_url).await?;
    events
        .put_rule()
        .name(rule)
        .event_bus_name(bus)
        .event_pattern(pattern.to_string())
        .send()
        .await?;
    events
        .put_targets()
        .rule(rule)
        .event_bus_name(bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("test")
                .arn(arn)
                .build()?,
        )
        .send()
        .await?;
    Ok(())
}

/// Receives (and deletes) what is on a queue now: `(message id, body)`.
async fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    wait_seconds: i32,
) -> Result<Vec<(String, String)>> {
    let mut received = Vec::new();
    loop {
        let output = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_seconds)
            .send()
            .await?;
        let messages = output.messages();
        if messages.is_empty() {
            return Ok(received);
        }
        for message in messages {
            if let Some(handle) = message.receipt_handle() {
                sqs.delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
            received.push((
                message.message_id().unwrap_or_default().to_owned(),
                message.body().unwrap_or_default().to_owned(),
            ));
        }
    }
}

async fn delete_item(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sk: &str,
) -> Result<()> {
    let key = |text: &str| aws_sdk_dynamodb::types::AttributeValue::S(text.to_owned());
    dynamodb
        .delete_item()
        .table_name(table)
        .key("pk", key(pk))
        .key("sk", key(sk))
        .send()
        .await?;
    Ok(())
}

/// Receives (and deletes) every EventBridge envelope on a queue now.
async fn drain(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<Vec<Value>> {
    receive(sqs, queue_url, 0)
        .await?
        .into_iter()
        .map(|(_, body)| Ok(serde_json::from_str(&body)?))
        .collect()
}

/// A stack deployed by `localstack/deploy.sh`, known by the outputs file it wrote; the path is in
/// `$BATON_STACK_OUTPUTS`.
pub struct Stack {
    outputs: HashMap<String, String>,
    endpoint: String,
    sqs: aws_sdk_sqs::Client,
    events: aws_sdk_eventbridge::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    /// The worker queues and rules the tests created, removed when the stack is dropped.
    owned: std::sync::Mutex<Owned>,
}

impl Stack {
    /// The stack `make test` deployed.
    pub async fn deployed() -> Result<Self> {
        let path = std::env::var("BATON_STACK_OUTPUTS").context(
            "BATON_STACK_OUTPUTS is not set: end-to-end tests run against a deployed stack; use `make test`",
        )?;
        let list: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let outputs = list
            .iter()
            .filter_map(|o| {
                Some((
                    o["OutputKey"].as_str()?.to_owned(),
                    o["OutputValue"].as_str()?.to_owned(),
                ))
            })
            .collect();
        let sdk = emulator().await;
        let endpoint = std::env::var("AWS_ENDPOINT_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned());
        Ok(Self {
            outputs,
            endpoint,
            sqs: aws_sdk_sqs::Client::new(&sdk),
            events: aws_sdk_eventbridge::Client::new(&sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            owned: std::sync::Mutex::default(),
        })
    }

    /// A stack output by key.
    pub fn output(&self, key: &str) -> &str {
        self.outputs
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no output {key}"))
    }

    /// The GraphQL endpoint through the emulator's API Gateway.
    pub fn graphql_url(&self) -> String {
        format!(
            "{}/_aws/execute-api/{}/$default/graphql",
            self.endpoint,
            self.output("HttpApiId")
        )
    }

    /// The subscription endpoint through the emulator's API Gateway (graphql-transport-ws).
    pub fn websocket_url(&self) -> String {
        format!(
            "{}/_aws/execute-api/{}/{}",
            self.endpoint.replacen("http", "ws", 1),
            self.output("WebSocketApiId"),
            self.output("WebSocketStage")
        )
    }

    /// A bearer token for `tenant`, signed as the local stack expects (`localstack/env.sh`).
    pub fn token(&self, tenant: &str) -> String {
        token(tenant)
    }

    /// A GraphQL request to the stack's API as `tenant` (an operator): the whole response.
    pub async fn graphql_response(
        &self,
        tenant: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value> {
        Ok(reqwest::Client::new()
            .post(self.graphql_url())
            .bearer_auth(self.token(tenant))
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// The `data` of a GraphQL request that must answer without errors.
    pub async fn graphql(&self, tenant: &str, query: &str, variables: Value) -> Result<Value> {
        let response = self.graphql_response(tenant, query, variables).await?;
        if let Some(errors) = response.get("errors") {
            bail!("GraphQL errors: {errors}");
        }
        Ok(response["data"].clone())
    }

    /// Puts one event on the stack's bus, as an upstream system or worker would: from the
    /// source of the tenant it names (`{tenant}.tests`).
    pub async fn put_event(&self, detail_type: &str, detail: &Value) -> Result<()> {
        self.put_from(&source_for(detail), detail_type, &detail.to_string())
            .await
    }

    /// Puts one event with a raw detail string (which may be malformed on purpose).
    pub async fn put_raw(&self, detail_type: &str, detail: &str) -> Result<()> {
        self.put_from("tests", detail_type, detail).await
    }

    /// Puts one event from `source`, whichever tenant its detail names.
    pub async fn put_from(&self, source: &str, detail_type: &str, detail: &str) -> Result<()> {
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(self.output("BusName"))
            .source(source)
            .detail_type(detail_type)
            .detail(detail)
            .build();
        let output = self.events.put_events().entries(entry).send().await?;
        if output.failed_entry_count > 0 {
            bail!("PutEvents failed: {:?}", output.entries());
        }
        Ok(())
    }

    /// An attribute of a queue of the stack, by the output key of its URL.
    pub async fn queue_attribute(
        &self,
        output: &str,
        name: aws_sdk_sqs::types::QueueAttributeName,
    ) -> Result<String> {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(self.output(output))
            .attribute_names(name.clone())
            .send()
            .await?;
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .cloned()
            .with_context(|| format!("{output} has no {name}"))
    }

    /// Every rule on the stack's bus: its event pattern and the ARNs it targets.
    pub async fn rules(&self) -> Result<Vec<(Value, Vec<String>)>> {
        let bus = self.output("BusName");
        let listed = self.events.list_rules().event_bus_name(bus).send().await?;
        let mut rules = Vec::new();
        for rule in listed.rules() {
            let pattern = serde_json::from_str(rule.event_pattern().unwrap_or("{}"))?;
            let targets = self
                .events
                .list_targets_by_rule()
                .rule(rule.name().unwrap_or_default())
                .event_bus_name(bus)
                .send()
                .await?;
            let arns = targets
                .targets()
                .iter()
                .map(|t| t.arn().to_owned())
                .collect();
            rules.push((pattern, arns));
        }
        Ok(rules)
    }

    /// Deletes one item of the stack's table, as an operator's mistake or a bad restore would.
    pub async fn delete_item(&self, pk: &str, sk: &str) -> Result<()> {
        delete_item(&self.dynamodb, self.output("TableName"), pk, sk).await
    }

    /// A queue that receives `TaskReady` events of `tier`, like a worker's: a rule on the bus.
    pub async fn worker_queue(&self, tier: &str) -> Result<WorkerQueue> {
        self.listener(json!({"detail-type": ["TaskReady"], "detail": {"tier": [tier]}}))
            .await
    }

    /// A queue that receives the events on the stack's bus that match `pattern` (a rule).
    pub async fn listener(&self, pattern: Value) -> Result<WorkerQueue> {
        let name = unique("listener");
        let url = create_queue(&self.sqs, &name).await?;
        self.owned.lock().unwrap().queue(&url);
        subscribe(
            &self.sqs,
            &self.events,
            self.output("BusName"),
            &name,
            &url,
            pattern,
        )
        .await?;
        self.owned
            .lock()
            .unwrap()
            .rule(&name, self.output("BusName"));
        Ok(WorkerQueue {
            sqs: self.sqs.clone(),
            url,
        })
    }

    /// Messages on a queue of the stack, by output key; received and deleted.
    pub async fn take_from(&self, output: &str) -> Result<Vec<String>> {
        let messages = receive(&self.sqs, self.output(output), 0).await?;
        Ok(messages.into_iter().map(|(_, body)| body).collect())
    }
}

/// A test worker's queue of `TaskReady` events, or a listener's of any events a rule matches.
pub struct WorkerQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl WorkerQueue {
    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits for the next `TaskReady` detail, up to `limit`.
    pub async fn next_ready(&self, limit: Duration) -> Result<Value> {
        eventually("a TaskReady event", limit, || async {
            let envelopes = drain(&self.sqs, &self.url).await?;
            Ok(envelopes.into_iter().next().map(|e| e["detail"].clone()))
        })
        .await
    }

    /// Every `TaskReady` detail (or matched event's detail) waiting now.
    pub async fn all_ready(&self) -> Result<Vec<Value>> {
        let envelopes = drain(&self.sqs, &self.url).await?;
        Ok(envelopes.into_iter().map(|e| e["detail"].clone()).collect())
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A graphql-transport-ws client, as a browser's GraphQL client would speak it.
pub struct LiveClient {
    socket: Socket,
}

impl LiveClient {
    /// Connects to `url` and authenticates with `token` in `connection_init`. Fails unless the
    /// server acknowledges. The subprotocol is not offered: the emulator's WebSocket API does not
    /// pass the `$connect` answer's `Sec-WebSocket-Protocol` on, and a client that offered one
    /// must then fail the handshake (the gateway's answer is checked by an in-process test).
    pub async fn connect(url: &str, token: &str) -> Result<Self> {
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .context("WebSocket handshake")?;
        let mut client = Self { socket };
        client
            .send(json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}))
            .await?;
        let ack = client.next(Duration::from_secs(10)).await?;
        if ack["type"] != "connection_ack" {
            bail!("expected connection_ack, got {ack}");
        }
        Ok(client)
    }

    /// Sends one protocol message.
    pub async fn send(&mut self, message: Value) -> Result<()> {
        use futures_util::SinkExt;
        let text = message.to_string();
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(text.into()))
            .await?;
        Ok(())
    }

    /// Starts subscription `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) -> Result<()> {
        self.send(json!({"type": "subscribe", "id": id,
            "payload": {"query": query, "variables": variables}}))
            .await
    }

    /// The next protocol message within `patience`; an error when the socket closes or none comes.
    pub async fn next(&mut self, patience: Duration) -> Result<Value> {
        use futures_util::StreamExt;
        loop {
            let frame = tokio::time::timeout(patience, self.socket.next())
                .await
                .context("no message in time")?
                .context("the socket closed")??;
            if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
                return Ok(serde_json::from_str(&text)?);
            }
        }
    }

    /// Whether no message arrives within `quiet`.
    pub async fn stays_quiet(&mut self, quiet: Duration) -> bool {
        self.next(quiet).await.is_err()
    }
}

/// A queue with its DLQ (parked after `max_receive_count` deliveries), as the template makes
/// them, for tests of parking and redrive. [`Letters::deliver`] hands messages to a handler the
/// way the event source mapping does: received from the queue, with their attributes.
pub struct Letters {
    sqs: aws_sdk_sqs::Client,
    /// The queue's URL.
    pub source_url: String,
    /// Its ARN.
    pub source_arn: String,
    /// Its DLQ's URL.
    pub dlq_url: String,
    /// Both queues, removed when the pair is dropped.
    _owned: Owned,
}

impl Letters {
    /// A fresh queue named `{prefix}-…` and its DLQ.
    pub async fn new(prefix: &str, max_receive_count: u32) -> Result<Self> {
        let sdk = emulator().await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let name = unique(prefix);
        let mut owned = Owned::default();
        let dlq_url = create_queue(&sqs, &format!("{name}-dlq")).await?;
        owned.queue(&dlq_url);
        let policy = json!({"deadLetterTargetArn": queue_arn(&sqs, &dlq_url).await?,
            "maxReceiveCount": max_receive_count});
        let created = sqs
            .create_queue()
            .queue_name(&name)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                policy.to_string(),
            )
            .send()
            .await?;
        let source_url = created.queue_url.context("CreateQueue returned no URL")?;
        owned.queue(&source_url);
        let source_arn = queue_arn(&sqs, &source_url).await?;
        Ok(Self {
            sqs,
            source_url,
            source_arn,
            dlq_url,
            _owned: owned,
        })
    }

    /// The DLQ adapter over this pair, under the queue name `queue`.
    pub fn dead_letters(&self, queue: &str) -> baton_aws::dlq::SqsDeadLetters {
        let pair = baton_aws::dlq::QueuePair {
            dlq: self.dlq_url.clone(),
            source: self.source_url.clone(),
        };
        baton_aws::dlq::SqsDeadLetters::new(
            self.sqs.clone(),
            [(queue.to_owned(), pair)].into_iter().collect(),
        )
    }

    /// Sends `bodies` to the queue.
    pub async fn send(&self, bodies: &[String]) -> Result<()> {
        for body in bodies {
            self.sqs
                .send_message()
                .queue_url(&self.source_url)
                .message_body(body)
                .send()
                .await?;
        }
        Ok(())
    }

    /// Receives up to `max` messages from the queue as an event source mapping batch (message
    /// attributes, receive count, source ARN); they stay in flight for `visibility` seconds, so
    /// a failed one comes back as the mapping would see it.
    pub async fn deliver(&self, max: usize, visibility: i32) -> Result<SqsEvent> {
        let mut records = Vec::new();
        while records.len() < max {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.source_url)
                .max_number_of_messages((max - records.len()).min(10) as i32)
                .visibility_timeout(visibility)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await?;
            let messages = output.messages();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                let attributes: HashMap<String, String> = message
                    .attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                    .collect();
                let message_attributes: serde_json::Map<String, Value> = message
                    .message_attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| {
                        let value = json!({"stringValue": v.string_value(),
                            "dataType": v.data_type(), "stringListValues": [], "binaryListValues": []});
                        (k.clone(), value)
                    })
                    .collect();
                records.push(json!({
                    "messageId": message.message_id(),
                    "receiptHandle": message.receipt_handle(),
                    "body": message.body(),
                    "attributes": attributes,
                    "messageAttributes": message_attributes,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.source_arn,
                    "awsRegion": "us-east-1",
                }));
            }
        }
        Ok(serde_json::from_value(json!({ "Records": records }))?)
    }

    /// Acknowledges what a handler settled: deletes every delivered message it did not fail.
    pub async fn acknowledge(
        &self,
        batch: &SqsEvent,
        response: &aws_lambda_events::sqs::SqsBatchResponse,
    ) -> Result<()> {
        for record in &batch.records {
            let failed = response
                .batch_item_failures
                .iter()
                .any(|f| Some(&f.item_identifier) == record.message_id.as_ref());
            if !failed && let Some(handle) = &record.receipt_handle {
                self.sqs
                    .delete_message()
                    .queue_url(&self.source_url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
        Ok(())
    }

    /// How many messages a queue holds, visible and in flight.
    pub async fn count(&self, url: &str) -> Result<u64> {
        use aws_sdk_sqs::types::QueueAttributeName as Name;
        let output = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(Name::ApproximateNumberOfMessages)
            .attribute_names(Name::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await?;
        let count = |name: Name| -> u64 {
            output
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok(count(Name::ApproximateNumberOfMessages)
            + count(Name::ApproximateNumberOfMessagesNotVisible))
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .cloned()
        })
        .context("queue has no ARN")
}

/// A loopback HTTP server for the HTTP executor's tests and `make demo`. It counts every
/// connection it accepts and every request by path, so a test can show that nothing arrived.
///
/// | path | answer |
/// |---|---|
/// | `/ok` | 200 `{"ok":true}` |
/// | `/echo` | 200 with the request's body |
/// | `/flaky/{key}` | 500 the first time for each key, 200 after |
/// | `/fail` | 500 always |
/// | `/slow` | 200 after 3 s |
/// | `/sleep/{seconds}/{key}` | 200 after that many seconds |
/// | `/redirect?to={url}` | 302 to that URL |
/// | `/big` | 200 with a 256 KiB body |
pub struct TestServer {
    /// `http://127.0.0.1:{port}`.
    pub url: String,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

/// What a [`TestServer`] has seen: connections, and requests by path.
#[derive(Clone, Default)]
struct Seen(Arc<std::sync::Mutex<(u32, HashMap<String, u32>)>>);

impl TestServer {
    /// Starts a server on a free port (`port` 0) or on `port`.
    pub async fn start(port: u16) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let seen = Seen::default();
        let counted = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.0.lock().unwrap().0 += 1;
                tokio::spawn(serve(stream, counted.clone()));
            }
        });
        Ok(Self { url, seen, task })
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> u32 {
        self.seen.0.lock().unwrap().0
    }

    /// How many requests for `path` it has received.
    pub fn calls(&self, path: &str) -> u32 {
        self.seen
            .0
            .lock()
            .unwrap()
            .1
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

/// The port of the echo server a local or test stack allows its HTTP executor to call
/// (`BATON_ECHO_PORT`, 4597 unless set; `localstack/deploy.sh` allowlists `127.0.0.1:{port}`).
pub fn echo_port() -> u16 {
    std::env::var("BATON_ECHO_PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(4597)
}

/// The echo server on [`echo_port`], one per test process, on a thread of its own so that it
/// outlives every test's runtime.
pub fn echo_server() -> &'static TestServer {
    static SERVER: std::sync::OnceLock<TestServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let (sent, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the echo server");
            runtime.block_on(async move {
                let server = TestServer::start(echo_port()).await;
                let _ = sent.send(server);
                std::future::pending::<()>().await
            });
        });
        received
            .recv()
            .expect("the echo server's thread")
            .unwrap_or_else(|e| panic!("echo server on port {}: {e}", echo_port()))
    })
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 request from `reader`: its method, path and body (by `content-length`). `None`
/// when the peer closed the connection or sent something unreadable.
pub async fn read_request<R>(reader: &mut R) -> Option<(String, String, Vec<u8>)>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut length = 0;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await.ok()? == 0 {
            return None;
        }
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((method, path, body))
}

/// Answers one request on `stream`, then closes it.
async fn serve(stream: tokio::net::TcpStream, seen: Seen) {
    use tokio::io::{AsyncWriteExt, BufReader};
    let mut reader = BufReader::new(stream);
    let Some((_, path, body)) = read_request(&mut reader).await else {
        return;
    };
    let calls = {
        let mut seen = seen.0.lock().unwrap();
        let calls = seen.1.entry(path.clone()).or_default();
        *calls += 1;
        *calls
    };
    let mut location = None;
    let (status, answer) = match path.as_str() {
        "/ok" => (200, br#"{"ok":true}"#.to_vec()),
        "/echo" => (200, body),
        "/fail" => (500, b"always failing".to_vec()),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (200, b"late".to_vec())
        }
        "/big" => (200, vec![b'x'; 256 * 1024]),
        flaky if flaky.starts_with("/flaky/") => match calls {
            1 => (500, b"try again".to_vec()),
            _ => (200, br#"{"ok":true}"#.to_vec()),
        },
        sleep if sleep.starts_with("/sleep/") => {
            let seconds = sleep[7..].split('/').next().and_then(|s| s.parse().ok());
            tokio::time::sleep(Duration::from_secs(seconds.unwrap_or(0))).await;
            (200, b"slept".to_vec())
        }
        redirect if redirect.starts_with("/redirect?to=") => {
            location = Some(redirect["/redirect?to=".len()..].to_owned());
            (302, Vec::new())
        }
        _ => (404, b"no such path".to_vec()),
    };
    let location = location.map_or_else(String::new, |to| format!("location: {to}\r\n"));
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{location}content-length: {}\r\nconnection: close\r\n\r\n",
        answer.len()
    );
    let mut stream = reader.into_inner();
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&answer).await;
}
