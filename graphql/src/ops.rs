//! Operations in the schema: what the DLQs hold, grouped by why, and redrives. Both need the
//! `baton:admin` scope: DLQs are shared by every tenant.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_graphql::{Context, ID, InputObject, SimpleObject};
use baton_app::dead_letters::{
    self, ClassCount, DeadLetterError, DeadLetters, Letter, LetterFilter, REDRIVE_RATE, Redrive,
};
use baton_app::{Baton, Caller};
use chrono::{Duration, Utc};

use crate::{error, internal, invalid, parse_id};

/// How long one `redriveDlq` call may run before it answers (API Gateway waits 30 s); what is
/// left waits for the next call.
pub const REDRIVE_BUDGET: StdDuration = StdDuration::from_secs(20);

/// The DLQs, when the gateway is configured with them.
pub type DeadLetterQueues = Arc<dyn DeadLetters>;

/// Letters of one class in one DLQ.
#[derive(SimpleObject)]
pub struct DlqClass {
    /// `{detail-type}/{code}`: what `redriveDlq(filter: {class})` takes.
    pub class: String,
    /// The failure code (`INVALID_SUBMISSION`, `INFRA_ERROR`, `UNCLASSIFIED`, ...).
    pub code: String,
    /// The event's detail-type, or `Timer`.
    pub detail_type: Option<String>,
    /// The tasks' tier, where known.
    pub tier: Option<String>,
    /// The tasks' project, where known.
    pub project: Option<String>,
    /// How many letters.
    pub count: i32,
    /// The age of the oldest, in seconds.
    pub oldest_age_seconds: i64,
    /// The oldest one's reason, as an example.
    pub reason: String,
}

impl From<ClassCount> for DlqClass {
    fn from(class: ClassCount) -> Self {
        Self {
            class: class.class,
            code: class.example.code,
            detail_type: class.example.detail_type,
            tier: class.example.tier,
            project: class.example.project,
            count: class.count as i32,
            oldest_age_seconds: class.oldest_age.num_seconds(),
            reason: class.example.reason,
        }
    }
}

/// What one DLQ holds.
#[derive(SimpleObject)]
pub struct DlqStats {
    /// The source queue's short name: `submit`, `result`, `cancel`, `rollback`, `due`,
    /// `http`.
    pub queue: String,
    /// Messages waiting.
    pub depth: i64,
    /// Messages received and hidden for now (a scan or a redrive under way).
    pub in_flight: i64,
    /// The age of the oldest letter, in seconds.
    pub oldest_age_seconds: Option<i64>,
    /// Letters grouped by class, tier and project, most numerous first.
    pub classes: Vec<DlqClass>,
    /// How many letters were read to group them.
    pub scanned: i32,
    /// Whether there were more than could be read at once (1,000).
    pub truncated: bool,
}

impl From<dead_letters::DlqStats> for DlqStats {
    fn from(stats: dead_letters::DlqStats) -> Self {
        Self {
            queue: stats.queue,
            depth: stats.depth.visible as i64,
            in_flight: stats.depth.in_flight as i64,
            oldest_age_seconds: stats.oldest_age.map(|age| age.num_seconds()),
            classes: stats.classes.into_iter().map(DlqClass::from).collect(),
            scanned: stats.scanned as i32,
            truncated: stats.truncated,
        }
    }
}

/// Which letters a redrive moves; every criterion given must hold.
#[derive(InputObject, Default)]
pub struct RedriveFilter {
    /// Only this class, as `dlqStats` names it (`SubmitTask/INVALID_DEPENDENCY`).
    pub class: Option<String>,
    /// Only letters at least this many seconds old.
    pub older_than_seconds: Option<i64>,
    /// Only letters for these tasks.
    pub task_ids: Option<Vec<ID>>,
}

/// One letter a redrive matched.
#[derive(SimpleObject)]
pub struct DeadLetter {
    /// The SQS message id.
    pub message_id: String,
    /// Its class.
    pub class: String,
    /// Why it failed.
    pub reason: String,
    /// Its task, when it names one.
    pub task_id: Option<ID>,
    /// Its age in seconds.
    pub age_seconds: i64,
}

