//! The task-graph figures, against the emulator (a fresh sandbox table): provenance lookup of one
//! task among `BENCH_PROVENANCE` (default 100,000) stored provenance records, and the lineage of
//! a `BENCH_GRAPH` (default 1,000) node graph, downstream from its root and upstream from a leaf.

use std::time::Instant;

use anyhow::{Context, Result};
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use baton_app::Direction;
use baton_domain::{Command, Outcome, Provenance, Status, SubmitRequest, Task, TaskId};
use baton_tests::Sandbox;
use serde::Serialize;
use serde_json::json;

use crate::progress;
use crate::stack::Percentiles;

/// BatchWriteItem takes at most this many items.
const BATCH: usize = 25;
/// Seeding runs this many batches at once.
const SEED_CONCURRENCY: usize = 8;

fn request(depends_on: &[TaskId]) -> Result<SubmitRequest> {
    Ok(serde_json::from_value(json!({
        "tenant": "bench", "project": "graph", "name": "step", "tier": "cpu",
        "depends_on": depends_on.iter().map(ToString::to_string).collect::<Vec<_>>(),
    }))?)
}

/// A succeeded task with provenance, as the store keeps it.
fn succeeded(template: &Task, i: usize) -> Result<Task> {
    let mut task = template.clone();
    task.id = TaskId::from_uuid(uuid::Uuid::now_v7());
    let now = task.created_at;
    for command in [
        Command::Dispatch {
            attempt: 1,
            lease: baton_tests::lease(),
        },
        Command::Complete {
            lease: Some(baton_tests::lease()),
            attempt: 1,
            outcome: Outcome::Succeeded {
                output: json!({"i": i}),
            },
            provenance: Some(Provenance {
                model: Some(format!("model-{}", i % 7)),
                tokens_in: Some(1000 + i as u64 % 500),
                tokens_out: Some(200),
                worker_id: Some(format!("w-{}", i % 50)),
                ..Provenance::default()
            }),
        },
    ] {
        match baton_domain::decide(&task, &command, now)? {
            baton_domain::Decision::Apply(transition) => task = transition.task,
            other => anyhow::bail!("seeding: {other:?}"),
        }
    }
    Ok(task)
}

/// Provenance and lineage figures.
#[derive(Debug, Clone, Serialize)]
pub struct GraphFigures {
    /// Provenance records stored.
    pub records: usize,
    /// Lookups timed.
    pub lookups: usize,
    /// One task's provenance among `records`, ms.
    pub provenance_lookup: Percentiles,
    /// Nodes in the graph.
    pub nodes: usize,
    /// Lineage downstream from the root, ms (20 runs).
    pub lineage_downstream: Percentiles,
    /// Lineage upstream from a leaf, ms (20 runs).
    pub lineage_upstream: Percentiles,
    /// Seeding the records, s.
    pub seed_seconds: f64,
    /// Submitting the graph through the service, s.
    pub graph_submit_seconds: f64,
}

