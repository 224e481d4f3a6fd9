use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use baton_app::{Caller, Connection, Connections, InfraError, Subscription, Watch};
use baton_domain::Tenant;
use chrono::{DateTime, Utc};

use crate::dynamo::{Item, batch_get, item_key, s, written};

/// A subscription's attribute on its connection item: `sub:{id}`, the subscription as JSON.
const SUBSCRIPTION: &str = "sub:";
/// A watcher's attribute on a watch item: `c:{connection}:{subscription}`.
const WATCHER: &str = "c:";
/// How long a watch item outlives its latest subscription (API Gateway closes a connection
/// after two hours at the most).
const WATCH_TTL: chrono::Duration = chrono::Duration::hours(3);
/// A reserved connection's attribute on its tenant's item: `c:{connection}`, its expiry.
const HELD: &str = "c:";
/// How often a reservation is tried again after meeting another on the same tenant's item.
const RESERVE_ATTEMPTS: usize = 5;

/// WebSocket connections in the task table. A connection is `pk = C#{id}`, `sk = CONN` (caller,
/// expiry, and one `sub:{id}` attribute per subscription); each watched task or project has a
/// `pk = W#{tenant}#{T|P}#{id}`, `sk = WATCH` item with one `c:{connection}:{subscription}`
/// attribute per watcher, so the notifier finds them with one BatchGetItem; each tenant with
/// connections has a `pk = CT#{tenant}`, `sk = CONNECTIONS` item with one `c:{connection}`
/// attribute (its expiry) per connection it holds, written under a version condition. All expire
/// through the table's TTL attribute `expires_at`.
#[derive(Debug, Clone)]
pub struct DynamoConnections {
    client: Client,
    table: String,
}

impl DynamoConnections {
    /// Connections kept in `table`.
    pub fn new(client: Client, table: &str) -> Self {
        Self {
            client,
            table: table.to_owned(),
        }
    }
}

fn connection_key(id: &str) -> Item {
    item_key(format!("C#{id}"), "CONN")
}

fn tenant_key(tenant: &Tenant) -> Item {
    item_key(format!("CT#{tenant}"), "CONNECTIONS")
}

fn watch_key(tenant: &Tenant, watch: &Watch) -> Item {
    let pk = match watch {
        Watch::Task(id) => format!("W#{tenant}#T#{id}"),
        Watch::Project(project) => format!("W#{tenant}#P#{project}"),
    };
    item_key(pk, "WATCH")
}

fn epoch(at: DateTime<Utc>) -> AttributeValue {
    AttributeValue::N(at.timestamp().to_string())
}

fn infra<E>(operation: &'static str) -> impl FnOnce(E) -> InfraError
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    move |error| InfraError::new(operation, error)
}

fn parse_connection(id: &str, item: &Item) -> Result<Connection, InfraError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
    let caller = match (text("tenant"), text("subject")) {
        (Some(tenant), Some(subject)) => Some(Caller {
            tenant: Tenant::parse(tenant).map_err(infra("decode connection"))?,
            subject: subject.clone(),
            admin: false,
        }),
        _ => None,
    };
    let mut subscriptions = Vec::new();
    for (name, value) in item {
        if name.starts_with(SUBSCRIPTION)
            && let Ok(json) = value.as_s()
        {
            subscriptions.push(serde_json::from_str(json).map_err(infra("decode subscription"))?);
        }
    }
    Ok(Connection {
        id: id.to_owned(),
        caller,
        subscriptions,
    })
}

impl DynamoConnections {
    async fn remove_watcher(
        &self,
        tenant: &Tenant,
        connection: &str,
        subscription: &Subscription,
    ) -> Result<(), InfraError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(watch_key(tenant, &subscription.watch)))
            .update_expression("REMOVE #watcher")
            .expression_attribute_names(
                "#watcher",
                format!("{WATCHER}{connection}:{}", subscription.id),
            )
            .send()
            .await
            .map_err(infra("DynamoDB UpdateItem"))?;
        Ok(())
    }
}

#[async_trait]
impl Connections for DynamoConnections {
    async fn open(
        &self,
        id: &str,
        caller: Option<&Caller>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), InfraError> {
        let mut item = connection_key(id);
        item.insert("expires_at".to_owned(), epoch(expires_at));
        if let Some(caller) = caller {
            item.insert("tenant".to_owned(), s(caller.tenant.to_string()));
            item.insert("subject".to_owned(), s(caller.subject.clone()));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(infra("DynamoDB PutItem"))?;
        Ok(())
    }

    async fn authenticate(&self, id: &str, caller: &Caller) -> Result<bool, InfraError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .update_expression("SET tenant = :tenant, subject = :subject")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(tenant)")
            .expression_attribute_values(":tenant", s(caller.tenant.to_string()))
            .expression_attribute_values(":subject", s(caller.subject.clone()))
            .send()
            .await;
        written("DynamoDB UpdateItem", result)
    }