impl DeadLetter {
    fn of(letter: Letter, now: chrono::DateTime<Utc>) -> Self {
        Self {
            message_id: letter.id,
            class: letter.failure.class(),
            reason: letter.failure.reason,
            task_id: letter.failure.task_id.map(|id| ID(id.to_string())),
            age_seconds: (now - letter.sent_at).num_seconds(),
        }
    }
}

/// What a redrive did.
#[derive(SimpleObject)]
pub struct RedriveResult {
    /// Its id: each task it reached has `redriven:{id}` in its history.
    pub id: String,
    /// Whether it only listed.
    pub dry_run: bool,
    /// The letters that matched: moved, or (dry run) that would move.
    pub matched: Vec<DeadLetter>,
    /// How many went back to their source queue.
    pub moved: i32,
    /// How many existing tasks got a history entry (a submission redriven before its task
    /// exists gets one when it is created).
    pub noted: i32,
    /// Whether the whole DLQ was read; `false` when the call ran out of time, and another
    /// call moves the rest.
    pub complete: bool,
}

fn operator<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a DeadLetterQueues> {
    let caller: &Caller = crate::caller(ctx)?;
    if !caller.admin {
        return Err(error(
            "FORBIDDEN",
            format!("DLQs need the `{}` scope", crate::auth::ADMIN_SCOPE),
        ));
    }
    ctx.data_opt::<DeadLetterQueues>()
        .ok_or_else(|| error("UNAVAILABLE", "this gateway has no DLQs configured"))
}

pub(crate) async fn dlq_stats(ctx: &Context<'_>) -> async_graphql::Result<Vec<DlqStats>> {
    let dead = operator(ctx)?;
    let stats = dead_letters::dlq_stats(dead.as_ref(), Utc::now())
        .await
        .map_err(internal)?;
    Ok(stats.into_iter().map(DlqStats::from).collect())
}

pub(crate) async fn redrive_dlq(
    ctx: &Context<'_>,
    queue: String,
    filter: RedriveFilter,
    rate_per_second: Option<i32>,
    dry_run: bool,
) -> async_graphql::Result<RedriveResult> {
    let dead = operator(ctx)?;
    let task_ids = filter
        .task_ids
        .unwrap_or_default()
        .iter()
        .map(parse_id)
        .collect::<Result<_, _>>()?;
    let older_than = match filter.older_than_seconds {
        Some(seconds) if seconds < 0 => {
            return Err(invalid("olderThanSeconds", "must not be negative"));
        }
        other => other.map(Duration::seconds),
    };
    let rate = rate_per_second.unwrap_or(REDRIVE_RATE as i32);
    let Ok(rate) = u32::try_from(rate) else {
        return Err(invalid(
            "ratePerSecond",
            format!("must be 1 or more, not {rate}"),
        ));
    };
    let redrive = Redrive {
        queue,
        filter: LetterFilter {
            class: filter.class,
            older_than,
            task_ids,
        },
        rate_per_second: rate,
        dry_run,
        budget: REDRIVE_BUDGET,
        hold: dead_letters::HOLD,
    };
    let baton = ctx.data_unchecked::<Baton>();
    let report = dead_letters::redrive(baton, dead.as_ref(), &redrive)
        .await
        .map_err(|e| match e {
            DeadLetterError::UnknownQueue(_) => invalid("queue", e.to_string()),
            DeadLetterError::Rate(_) => invalid("ratePerSecond", e.to_string()),
            DeadLetterError::Infra(infra) => internal(infra),
        })?;
    let now = Utc::now();
    Ok(RedriveResult {
        id: report.id,
        dry_run,
        matched: report
            .matched
            .into_iter()
            .map(|l| DeadLetter::of(l, now))
            .collect(),
        moved: report.moved as i32,
        noted: report.noted as i32,
        complete: report.complete,
    })
}
