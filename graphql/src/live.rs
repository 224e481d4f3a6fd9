//! Subscriptions over API Gateway WebSocket APIs, speaking graphql-transport-ws: the gateway
//! function hands [`Live`] each `$connect`, message and `$disconnect`; the notifier hands it each
//! task that changed. Connections and subscriptions live in the [`Connections`] store, messages
//! go out through [`Push`] (the `@connections` API), so any function instance can serve any
//! connection.

use std::sync::Arc;

use async_graphql::futures_util::StreamExt;
use async_graphql::{Request, Response, ServerError, Variables};
use baton_app::{Baton, Caller, Connections, Delivery, InfraError, Push, Subscription, Watch};
use baton_domain::{ProjectId, TaskId, Tenant};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::auth::{AuthError, Verifier, bearer};
use crate::{BatonSchema, Registration, Update};

/// The subprotocol spoken.
pub const PROTOCOL: &str = "graphql-transport-ws";
/// The largest message a client may send, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// The most a connection's subscriptions may take as stored (they live in its item), in bytes.
pub const MAX_STORED_BYTES: usize = 64 * 1024;
/// Longest subscription id accepted.
const MAX_ID: usize = 128;
/// How long a connection record is kept without a `$disconnect` (API Gateway closes any
/// connection after two hours).
const CONNECTION_TTL: Duration = Duration::hours(2);

/// What connections and their subscriptions may hold: template parameters on a deployed stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveLimits {
    /// Subscriptions one connection may hold (`MaxSubscriptionsPerConnection`).
    pub subscriptions: usize,
    /// Connections one tenant may hold open at once (`MaxConnectionsPerTenant`).
    pub connections_per_tenant: usize,
}

impl Default for LiveLimits {
    fn default() -> Self {
        Self {
            subscriptions: 20,
            connections_per_tenant: 100,
        }
    }
}

impl LiveLimits {
    /// From `MAX_SUBSCRIPTIONS_PER_CONNECTION` and `MAX_CONNECTIONS_PER_TENANT`, each defaulting
    /// when unset.
    pub fn from_env() -> Result<Self, String> {
        let defaults = Self::default();
        let read = |name: &str, default: usize| match std::env::var(name) {
            Ok(value) => value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} must be a positive number, is `{value}`")),
            Err(_) => Ok(default),
        };
        Ok(Self {
            subscriptions: read("MAX_SUBSCRIPTIONS_PER_CONNECTION", defaults.subscriptions)?,
            connections_per_tenant: read(
                "MAX_CONNECTIONS_PER_TENANT",
                defaults.connections_per_tenant,
            )?,
        })
    }
}

/// How a `$connect` is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connect {
    /// Accept; answer `Sec-WebSocket-Protocol` with this when the client offered it.
    Accept(Option<&'static str>),
    /// Refuse the handshake (401).
    Refuse(AuthError),
    /// Refuse the handshake (429): the tenant holds as many connections as it may.
    Busy,
}