    async fn reserve(
        &self,
        tenant: &Tenant,
        id: &str,
        limit: usize,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, InfraError> {
        let own = format!("{HELD}{id}");
        for _ in 0..RESERVE_ATTEMPTS {
            let item = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(tenant_key(tenant)))
                .consistent_read(true)
                .send()
                .await
                .map_err(infra("DynamoDB GetItem"))?
                .item
                .unwrap_or_default();
            let version = item.get("version").and_then(|v| v.as_n().ok()).cloned();
            let (mut live, mut expired) = (0, Vec::new());
            for (name, at) in &item {
                if !name.starts_with(HELD) || *name == own {
                    continue;
                }
                let at = at.as_n().ok().and_then(|at| at.parse::<i64>().ok());
                match at {
                    Some(at) if at > now.timestamp() => live += 1,
                    _ => expired.push(name),
                }
            }
            if live >= limit {
                return Ok(false);
            }
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(tenant_key(tenant)))
                .expression_attribute_names("#own", &own)
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":at", epoch(expires_at))
                .expression_attribute_values(":one", AttributeValue::N("1".to_owned()));
            let mut expression = "SET #own = :at, expires_at = :at ADD #version :one".to_owned();
            for (i, name) in expired.iter().enumerate() {
                let alias = format!("#gone{i}");
                expression.push_str(if i == 0 { " REMOVE " } else { ", " });
                expression.push_str(&alias);
                update = update.expression_attribute_names(alias, name.as_str());
            }
            update = match version {
                Some(version) => update
                    .condition_expression("#version = :read")
                    .expression_attribute_values(":read", AttributeValue::N(version)),
                None => update.condition_expression("attribute_not_exists(#version)"),
            };
            let result = update.update_expression(expression).send().await;
            if written("DynamoDB UpdateItem", result)? {
                return Ok(true);
            }
        }
        Err(InfraError::new(
            "reserve a connection",
            format!("tenant {tenant}'s connections kept changing"),
        ))
    }

    async fn connection(&self, id: &str) -> Result<Option<Connection>, InfraError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(infra("DynamoDB GetItem"))?;
        output
            .item
            .map(|item| parse_connection(id, &item))
            .transpose()
    }

    async fn subscribe(
        &self,
        connection: &str,
        tenant: &Tenant,
        subscription: &Subscription,
    ) -> Result<bool, InfraError> {
        let json = serde_json::to_string(subscription).map_err(infra("encode subscription"))?;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(connection)))
            .update_expression("SET #sub = :sub")
            .condition_expression("tenant = :tenant AND attribute_not_exists(#sub)")
            .expression_attribute_names("#sub", format!("{SUBSCRIPTION}{}", subscription.id))
            .expression_attribute_values(":sub", s(json))
            .expression_attribute_values(":tenant", s(tenant.to_string()))
            .send()
            .await;
        if !written("DynamoDB UpdateItem", result)? {
            return Ok(false);
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(watch_key(tenant, &subscription.watch)))
            .update_expression("SET #watcher = :one, expires_at = :expires")
            .expression_attribute_names(
                "#watcher",
                format!("{WATCHER}{connection}:{}", subscription.id),
            )
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .expression_attribute_values(":expires", epoch(Utc::now() + WATCH_TTL))
            .send()
            .await
            .map_err(infra("DynamoDB UpdateItem"))?;
        Ok(true)
    }

    async fn unsubscribe(&self, connection: &str, id: &str) -> Result<(), InfraError> {
        let Some(found) = self.connection(connection).await? else {
            return Ok(());
        };
        let (Some(caller), Some(subscription)) = (
            found.caller,
            found.subscriptions.into_iter().find(|s| s.id == id),
        ) else {
            return Ok(());
        };
        self.remove_watcher(&caller.tenant, connection, &subscription)
            .await?;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(connection)))
            .update_expression("REMOVE #sub")
            .expression_attribute_names("#sub", format!("{SUBSCRIPTION}{id}"))
            .send()
            .await
            .map_err(infra("DynamoDB UpdateItem"))?;
        Ok(())
    }

    async fn close(&self, connection: &str) -> Result<(), InfraError> {
        let Some(found) = self.connection(connection).await? else {
            return Ok(());
        };
        if let Some(caller) = &found.caller {
            for subscription in &found.subscriptions {
                self.remove_watcher(&caller.tenant, connection, subscription)
                    .await?;
            }
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(tenant_key(&caller.tenant)))
                .update_expression("REMOVE #held")
                // Not on a tenant whose item expired: an update would create it again.
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#held", format!("{HELD}{connection}"))
                .send()
                .await;
            written("DynamoDB UpdateItem", result)?;
        }
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(connection_key(connection)))
            .send()
            .await
            .map_err(infra("DynamoDB DeleteItem"))?;
        Ok(())
    }

    async fn watchers(
        &self,
        tenant: &Tenant,
        watches: &[Watch],
    ) -> Result<Vec<String>, InfraError> {
        let keys: Vec<Item> = watches.iter().map(|w| watch_key(tenant, w)).collect();
        let items = batch_get(&self.client, &self.table, keys, false).await?;
        let mut found: Vec<String> = Vec::new();
        for item in items {
            for name in item.keys() {
                if let Some((connection, _)) = name
                    .strip_prefix(WATCHER)
                    .and_then(|rest| rest.split_once(':'))
                    && !found.iter().any(|c| c == connection)
                {
                    found.push(connection.to_owned());
                }
            }
        }
        Ok(found)
    }
}
