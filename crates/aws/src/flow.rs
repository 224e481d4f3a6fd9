//! Flow control in the task table, the store's [`ProjectControls`], [`ReadySet`] and
//! [`KillSwitches`]: project limits, pauses and drains, the ready set (a sparse index of parked
//! tasks in admission order), and kill switches with their history.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Put, Select, TransactWriteItem, Update};
use baton_app::{
    Drain, InfraError, KillSwitches, ProjectControls, ProjectStatus, ReadySet, Reservation, Wake,
};
use baton_domain::{
    Change, Controls, DEFAULT_CONCURRENCY_LIMIT, KillSwitch, Parked, ProjectId, Scope, Status,
    Task, Tenant, Timer, lanes_for,
};
use chrono::{DateTime, Utc};

use crate::dynamo::{
    DynamoStore, Item, Part, RESERVED, WAKE_SHARDS, Write, batch_get, counter, infra, key,
    lane_key, n, number, parse_pk, project_key, project_path, s, slot_key, sortable, switch_key,
    switch_pk, wake_attributes, written,
};

/// The sparse index of parked tasks: partition = project, sort = admission order.
const READY_INDEX: &str = "by-ready";
/// A priority turned into a rank that sorts higher priorities first (priorities are -1000..=1000).
const PRIORITY_OFFSET: i64 = 1000;

fn ready_key(tenant: &Tenant, project: &ProjectId) -> AttributeValue {
    s(project_path(tenant, project))
}

/// The ready set's order: priority (higher first), then due time; the attempt rides along so an
/// admission can arm the task's timer from the index alone.
fn ready_rank(task: &Task) -> String {
    format!(
        "{:04}#{}#{}",
        PRIORITY_OFFSET - i64::from(task.priority),
        sortable(task.due_at),
        task.attempt
    )
}

/// The timer of a ready set entry (the table's `pk` and the index's `ready_rank`).
fn ready_timer(item: &Item) -> Option<Timer> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok());
    let (tenant, task_id) = parse_pk(text("pk")?)?;
    let mut rank = text("ready_rank")?.split('#');
    let _priority = rank.next()?;
    let due_at = DateTime::parse_from_rfc3339(rank.next()?).ok()?.to_utc();
    let attempt = rank.next()?.parse().ok()?;
    Some(Timer {
        tenant,
        task_id,
        attempt,
        due_at,
    })
}

/// The drain's place in the wake index: its own kind, sharded by project.
fn drain_key(shard: u8) -> AttributeValue {
    s(format!("DRAIN#{shard}"))
}

fn drain_shard(tenant: &Tenant, project: &ProjectId) -> u8 {
    let sum: u32 = project_path(tenant, project).bytes().map(u32::from).sum();
    (sum % u32::from(WAKE_SHARDS)) as u8
}

fn parse_project_pk(pk: &str) -> Option<(Tenant, ProjectId)> {
    let mut parts = pk.strip_prefix("P#")?.splitn(2, '#');
    let tenant = Tenant::parse(parts.next()?).ok()?;
    let project = ProjectId::parse(parts.next()?).ok()?;
    Some((tenant, project))
}

fn time(item: &Item, name: &str) -> Option<DateTime<Utc>> {
    let text = item.get(name)?.as_s().ok()?;
    Some(DateTime::parse_from_rfc3339(text).ok()?.to_utc())
}

/// A project's controls from its item (a missing item: a project without tasks, the default
/// limit over one lane).
fn controls_of(item: &Item) -> Result<Controls, InfraError> {
    let count = |name: &str| number(item, name).map_or(0, |n| u64::try_from(n).unwrap_or(0));
    let limit = number(item, "slot_limit")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(DEFAULT_CONCURRENCY_LIMIT);
    let spread = u16::try_from(count("lanes")).unwrap_or(u16::MAX);
    Ok(Controls {
        limit,
        lanes: spread.max(lanes_for(limit)),
        legacy: count(&counter(Status::Running)),
        paused: item.contains_key("paused"),
        waiting: item.contains_key("last_park"),
    })
}

fn drain_of(item: &Item) -> Option<Drain> {
    Some(Drain {
        at: time(item, "wake_at")?,
        last_park: time(item, "last_park")?,
    })
}

