//! `make bench`: Baton's figures side by side, measured in one run — AWS calls and list cost per
//! lifecycle, the load on the hottest keys and the scale it bounds, throughput through the stack
//! (a regression check), latency through API Gateway, cold init, package size and peak memory per
//! function. Prints one table and writes the same figures
//! to `target/bench/report.json`.
//!
//! Knobs: `BENCH_TASKS` (lifecycles per measurement, default 500), `BENCH_CONCURRENCY` (clients
//! at once, default 8), `BENCH_EVENTS` (events per process in the memory run, default 1000),
//! `BENCH_SAMPLES` (latency samples, default 200), `BENCH_COLD_STARTS` (per function, default 15),
//! `BENCH_PROVENANCE`, `BENCH_GRAPH`, `BENCH_LOOKUPS` (the graph figures: 100,000 records, a
//! 1,000-node tree, 500 lookups). `--quick`: small sizes, a smoke run for CI that checks every
//! stage works and asserts no figure.
//!
//! Needs the emulator, a deployed stack (`BATON_STACK_OUTPUTS`), the function binaries
//! (`BENCH_BINARIES`, default `target/release`) and, for sizes, the arm64 packages
//! (`BENCH_PACKAGES`); `localstack/bench.sh` provides them.

mod calls;
mod cost;
mod graph;
mod keys;
mod runtime;
mod stack;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

/// The sizes of a run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sizes {
    /// Lifecycles per measurement.
    pub tasks: usize,
    /// Clients at once.
    pub concurrency: usize,
    /// Events each process handles in the memory run.
    pub events: usize,
    /// Latency samples per figure.
    pub samples: usize,
    /// Cold starts per function.
    pub cold_starts: usize,
    /// Provenance records stored for the lookup figure.
    pub provenance_records: usize,
    /// Nodes of the lineage graph.
    pub graph_nodes: usize,
    /// Provenance lookups timed.
    pub lookups: usize,
}

impl Sizes {
    fn from_env(quick: bool) -> Self {
        let setting = |name: &str, default: usize, quick_default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(if quick { quick_default } else { default })
        };
        Self {
            tasks: setting("BENCH_TASKS", 500, 10),
            concurrency: setting("BENCH_CONCURRENCY", 8, 2),
            events: setting("BENCH_EVENTS", 1000, 20),
            samples: setting("BENCH_SAMPLES", 200, 10),
            cold_starts: setting("BENCH_COLD_STARTS", 15, 1),
            provenance_records: setting("BENCH_PROVENANCE", 100_000, 1_000),
            graph_nodes: setting("BENCH_GRAPH", 1_000, 100),
            lookups: setting("BENCH_LOOKUPS", 500, 20),
        }
    }
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// One progress line on stderr, with the time since the run began.
pub fn progress(line: &str) {
    let elapsed = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[bench {elapsed:6.1}s] {line}");
}

/// Everything the run measured.
#[derive(Debug, Serialize)]
struct Report {
    quick: bool,
    sizes: Sizes,
    prices: cost::Prices,
    cost: Vec<cost::LifecycleCost>,
    throughput: stack::Throughput,
    latency: stack::Latency,
    functions: Vec<runtime::FunctionFigures>,
    graph: graph::GraphFigures,
}

#[tokio::main]
async fn main() -> Result<()> {
    START.get_or_init(Instant::now);
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes = Sizes::from_env(quick);
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"))?;
    progress(&format!("sizes: {sizes:?}"));
    let cost = cost::measure(sizes.tasks).await?;
    let functions = runtime::measure(&sizes).await?;
    let stack = baton_tests::Stack::deployed().await?;
    let throughput = stack::throughput(&stack, &sizes).await?;
    let latency = stack::latency(&stack, &sizes).await?;
    let graph = graph::measure(sizes.provenance_records, sizes.graph_nodes, sizes.lookups).await?;
    let report = Report {
        quick,
        sizes,
        prices: cost::PRICES,
        cost,
        throughput,
        latency,
        functions,
        graph,
    };
    print!("{}", table(&report));
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/bench/report.json"
    ));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    progress(&format!("report written to {}", path.display()));
    Ok(())
}

/// A figure against its goal: `✓` when it holds, `✗` when not, blank without a goal.
fn verdict(holds: Option<bool>) -> &'static str {
    match holds {
        Some(true) => "✓",
        Some(false) => "✗",
        None => "",
    }
}