fn ms(samples: Vec<std::time::Duration>) -> Percentiles {
    Percentiles::of(samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
}

/// Seeds `records` provenance records and a `nodes`-node tree, then times `lookups` provenance
/// lookups and 20 lineage walks each way.
pub async fn measure(records: usize, nodes: usize, lookups: usize) -> Result<GraphFigures> {
    progress(&format!("graph: seeding {records} provenance records"));
    let sandbox = Sandbox::new().await?;
    let dynamodb = aws_sdk_dynamodb::Client::new(&baton_tests::emulator().await);
    let template = Task::submitted(
        request(&[])?.validate(chrono::Utc::now())?,
        TaskId::from_uuid(uuid::Uuid::now_v7()),
        chrono::Utc::now(),
        Status::Scheduled,
    );

    // 1. Seed `records` succeeded tasks with provenance, straight into the table.
    let started = Instant::now();
    let mut ids = Vec::with_capacity(records);
    let mut batches = Vec::new();
    for chunk_start in (0..records).step_by(BATCH) {
        let mut writes = Vec::new();
        for i in chunk_start..(chunk_start + BATCH).min(records) {
            let task = succeeded(&template, i)?;
            let mut item: std::collections::HashMap<_, _> = serde_dynamo::to_item(&task)?;
            item.insert(
                "pk".into(),
                aws_sdk_dynamodb::types::AttributeValue::S(format!(
                    "T#{}#{}",
                    task.tenant, task.id
                )),
            );
            item.insert(
                "sk".into(),
                aws_sdk_dynamodb::types::AttributeValue::S("TASK".into()),
            );
            ids.push(task.id);
            writes.push(
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item)).build()?)
                    .build(),
            );
        }
        batches.push(writes);
    }
    let table = sandbox.settings.table.clone();
    let mut seeded = 0;
    for group in batches.chunks(SEED_CONCURRENCY) {
        let calls = group.iter().map(|writes| {
            let (dynamodb, table) = (dynamodb.clone(), table.clone());
            let writes = writes.clone();
            async move {
                let mut pending = Some(writes);
                while let Some(writes) = pending.take() {
                    let output = dynamodb
                        .batch_write_item()
                        .request_items(&table, writes)
                        .send()
                        .await?;
                    pending = output
                        .unprocessed_items
                        .and_then(|mut left| left.remove(&table))
                        .filter(|left| !left.is_empty());
                }
                anyhow::Ok(())
            }
        });
        for result in futures_util::future::join_all(calls).await {
            result?;
        }
        seeded += group.iter().map(Vec::len).sum::<usize>();
        if seeded % 10_000 < BATCH * SEED_CONCURRENCY {
            progress(&format!(
                "graph: seeded {seeded}/{records} provenance records"
            ));
        }
    }
    let seed_time = started.elapsed();

    // 2. Provenance lookups of random tasks among them.
    let tenant = template.tenant.clone();
    let mut samples = Vec::with_capacity(lookups);
    for i in 0..lookups {
        let id = ids[(i * 7919 + 13) % ids.len()];
        let started = Instant::now();
        let task = sandbox
            .baton
            .task(&tenant, &id)
            .await?
            .context("a seeded task")?;
        samples.push(started.elapsed());
        anyhow::ensure!(task.provenance.is_some(), "task {id} lost its provenance");
    }
    let provenance_lookup = ms(samples);

    // 3. A graph of `nodes` tasks submitted through the service: a tree, fan-out 10.
    let started = Instant::now();
    let mut graph: Vec<TaskId> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let parent: Vec<TaskId> = (i > 0).then(|| graph[(i - 1) / 10]).into_iter().collect();
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        sandbox.baton.submit(&request(&parent)?, id).await?;
        graph.push(id);
        if (i + 1) % 250 == 0 {
            progress(&format!("graph: submitted {}/{nodes} graph tasks", i + 1));
        }
    }
    let graph_time = started.elapsed();
    let mut down = Vec::new();
    let mut up = Vec::new();
    let mut found = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let lineage = sandbox
            .baton
            .lineage(&tenant, &graph[0], Direction::Downstream, 100)
            .await?;
        down.push(started.elapsed());
        found = lineage.nodes.len();
        let started = Instant::now();
        sandbox
            .baton
            .lineage(&tenant, &graph[nodes - 1], Direction::Upstream, 100)
            .await?;
        up.push(started.elapsed());
    }
    anyhow::ensure!(found == nodes, "lineage found {found} of {nodes} tasks");
    Ok(GraphFigures {
        records,
        lookups,
        provenance_lookup,
        nodes,
        lineage_downstream: ms(down),
        lineage_upstream: ms(up),
        seed_seconds: seed_time.as_secs_f64(),
        graph_submit_seconds: graph_time.as_secs_f64(),
    })
}