fn decoded<T: serde::de::DeserializeOwned>(value: AttributeValue) -> Result<T, InfraError> {
    serde_dynamo::from_attribute_value(value)
        .map_err(|e| InfraError::new("decode control from DynamoDB", e))
}

fn encoded(value: &impl serde::Serialize) -> Result<AttributeValue, InfraError> {
    serde_dynamo::to_attribute_value(value)
        .map_err(|e| InfraError::new("encode control for DynamoDB", e))
}

fn switch_of(mut item: Item) -> Result<KillSwitch, InfraError> {
    let engaged = item.get("engaged").and_then(|v| v.as_bool().ok()).copied();
    let last = item.remove("last").map(decoded::<Change>).transpose()?;
    match (engaged, last) {
        (Some(engaged), Some(last)) => Ok(KillSwitch { engaged, last }),
        _ => Err(InfraError::new(
            "decode kill switch",
            "a switch item without `engaged` or `last`",
        )),
    }
}

impl DynamoStore {
    /// Puts the global kill switch, disengaged, unless it exists: what a new stack starts with.
    /// `true`: it was put now.
    pub async fn install_global_switch(&self) -> Result<bool, InfraError> {
        let mut item = switch_key(&Scope::Global, "SWITCH");
        item.insert("engaged".to_owned(), AttributeValue::Bool(false));
        let installed = Change {
            by: "baton".to_owned(),
            reason: "stack created".to_owned(),
            at: Utc::now(),
        };
        item.insert("last".to_owned(), encoded(&installed)?);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        written("DynamoDB PutItem", put)
    }
}

#[async_trait]
impl ProjectControls for DynamoStore {
    async fn project_status(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<ProjectStatus, InfraError> {
        let scope = Scope::Project {
            tenant: tenant.clone(),
            project: project.clone(),
        };
        // Every project has lane 0: it is read with the project, the others after, if any.
        let keys = vec![
            project_key(tenant, project),
            switch_key(&Scope::Global, "SWITCH"),
            switch_key(&scope, "SWITCH"),
            lane_key(tenant, project, 0),
        ];
        let mut status = ProjectStatus::default();
        let mut lanes = 1;
        let mut lane_items = Vec::new();
        for mut item in batch_get(&self.client, &self.table, keys, true).await? {
            let pk = item.get("pk").and_then(|v| v.as_s().ok()).cloned();
            match pk.as_deref() {
                Some("KILL#global") => status.global_switch = Some(switch_of(item)?),
                Some(pk) if pk.starts_with("KILL#") => {
                    status.project_switch = Some(switch_of(item)?)
                }
                Some(pk) if pk.starts_with("L#") => lane_items.push(item),
                _ => {
                    let count = |name: &str| {
                        number(&item, name).map_or(0, |n| u64::try_from(n).unwrap_or(0))
                    };
                    status.counts = ProjectStatus::counted(|state| count(&counter(state)));
                    // The project's own count of slots, held before lanes.
                    status.legacy = count(&counter(Status::Running));
                    status.reserved = count(RESERVED);
                    let controls = controls_of(&item)?;
                    (status.limit, lanes) = (controls.limit, controls.lanes);
                    status.drain = drain_of(&item);
                    status.paused = item.remove("paused").map(decoded).transpose()?;
                }
            }
        }
        let others = (1..lanes).map(|lane| lane_key(tenant, project, lane));
        lane_items.extend(batch_get(&self.client, &self.table, others.collect(), true).await?);
        let mut taken = vec![0; usize::from(lanes)];
        for item in lane_items {
            let lane = item
                .get("pk")
                .and_then(|v| v.as_s().ok())
                .and_then(|pk| pk.rsplit('#').next()?.parse::<usize>().ok());
            let count =
                |name: &str| number(&item, name).map_or(0, |n| u64::try_from(n).unwrap_or(0));
            if let Some(slot) = lane.and_then(|lane| taken.get_mut(lane)) {
                *slot = count(&counter(Status::Running));
                status.reserved += count(RESERVED);
            }
        }
        // `n_RUNNING` counts the slots held for admitted tasks too.
        let running = status.legacy + taken.iter().sum::<u64>();
        status.lanes = taken;
        let counts = ProjectStatus::counted(|state| match state {
            Status::Running => running.saturating_sub(status.reserved),
            _ => status.count(state),
        });
        status.counts = counts;
        Ok(status)
    }

    async fn controls(&self, tenant: &Tenant, project: &ProjectId) -> Result<Controls, InfraError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(project_key(tenant, project)))
            .projection_expression("slot_limit, lanes, #running, paused, last_park")
            .expression_attribute_names("#running", counter(Status::Running))
            .consistent_read(true)
            .send()
            .await
            .map_err(infra("DynamoDB GetItem"))?;
        controls_of(&output.item.unwrap_or_default())
    }

    async fn set_limit(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        limit: u32,
    ) -> Result<(), InfraError> {
        // The lanes only ever grow: a lane a higher limit used keeps the slots of the tasks it
        // holds until they give them back, and a status reads every lane there has been.
        let spread = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(project_key(tenant, project)))
            .update_expression("SET slot_limit = :limit, lanes = :lanes")
            .condition_expression("attribute_not_exists(lanes) OR lanes < :lanes")
            .expression_attribute_values(":limit", n(limit))
            .expression_attribute_values(":lanes", n(lanes_for(limit)))
            .send()
            .await;
        if !written("DynamoDB UpdateItem", spread)? {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(project_key(tenant, project)))
                .update_expression("SET slot_limit = :limit")
                .expression_attribute_values(":limit", n(limit))
                .send()
                .await
                .map_err(infra("DynamoDB UpdateItem"))?;
        }
        Ok(())
    }

    async fn set_paused(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        paused: Option<&Change>,
    ) -> Result<(), InfraError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(project_key(tenant, project)));
        let update = match paused {
            Some(change) => update
                .update_expression("SET paused = :paused")
                .expression_attribute_values(":paused", encoded(change)?),
            None => update.update_expression("REMOVE paused"),
        };
        update.send().await.map_err(infra("DynamoDB UpdateItem"))?;
        Ok(())
    }
}