fn table(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut row = |what: &str, figure: String, goal: &str, holds: Option<bool>| {
        let _ = writeln!(
            out,
            "{what:<44} {figure:>26}  {goal:<14} {}",
            verdict(holds)
        );
    };
    row("figure", "measured".into(), "goal", None);
    for c in &report.cost {
        let mut kind = match c.batch {
            1 => format!("{:?}, batch 1", c.kind).to_lowercase(),
            _ => format!("{:?}", c.kind).to_lowercase(),
        };
        if c.published == cost::Events::Ready {
            kind.push_str(", TaskReady only");
        }
        let immediate = c.kind == cost::Kind::Immediate && c.batch > 1;
        let (cost_goal, most) = match (c.kind, c.batch) {
            (cost::Kind::Immediate, 1) => ("≤ $12.00/M", Some(12.0)),
            (cost::Kind::Immediate, _) => ("≤ $8.00/M", Some(8.0)),
            _ => ("", None),
        };
        row(
            &format!("cost, {kind} lifecycle ($/M)"),
            format!(
                "${:.2} (SFN ${:.2})",
                c.per_million, c.step_functions_per_million
            ),
            cost_goal,
            most.map(|most| c.per_million <= most),
        );
        let calls: f64 = c.baton_calls.values().map(|p| p.calls).sum();
        row(
            &format!("  {kind}: Baton's AWS calls, WRU, RRU"),
            format!("{calls:.1}, {:.1}, {:.1}", c.write_units, c.read_units),
            "",
            None,
        );
        row(
            &format!("  {kind}: SQS req, events, invocations"),
            format!(
                "{:.1}, {:.1}, {:.2}",
                c.sqs_requests, c.events, c.invocations
            ),
            "",
            None,
        );
        row(
            &format!("  {kind}: Baton's CPU per lifecycle (ms)"),
            format!("{:.2}", c.cpu_ms),
            if immediate { "≤ 0.5 ms" } else { "" },
            immediate.then_some(c.cpu_ms <= 0.5),
        );
        let per_handler = |figure: fn(&cost::HandlerFigures) -> f64| {
            c.handlers
                .values()
                .map(|h| format!("{:.1}", figure(h)))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let names = c.handlers.keys().copied().collect::<Vec<_>>().join("/");
        row(
            &format!("  {kind}: requests per message, {names}"),
            per_handler(|h| h.requests),
            "",
            None,
        );
        row(
            &format!("  {kind}: CPU per message (ms), same"),
            per_handler(|h| h.cpu_ms),
            "",
            None,
        );
        let hot = &c.hot_keys;
        for (scope, key, goal, most) in [
            ("project", &hot.project, "≤ 0.1 WRU", 0.1),
            ("deployment", &hot.deployment, "≤ 0.01 WRU", 0.01),
        ] {
            let Some(key) = key else { continue };
            row(
                &format!("  {kind}: hottest {scope} key, WRU & txn"),
                format!("{:.2} & {:.2}", key.write_units, key.transactions),
                if immediate { goal } else { "" },
                immediate.then_some(key.write_units <= most),
            );
            row(&format!("    ({})", key.key), String::new(), "", None);
        }
        row(
            &format!("  {kind}: bound per project / deployment (/s)"),
            format!("{:.0} / {:.0}", hot.project_bound, hot.deployment_bound),
            if immediate { "≥ 10,000/100,000" } else { "" },
            immediate.then_some(hot.project_bound >= 10_000.0 && hot.deployment_bound >= 100_000.0),
        );
    }
    let t = &report.throughput;
    row(
        "throughput: through the stack, lifecycles/s",
        format!("{:.1}", t.stack),
        "",
        None,
    );
    let l = &report.latency;
    row(
        "latency floor: GET /health p50/p95/p99 (ms)",
        l.floor.to_string(),
        "",
        None,
    );
    row(
        "latency: submitTask p50/p95/p99 (ms)",
        l.submit.to_string(),
        "p95 ≤ 25 ms",
        Some(l.submit.p95 <= 25.0),
    );
    row(
        "latency: task(id) p50/p95/p99 (ms)",
        l.status.to_string(),
        "p95 ≤ 10 ms",
        Some(l.status.p95 <= 10.0),
    );
    row(
        "latency: submitTask, task(id) p50 over the floor",
        format!(
            "{:.1}, {:.1}",
            l.submit.p50 - l.floor.p50,
            l.status.p50 - l.floor.p50
        ),
        "",
        None,
    );
    row(
        "latency: due → TaskReady p50/p95 (ms)",
        format!("{:.0} / {:.0}", l.due_to_ready.p50, l.due_to_ready.p95),
        "",
        None,
    );
    let g = &report.graph;
    row(
        &format!("provenance of 1 of {} p50/p95/p99 (ms)", g.records),
        g.provenance_lookup.to_string(),
        "p95 ≤ 50 ms",
        Some(g.provenance_lookup.p95 <= 50.0),
    );
    row(
        &format!("lineage of {} nodes, down p50/p95/p99 (ms)", g.nodes),
        g.lineage_downstream.to_string(),
        "",
        None,
    );
    row(
        "lineage up from a leaf p50/p95/p99 (ms)",
        g.lineage_upstream.to_string(),
        "",
        None,
    );
    for f in &report.functions {
        row(
            &format!("{}: init / first invocation (ms)", f.function),
            format!("{:.1} / {:.1}", f.init_ms, f.first_invocation_ms),
            "init ≤ 15 ms",
            Some(f.init_ms <= 15.0),
        );
        row(
            &format!("{}: arm64 zip (MB)", f.function),
            f.zip_mb.map_or("-".into(), |mb| format!("{mb:.2}")),
            "≤ 4 MB",
            f.zip_mb.map(|mb| mb <= 4.0),
        );
        row(
            &format!("{}: peak RSS, {} events (MB)", f.function, f.events),
            format!("{:.1}", f.peak_rss_mb),
            "≤ 32 MB",
            Some(f.peak_rss_mb <= 32.0),
        );
    }
    out
}