/// What a `$connect` carries that matters here.
#[derive(Debug, Default, Clone)]
pub struct Handshake<'a> {
    /// The `Sec-WebSocket-Protocol` header.
    pub protocols: Option<&'a str>,
    /// A token from the `Authorization` header or the `token` query parameter.
    pub token: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Incoming {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping,
    Pong,
    Subscribe {
        id: String,
        payload: SubscribePayload,
    },
    Complete {
        id: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribePayload {
    query: String,
    #[serde(default)]
    variables: Option<Value>,
    #[serde(default)]
    operation_name: Option<String>,
}

/// The live side of the gateway.
#[derive(Clone)]
pub struct Live {
    baton: Baton,
    schema: BatonSchema,
    connections: Arc<dyn Connections>,
    push: Arc<dyn Push>,
    verifier: Option<Verifier>,
    limits: LiveLimits,
}

impl Live {
    /// Serves `schema`'s subscriptions (over `baton`) through `connections` and `push`; tokens
    /// are checked by `verifier` where no authorizer did.
    pub fn new(
        baton: Baton,
        schema: BatonSchema,
        connections: Arc<dyn Connections>,
        push: Arc<dyn Push>,
        verifier: Option<Verifier>,
    ) -> Self {
        Self {
            baton,
            schema,
            connections,
            push,
            verifier,
            limits: LiveLimits::default(),
        }
    }

    /// The same, holding connections and subscriptions to `limits`.
    pub fn with_limits(self, limits: LiveLimits) -> Self {
        Self { limits, ..self }
    }

    fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        match &self.verifier {
            Some(verifier) => verifier.verify(token),
            None => Err(AuthError::Invalid(
                "no key is configured to verify tokens".into(),
            )),
        }
    }

    /// A new connection. A token on the handshake must be valid, and its tenant below its
    /// connection limit; without one, the client authenticates in `connection_init`.
    pub async fn connect(
        &self,
        connection: &str,
        handshake: Handshake<'_>,
        now: DateTime<Utc>,
    ) -> Result<Connect, InfraError> {
        let caller = match handshake.token.map(|token| self.verify(token)).transpose() {
            Ok(caller) => caller,
            Err(refused) => return Ok(Connect::Refuse(refused)),
        };
        if let Some(caller) = &caller
            && !self.reserve(&caller.tenant, connection, now).await?
        {
            return Ok(Connect::Busy);
        }
        self.connections
            .open(connection, caller.as_ref(), now + CONNECTION_TTL)
            .await?;
        let offered = handshake
            .protocols
            .is_some_and(|p| p.split(',').any(|p| p.trim() == PROTOCOL));
        Ok(Connect::Accept(offered.then_some(PROTOCOL)))
    }

    /// The connection closed.
    pub async fn disconnect(&self, connection: &str) -> Result<(), InfraError> {
        self.connections.close(connection).await
    }

    /// Counts `connection` among `tenant`'s, unless the tenant is at its limit.
    async fn reserve(
        &self,
        tenant: &Tenant,
        connection: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, InfraError> {
        let limit = self.limits.connections_per_tenant;
        let reserved = self
            .connections
            .reserve(tenant, connection, limit, now, now + CONNECTION_TTL)
            .await?;
        if !reserved {
            warn!(connection, %tenant, limit, "refused: the tenant holds its limit of connections");
        }
        Ok(reserved)
    }

    async fn send(&self, connection: &str, message: &Value) -> Result<Delivery, InfraError> {
        self.push.send(connection, &message.to_string()).await
    }

    /// Ends a connection that broke the protocol (graphql-transport-ws would close it with
    /// `code`; API Gateway lets the server only hang up).
    async fn hang_up(&self, connection: &str, code: u16, why: &str) -> Result<(), InfraError> {
        warn!(connection, code, why, "closing the connection");
        self.push.disconnect(connection).await?;
        self.connections.close(connection).await
    }

    /// One message from a client.
    pub async fn message(&self, connection: &str, body: &str) -> Result<(), InfraError> {
        if body.len() > MAX_MESSAGE_BYTES {
            return self.too_large(connection, body).await;
        }
        let message = match serde_json::from_str::<Incoming>(body) {
            Ok(message) => message,
            Err(e) => return self.hang_up(connection, 4400, &e.to_string()).await,
        };
        let Some(found) = self.connections.connection(connection).await? else {
            return self.hang_up(connection, 4400, "unknown connection").await;
        };
        match message {
            Incoming::ConnectionInit { payload } => {
                // Authenticated on the handshake, the connection was counted then.
                let counted = found.caller.is_some();
                let caller = match found.caller {
                    Some(caller) => Ok(caller),
                    None => {
                        let token = payload.as_ref().and_then(|p| {
                            ["Authorization", "authorization", "token"]
                                .iter()
                                .find_map(|k| p.get(*k)?.as_str())
                        });
                        match token.and_then(bearer) {
                            Some(token) => self.verify(token),
                            None => Err(AuthError::Missing),
                        }
                    }
                };
                match caller {
                    Ok(caller) => {
                        let reserved =
                            counted || self.reserve(&caller.tenant, connection, Utc::now()).await?;
                        if !reserved {
                            return self
                                .hang_up(connection, 4429, "too many connections for the tenant")
                                .await;
                        }
                        self.connections.authenticate(connection, &caller).await?;
                        self.send(connection, &json!({"type": "connection_ack"}))
                            .await?;
                        Ok(())
                    }
                    Err(refused) => {
                        self.hang_up(connection, 4403, &format!("{refused:?}"))
                            .await
                    }
                }
            }
            Incoming::Ping => {
                self.send(connection, &json!({"type": "pong"})).await?;
                Ok(())
            }
            Incoming::Pong => Ok(()),
            Incoming::Complete { id } => self.connections.unsubscribe(connection, &id).await,
            Incoming::Subscribe { id, payload } => {
                let Some(caller) = found.caller else {
                    return self
                        .hang_up(connection, 4401, "subscribe before connection_ack")
                        .await;
                };
                if id.is_empty() || id.len() > MAX_ID {
                    return self.hang_up(connection, 4400, "bad subscription id").await;
                }
                if found.subscriptions.iter().any(|s| s.id == id) {
                    return self
                        .hang_up(connection, 4409, "subscriber already exists")
                        .await;
                }
                let limit = self.limits.subscriptions;
                if found.subscriptions.len() >= limit {
                    let refused = crate::limits::exceeded("subscriptions", limit);
                    return self.refuse(connection, &id, vec![refused]).await;
                }
                self.subscribe(connection, caller, id, payload, &found.subscriptions)
                    .await
            }
        }
    }

    /// A message over [`MAX_MESSAGE_BYTES`]: a subscription is refused by its id, anything
    /// else ends the connection.
    async fn too_large(&self, connection: &str, body: &str) -> Result<(), InfraError> {
        #[derive(Deserialize)]
        struct Head {
            #[serde(rename = "type")]
            kind: String,
            id: String,
        }
        match serde_json::from_str::<Head>(body) {
            Ok(head)
                if head.kind == "subscribe" && !head.id.is_empty() && head.id.len() <= MAX_ID =>
            {
                let refused = crate::limits::exceeded("messageBytes", MAX_MESSAGE_BYTES);
                self.refuse(connection, &head.id, vec![refused]).await
            }
            _ => self.hang_up(connection, 4400, "message too large").await,
        }
    }

    async fn refuse(
        &self,
        connection: &str,
        id: &str,
        errors: Vec<ServerError>,
    ) -> Result<(), InfraError> {
        let message = json!({"type": "error", "id": id, "payload": errors});
        self.send(connection, &message).await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        connection: &str,
        caller: Caller,
        id: String,
        payload: SubscribePayload,
        held: &[Subscription],
    ) -> Result<(), InfraError> {
        let variables = payload.variables.unwrap_or(Value::Null);
        let operation = request(
            &payload.query,
            &variables,
            payload.operation_name.as_deref(),
        );
        let registration = Registration::default();
        let first = self
            .run(operation, caller.clone(), registration.clone())
            .await;
        if let Some(failed) = first.iter().find(|r| r.is_err()) {
            return self.refuse(connection, &id, failed.errors.clone()).await;
        }
        let Some(watch) = registration.watched() else {
            // A query or mutation sent over the socket: answer it once.
            for response in &first {
                self.send(connection, &next(&id, response)).await?;
            }
            self.send(connection, &json!({"type": "complete", "id": id}))
                .await?;
            return Ok(());
        };
        let subscription = Subscription {
            id: id.clone(),
            watch: watch.clone(),
            query: payload.query,
            variables,
            operation_name: payload.operation_name,
        };
        let bytes: usize = std::iter::once(&subscription)
            .chain(held)
            .map(|s| serde_json::to_string(s).map_or(0, |json| json.len()))
            .sum();
        if bytes > MAX_STORED_BYTES {
            let refused = crate::limits::exceeded("subscriptionBytes", MAX_STORED_BYTES);
            return self.refuse(connection, &id, vec![refused]).await;
        }
        if !self
            .connections
            .subscribe(connection, &caller.tenant, &subscription)
            .await?
        {
            return self
                .hang_up(connection, 4409, "subscriber already exists")
                .await;
        }
        info!(connection, subscription = %id, ?watch, "subscribed");
        for response in &first {
            self.send(connection, &next(&id, response)).await?;
        }
        // A transition between the first run and the registration reached no one: run once
        // more now that the notifier knows the subscription, and send what changed.
        let again = self
            .run(stored(&subscription), caller, Registration::default())
            .await;
        for response in again.iter().filter(|r| !r.is_err()) {
            if !first.iter().any(|f| f.data == response.data) {
                self.send(connection, &next(&id, response)).await?;
            }
        }
        Ok(())
    }

    /// Whether any subscription watches any of `moved` (tenant, task, project): one read per
    /// tenant for a whole batch of moves, so a batch nobody watches costs one request, not one
    /// per move. A subscription registered after this read runs once more on its own, so a move
    /// committed before it is not missed.
    pub async fn watched(&self, moved: &[(Tenant, TaskId, ProjectId)]) -> Result<bool, InfraError> {
        let mut tenants: Vec<&Tenant> = moved.iter().map(|(tenant, _, _)| tenant).collect();
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            let mut watches: Vec<Watch> = Vec::new();
            for (_, id, project) in moved.iter().filter(|(t, _, _)| t == tenant) {
                for watch in [Watch::Task(*id), Watch::Project(project.clone())] {
                    if !watches.contains(&watch) {
                        watches.push(watch);
                    }
                }
            }
            if !self
                .connections
                .watchers(tenant, &watches)
                .await?
                .is_empty()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A task moved: pushes its new state to every subscription watching it or its project.
    /// Reads the task only when someone watches. Answers how many messages were sent.
    pub async fn notify(
        &self,
        tenant: &Tenant,
        id: &TaskId,
        project: &ProjectId,
    ) -> Result<usize, InfraError> {
        let watches = [Watch::Task(*id), Watch::Project(project.clone())];
        let watchers = self.connections.watchers(tenant, &watches).await?;
        if watchers.is_empty() {
            return Ok(0);
        }
        let Some(task) = self.baton.task(tenant, id).await? else {
            return Ok(0);
        };
        let mut sent = 0;
        for connection in watchers {
            let Some(found) = self.connections.connection(&connection).await? else {
                continue;
            };
            let Some(caller) = found.caller else {
                continue;
            };
            let watching = found
                .subscriptions
                .iter()
                .filter(|s| watches.contains(&s.watch));
            for subscription in watching {
                let update = Update(task.clone());
                let responses = self.run(stored(subscription), caller.clone(), update).await;
                for response in responses {
                    match self
                        .send(&connection, &next(&subscription.id, &response))
                        .await?
                    {
                        Delivery::Sent => sent += 1,
                        Delivery::Gone => {
                            info!(connection, "connection gone; forgetting it");
                            self.connections.close(&connection).await?;
                            break;
                        }
                    }
                }
            }
        }
        Ok(sent)
    }

    /// Runs an operation for `caller` with `data` (an [`Update`] or a [`Registration`]).
    async fn run(
        &self,
        operation: Request,
        caller: Caller,
        data: impl std::any::Any + Send + Sync,
    ) -> Vec<Response> {
        let operation = operation.data(caller).data(data);
        self.schema.execute_stream(operation).collect().await
    }
}

fn request(query: &str, variables: &Value, operation_name: Option<&str>) -> Request {
    let request = Request::new(query).variables(Variables::from_json(variables.clone()));
    match operation_name {
        Some(name) => request.operation_name(name),
        None => request,
    }
}

fn stored(subscription: &Subscription) -> Request {
    request(
        &subscription.query,
        &subscription.variables,
        subscription.operation_name.as_deref(),
    )
}

fn next(id: &str, response: &Response) -> Value {
    json!({"type": "next", "id": id, "payload": response})
}