#[async_trait]
impl ReadySet for DynamoStore {
    async fn park(&self, task: &Task, parked: Parked) -> Result<bool, InfraError> {
        let shard = drain_shard(&task.tenant, &task.project);
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(project_key(&task.tenant, &task.project)))
            .update_expression(
                "SET wake_key = :key, wake_at = if_not_exists(wake_at, :at), last_park = :now",
            )
            .expression_attribute_values(":key", drain_key(shard))
            .expression_attribute_values(
                ":at",
                s(sortable(parked.since + baton_app::DRAIN_INTERVAL)),
            )
            .expression_attribute_values(":now", s(sortable(parked.since)))
            .send()
            .await
            .map_err(infra("DynamoDB UpdateItem"))?;
        let mut values = HashMap::from([
            (":version".to_owned(), n(task.version)),
            (":ready".to_owned(), ready_key(&task.tenant, &task.project)),
            (":rank".to_owned(), s(ready_rank(task))),
            (":parked".to_owned(), encoded(&parked)?),
        ]);
        let set = "SET ready_key = :ready, ready_rank = :rank, parked = :parked";
        if !task.reserved {
            let update = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(&task.tenant, &task.id)))
                .update_expression(format!("{set} REMOVE wake_key, wake_at"))
                .condition_expression("#version = :version AND attribute_not_exists(reserved)")
                .expression_attribute_names("#version", "version")
                .set_expression_attribute_values(Some(values))
                .send()
                .await;
            return written("DynamoDB UpdateItem", update);
        }
        // A task refused at the dispatch an admission held a slot for gives the slot back.
        values.insert(":true".to_owned(), AttributeValue::Bool(true));
        let park = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&task.tenant, &task.id)))
            .update_expression(format!("{set} REMOVE wake_key, wake_at, reserved"))
            .condition_expression("#version = :version AND reserved = :true")
            .expression_attribute_names("#version", "version")
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|e| InfraError::new("build park update", e))?;
        let give_back = Update::builder()
            .table_name(&self.table)
            .set_key(Some(slot_key(task)))
            .update_expression("ADD #running :minus, #reserved :minus")
            .expression_attribute_names("#running", counter(Status::Running))
            .expression_attribute_names("#reserved", RESERVED)
            .expression_attribute_values(":minus", n(-1))
            .build()
            .map_err(|e| InfraError::new("build slot release", e))?;
        let writes = vec![
            (Part::Task, Write::Update(park)),
            (Part::Slot, Write::Update(give_back)),
        ];
        Ok(self.transact(writes).await?.is_ok())
    }

    async fn reserve(
        &self,
        project: &ProjectId,
        timer: &Timer,
        lane: u16,
        slots: &Controls,
        wake: Wake,
    ) -> Result<Reservation, InfraError> {
        let [(_, wake_key), (_, wake_at)] = wake_attributes(&timer.task_id, wake);
        let take = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&timer.tenant, &timer.task_id)))
            .update_expression(
                "REMOVE ready_key, ready_rank, parked \
                 SET wake_key = :key, wake_at = :at, reserved = :true, lane = :lane",
            )
            .condition_expression(
                "attribute_exists(ready_key) AND attempt = :attempt \
                 AND attribute_not_exists(reserved)",
            )
            .expression_attribute_values(":attempt", n(timer.attempt))
            .expression_attribute_values(":key", wake_key)
            .expression_attribute_values(":at", wake_at)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":lane", n(lane))
            .build()
            .map_err(|e| InfraError::new("build reservation", e))?;
        let hold = Update::builder()
            .table_name(&self.table)
            .set_key(Some(lane_key(&timer.tenant, project, lane)))
            .update_expression("ADD #running :one, #reserved :one")
            .condition_expression("attribute_not_exists(#running) OR #running < :share")
            .expression_attribute_names("#running", counter(Status::Running))
            .expression_attribute_names("#reserved", RESERVED)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":share", n(slots.share(lane)))
            .build()
            .map_err(|e| InfraError::new("build slot hold", e))?;
        let writes = vec![
            (Part::Task, Write::Update(take)),
            (Part::Slot, Write::Update(hold)),
        ];
        Ok(match self.transact(writes).await? {
            Ok(()) => Reservation::Reserved,
            Err(cancelled) if cancelled.failed(Part::Task) => Reservation::NotWaiting,
            Err(_) => Reservation::Full,
        })
    }

    async fn ready(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        limit: usize,
    ) -> Result<Vec<Timer>, InfraError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(READY_INDEX)
            .key_condition_expression("ready_key = :ready")
            .expression_attribute_values(":ready", ready_key(tenant, project))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(infra("DynamoDB Query"))?;
        Ok(output.items().iter().filter_map(ready_timer).collect())
    }

    async fn queued(&self, tenant: &Tenant, project: &ProjectId) -> Result<u64, InfraError> {
        let mut total = 0;
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(READY_INDEX)
                .key_condition_expression("ready_key = :ready")
                .expression_attribute_values(":ready", ready_key(tenant, project))
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(infra("DynamoDB Query"))?;
            total += u64::try_from(output.count).unwrap_or(0);
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(total);
            }
        }
    }

    async fn drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<Option<Drain>, InfraError> {
        let item = self
            .project_item(tenant, project, "wake_at, last_park")
            .await?;
        Ok(item.as_ref().and_then(drain_of))
    }

    async fn drains(
        &self,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(Tenant, ProjectId)>, InfraError> {
        let keys = self.due_wakes(drain_key, until, limit).await?;
        Ok(keys.iter().filter_map(|pk| parse_project_pk(pk)).collect())
    }

    async fn reschedule_drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        at: DateTime<Utc>,
    ) -> Result<(), InfraError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(project_key(tenant, project)))
            .update_expression("SET wake_at = :at")
            .condition_expression("attribute_exists(wake_key)")
            .expression_attribute_values(":at", s(sortable(at)))
            .send()
            .await;
        written("DynamoDB UpdateItem", update)?;
        Ok(())
    }

    async fn end_drain(
        &self,
        tenant: &Tenant,
        project: &ProjectId,
        last_park: DateTime<Utc>,
    ) -> Result<bool, InfraError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(project_key(tenant, project)))
            .update_expression("REMOVE wake_key, wake_at, last_park")
            .condition_expression("last_park = :seen")
            .expression_attribute_values(":seen", s(sortable(last_park)))
            .send()
            .await;
        written("DynamoDB UpdateItem", update)
    }
}

