//! `make demo`: a small, realistic workload against the running `make dev` stack. HTTP tasks
//! call a local echo server through the built-in executor: most succeed, some fail once and
//! succeed on retry, some keep failing, one times out, and a chain of three runs in order.
//! Progress prints every second; a summary table ends it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use baton_tests::{Stack, TestServer, echo_port, unique};
use serde_json::{Value, json};

const SUBMIT: &str = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }";
const TASK: &str =
    "query($id: ID!) { task(id: $id) { name status attempt error { code } createdAt updatedAt } }";
const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::main]
async fn main() -> Result<()> {
    let stack = Stack::deployed().await?;
    // The one loopback address the local stage lets the HTTP executor call.
    let server = TestServer::start(echo_port()).await?;
    let tenant = "demo";
    let project = unique("demo");
    let url = |path: &str| format!("{}{path}", server.url);
    println!("echo server at {}; project {project}", server.url);

    let twice = json!({"maxAttempts": 2, "backoffSeconds": 1});
    let mut workload: Vec<(String, Value, Value, Vec<usize>)> = Vec::new();
    for n in 1..=6 {
        let request = json!({"method": "POST", "url": url("/echo"), "body": {"invoice": n}});
        workload.push((format!("echo invoice {n}"), request, twice.clone(), vec![]));
    }
    for n in 1..=2 {
        let request = json!({"url": url(&format!("/flaky/{}", unique("k")))});
        workload.push((format!("flaky call {n}"), request, twice.clone(), vec![]));
    }
    for n in 1..=2 {
        let request = json!({"url": url("/fail")});
        workload.push((
            format!("broken endpoint {n}"),
            request,
            twice.clone(),
            vec![],
        ));
    }
    let slow = json!({"url": url("/slow"), "timeout_seconds": 1});
    workload.push((
        "slow endpoint".into(),
        slow,
        json!({"maxAttempts": 1}),
        vec![],
    ));
    let first = workload.len();
    workload.push((
        "chain: fetch".into(),
        json!({"url": url("/ok")}),
        twice.clone(),
        vec![],
    ));
    let fetch = json!({"method": "POST", "url": url("/echo"), "body": "transform"});
    workload.push(("chain: transform".into(), fetch, twice.clone(), vec![first]));
    let store = json!({"url": url("/ok")});
    workload.push(("chain: store".into(), store, twice, vec![first + 1]));

    let mut ids: Vec<String> = Vec::new();
    for (name, request, retry, after) in &workload {
        let depends_on: Vec<&String> = after.iter().map(|i| &ids[*i]).collect();
        let input = json!({"projectId": project, "name": name, "tier": "http", "input": request,
            "retry": retry, "dependsOn": depends_on});
        let data = stack
            .graphql(tenant, SUBMIT, json!({"input": input}))
            .await?;
        ids.push(data["submitTask"]["id"].as_str().context("id")?.to_owned());
    }
    println!("submitted {} tasks\n", ids.len());

    let started = Instant::now();
    let tasks = loop {
        let mut tasks = Vec::new();
        for id in &ids {
            tasks.push(stack.graphql(tenant, TASK, json!({"id": id})).await?["task"].clone());
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for task in &tasks {
            *counts
                .entry(task["status"].as_str().unwrap_or("?"))
                .or_default() += 1;
        }
        let line: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
        println!(
            "{:>4.0} s  {}",
            started.elapsed().as_secs_f64(),
            line.join("  ")
        );
        let finished = ["SUCCEEDED", "FAILED", "CANCELLED", "ROLLED_BACK"];
        if tasks
            .iter()
            .all(|t| finished.contains(&t["status"].as_str().unwrap_or("")))
        {
            break tasks;
        }
        if started.elapsed() > PATIENCE {
            bail!("the workload did not finish within {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    println!("\n| task | status | attempts | took | last error |");
    println!("|---|---|---|---|---|");
    for task in &tasks {
        let at = |field: &str| {
            task[field]
                .as_str()
                .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
        };
        let took = match (at("createdAt"), at("updatedAt")) {
            (Some(from), Some(to)) => {
                format!("{:.1} s", (to - from).num_milliseconds() as f64 / 1000.0)
            }
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {} | {took} | {} |",
            task["name"].as_str().unwrap_or(""),
            task["status"].as_str().unwrap_or(""),
            task["attempt"],
            task["error"]["code"].as_str().unwrap_or("")
        );
    }
    let succeeded = tasks.iter().filter(|t| t["status"] == "SUCCEEDED").count();
    println!(
        "\n{succeeded} of {} succeeded in {:.1} s",
        tasks.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