#[async_trait]
impl KillSwitches for DynamoStore {
    async fn kill_switch(&self, scope: &Scope) -> Result<Option<KillSwitch>, InfraError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(switch_key(scope, "SWITCH")))
            .consistent_read(true)
            .send()
            .await
            .map_err(infra("DynamoDB GetItem"))?;
        output.item.map(switch_of).transpose()
    }

    async fn set_kill_switch(&self, scope: &Scope, switch: &KillSwitch) -> Result<(), InfraError> {
        let put = |sk: &str| -> Result<TransactWriteItem, InfraError> {
            let mut item = switch_key(scope, sk);
            item.insert("engaged".to_owned(), AttributeValue::Bool(switch.engaged));
            item.insert("last".to_owned(), encoded(&switch.last)?);
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .build()
                .map_err(|e| InfraError::new("build kill switch put", e))?;
            Ok(TransactWriteItem::builder().put(put).build())
        };
        let entry = format!(
            "EV#{}#{}",
            sortable(switch.last.at),
            uuid::Uuid::now_v7().simple()
        );
        self.client
            .transact_write_items()
            .transact_items(put("SWITCH")?)
            .transact_items(put(&entry)?)
            .send()
            .await
            .map_err(infra("DynamoDB TransactWriteItems"))?;
        Ok(())
    }

    async fn kill_switch_history(
        &self,
        scope: &Scope,
        limit: usize,
    ) -> Result<Vec<KillSwitch>, InfraError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :ev)")
            .expression_attribute_values(":pk", s(switch_pk(scope)))
            .expression_attribute_values(":ev", s("EV#"))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(infra("DynamoDB Query"))?;
        output
            .items
            .unwrap_or_default()
            .into_iter()
            .map(switch_of)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_ranks_sort_higher_priority_first_then_earlier_due() {
        let task = |priority: i32, due: &str| {
            let mut task: Task = serde_json::from_value(serde_json::json!({
                "id": "0190d1b8-8c2b-7cc1-9b7e-5b7c4c6d2f10", "tenant": "acme", "project": "p",
                "name": "n", "tier": "t", "input": null, "priority": priority,
                "due_at": due, "timeout_seconds": 60,
                "retry": {"max_attempts": 3, "backoff_seconds": 5, "max_backoff_seconds": 900},
                "status": "SCHEDULED", "version": 1, "attempt": 2, "deadline": null,
                "output": null, "error": null, "reason": null, "correlation_id": "c",
                "created_at": due, "updated_at": due, "history": []
            }))
            .unwrap();
            task.priority = priority;
            task
        };
        let urgent = ready_rank(&task(1000, "2026-01-02T00:00:00Z"));
        let early = ready_rank(&task(0, "2026-01-01T00:00:00Z"));
        let late = ready_rank(&task(0, "2026-01-01T00:00:01Z"));
        let low = ready_rank(&task(-1000, "2025-01-01T00:00:00Z"));
        assert!(
            urgent < early && early < late && late < low,
            "{urgent} {early} {late} {low}"
        );

        let mut entry = key(
            &Tenant::parse("acme").unwrap(),
            &task(0, "2026-01-01T00:00:00Z").id,
        );
        entry.insert("ready_rank".to_owned(), s(early));
        let timer = ready_timer(&entry).unwrap();
        assert_eq!(timer.attempt, 2);
        assert_eq!(timer.due_at.to_rfc3339(), "2026-01-01T00:00:00+00:00");
    }

    #[test]
    fn a_project_partition_key_parses_back() {
        assert_eq!(
            parse_project_pk("P#acme#reports"),
            Some((
                Tenant::parse("acme").unwrap(),
                ProjectId::parse("reports").unwrap()
            ))
        );
        assert_eq!(parse_project_pk("T#acme#x"), None);
        assert!(
            drain_shard(
                &Tenant::parse("a").unwrap(),
                &ProjectId::parse("b").unwrap()
            ) < 4
        );
    }
}
