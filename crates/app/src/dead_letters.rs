//! Dead letters: what every DLQ holds, grouped by why it failed, and redrives that move a chosen
//! class back to its source queue at a chosen rate, noting each redrive in the affected task's
//! history. A letter is deleted from its DLQ only after it is back in its source queue, so a
//! redrive stopped at any point loses nothing (at worst a letter is delivered twice, which every
//! handler absorbs).

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use baton_domain::{Command, TaskId, Tenant};
use chrono::{DateTime, Duration, Utc};
use tokio::time::{Instant, sleep_until};
use tracing::info;

use crate::ports::InfraError;
use crate::service::{Baton, Handled};

/// How many letters one stats call reads per DLQ before it reports `truncated`.
pub const MAX_SCAN: usize = 1000;
/// The fastest rate a redrive may ask for (messages per second).
pub const MAX_REDRIVE_RATE: u32 = 100;
/// The rate of a redrive that names none.
pub const REDRIVE_RATE: u32 = 10;
/// How long a scan keeps the letters it read hidden, so it reads each once. A scan that stops
/// early leaves them to reappear after this.
pub const HOLD: Duration = Duration::seconds(30);

/// Why a message failed, as the function that gave up on it recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Failure {
    /// A stable code: the rejection's (`INVALID_SUBMISSION`, `INVALID_DEPENDENCY`, ...),
    /// `INFRA_ERROR` when retries ran out, `UNCLASSIFIED` when no function recorded one.
    pub code: String,
    /// The reason, for a human.
    pub reason: String,
    /// The event's detail-type (`SubmitTask`, `TaskResult`, ...), or `Timer` for a due timer.
    pub detail_type: Option<String>,
    /// The task's owner, when the message names one.
    pub tenant: Option<Tenant>,
    /// The task, when the message names one.
    pub task_id: Option<TaskId>,
    /// The task's project, when known.
    pub project: Option<String>,
    /// The task's tier, when known.
    pub tier: Option<String>,
}

impl Failure {
    /// The class letters are grouped and filtered by: `{detail-type}/{code}`.
    pub fn class(&self) -> String {
        format!(
            "{}/{}",
            self.detail_type.as_deref().unwrap_or("Unknown"),
            self.code
        )
    }
}

/// One message in a DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// The message id.
    pub id: String,
    /// The handle that deletes or releases this receipt of it.
    pub receipt: String,
    /// The message, as its source queue delivered it.
    pub body: String,
    /// When it was first sent (the DLQ keeps the original time).
    pub sent_at: DateTime<Utc>,
    /// Why it failed.
    pub failure: Failure,
}

/// How many messages a DLQ holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    /// Visible: waiting.
    pub visible: u64,
    /// Received and hidden for now (by a scan or a redrive under way).
    pub in_flight: u64,
}

/// The dead-letter queues, as an adapter (SQS) keeps them. `queue` is a short name: `submit`,
/// `result`, `cancel`, `rollback`, `due`, `http`.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// The queues that have a DLQ.
    fn queues(&self) -> Vec<String>;
    /// The DLQ's depth.
    async fn depth(&self, queue: &str) -> Result<Depth, InfraError>;
    /// Up to 10 letters, hidden from other readers for `hold`.
    async fn receive(&self, queue: &str, hold: Duration) -> Result<Vec<Letter>, InfraError>;
    /// Makes `letters` visible again at once.
    async fn release(&self, queue: &str, letters: &[Letter]) -> Result<(), InfraError>;
    /// Sends the letter's message, unchanged, back to the queue it failed in, marked with the
    /// redrive's id.
    async fn send_back(
        &self,
        queue: &str,
        letter: &Letter,
        redrive: &str,
    ) -> Result<(), InfraError>;
    /// Deletes the letter from the DLQ.
    async fn delete(&self, queue: &str, letter: &Letter) -> Result<(), InfraError>;
}

/// Letters of one class in one DLQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassCount {
    /// `{detail-type}/{code}`.
    pub class: String,
    /// The failure of its oldest letter (code, detail-type, and an example reason).
    pub example: Failure,
    /// How many letters.
    pub count: usize,
    /// The age of its oldest letter.
    pub oldest_age: Duration,
}

/// What one DLQ holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqStats {
    /// The queue's short name.
    pub queue: String,
    /// Its depth.
    pub depth: Depth,
    /// The age of its oldest letter, if any was read.
    pub oldest_age: Option<Duration>,
    /// The letters read, grouped by class (and tier and project), most numerous first.
    pub classes: Vec<ClassCount>,
    /// How many letters were read.
    pub scanned: usize,
    /// Whether more letters were there than [`MAX_SCAN`].
    pub truncated: bool,
}

/// Which letters a redrive moves; every criterion given must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LetterFilter {
    /// Only this class (`{detail-type}/{code}`).
    pub class: Option<String>,
    /// Only letters at least this old.
    pub older_than: Option<Duration>,
    /// Only letters for these tasks.
    pub task_ids: Vec<TaskId>,
}

impl LetterFilter {
    /// Whether `letter` is chosen at `now`.
    pub fn matches(&self, letter: &Letter, now: DateTime<Utc>) -> bool {
        self.class
            .as_ref()
            .is_none_or(|class| *class == letter.failure.class())
            && self
                .older_than
                .is_none_or(|age| now - letter.sent_at >= age)
            && (self.task_ids.is_empty()
                || letter
                    .failure
                    .task_id
                    .is_some_and(|id| self.task_ids.contains(&id)))
    }
}

/// A redrive to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    /// The queue whose DLQ to drain.
    pub queue: String,
    /// Which letters.
    pub filter: LetterFilter,
    /// How many messages per second go back (1 to [`MAX_REDRIVE_RATE`]).
    pub rate_per_second: u32,
    /// Only list what would move.
    pub dry_run: bool,
    /// How long this call may run; what is left waits for the next call.
    pub budget: StdDuration,
    /// How long the letters it reads stay hidden if it stops before releasing them.
    pub hold: Duration,
}

/// A redrive's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveReport {
    /// Its id, as noted in each task's history (`redriven:{id}`) and on each message sent back.
    pub id: String,
    /// The letters that matched (moved, or listed by a dry run).
    pub matched: Vec<Letter>,
    /// How many went back to the source queue.
    pub moved: usize,
    /// How many tasks got a history note.
    pub noted: usize,
    /// Whether the whole DLQ was read; `false` when the budget ran out first.
    pub complete: bool,
}

/// Why a dead-letter request is refused.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// No DLQ has that name.
    #[error("no queue `{0}` has a DLQ")]
    UnknownQueue(String),
    /// The rate is out of bounds.
    #[error("ratePerSecond must be 1 to {MAX_REDRIVE_RATE}, not {0}")]
    Rate(u32),
    /// Infrastructure failed.
    #[error(transparent)]
    Infra(#[from] InfraError),
}

/// The cause a redrive notes in a task's history.
pub fn redriven(redrive: &str) -> String {
    format!("redriven:{redrive}")
}

/// Reads every DLQ's depth and up to [`MAX_SCAN`] of its letters, grouped by class.
pub async fn dlq_stats(
    dead: &dyn DeadLetters,
    now: DateTime<Utc>,
) -> Result<Vec<DlqStats>, InfraError> {
    let mut all = Vec::new();
    for queue in dead.queues() {
        let depth = dead.depth(&queue).await?;
        let mut letters = Vec::new();
        let mut truncated = false;
        loop {
            let batch = dead.receive(&queue, HOLD).await?;
            if batch.is_empty() {
                break;
            }
            letters.extend(batch);
            if letters.len() >= MAX_SCAN {
                truncated = true;
                break;
            }
        }
        dead.release(&queue, &letters).await?;
        all.push(stats_of(queue, depth, &letters, truncated, now));
    }
    Ok(all)
}

fn stats_of(
    queue: String,
    depth: Depth,
    letters: &[Letter],
    truncated: bool,
    now: DateTime<Utc>,
) -> DlqStats {
    let mut classes: BTreeMap<(String, Option<String>, Option<String>), ClassCount> =
        BTreeMap::new();
    for letter in letters {
        let failure = &letter.failure;
        let key = (
            failure.class(),
            failure.tier.clone(),
            failure.project.clone(),
        );
        let age = now - letter.sent_at;
        let class = classes.entry(key).or_insert_with(|| ClassCount {
            class: failure.class(),
            example: failure.clone(),
            count: 0,
            oldest_age: age,
        });
        class.count += 1;
        if age > class.oldest_age {
            class.oldest_age = age;
            class.example = failure.clone();
        }
    }
    let mut classes: Vec<ClassCount> = classes.into_values().collect();
    classes.sort_by(|a, b| b.count.cmp(&a.count).then(a.class.cmp(&b.class)));
    DlqStats {
        queue,
        depth,
        oldest_age: letters.iter().map(|l| now - l.sent_at).max(),
        classes,
        scanned: letters.len(),
        truncated,
    }
}

/// Moves the letters `redrive` chooses back to their source queue, at most `rate_per_second`,
/// and notes the redrive in each existing task's history (a submission whose task does not
/// exist yet carries the redrive's id on the message; `submit` notes it on the new task).
/// Letters it does not choose are released when it ends. Each chosen letter goes: sent back,
/// noted, deleted — stopped anywhere, the letter is still in the DLQ (hidden for `hold`) or
/// already back in its source queue, or both.
pub async fn redrive(
    baton: &Baton,
    dead: &dyn DeadLetters,
    redrive: &Redrive,
) -> Result<RedriveReport, DeadLetterError> {
    if !dead.queues().contains(&redrive.queue) {
        return Err(DeadLetterError::UnknownQueue(redrive.queue.clone()));
    }
    if !(1..=MAX_REDRIVE_RATE).contains(&redrive.rate_per_second) {
        return Err(DeadLetterError::Rate(redrive.rate_per_second));
    }
    let queue = redrive.queue.as_str();
    let id = format!("rd-{}", uuid::Uuid::now_v7());
    let interval = StdDuration::from_secs(1) / redrive.rate_per_second;
    let deadline = Instant::now() + redrive.budget;
    let mut next_send = Instant::now();
    let mut report = RedriveReport {
        id: id.clone(),
        matched: Vec::new(),
        moved: 0,
        noted: 0,
        complete: false,
    };
    let mut kept = Vec::new();
    'scan: while Instant::now() < deadline {
        let batch = dead.receive(queue, redrive.hold).await?;
        if batch.is_empty() {
            report.complete = true;
            break;
        }
        let mut batch = batch.into_iter();
        while let Some(letter) = batch.next() {
            if !redrive.filter.matches(&letter, baton.now()) {
                kept.push(letter);
                continue;
            }
            if redrive.dry_run {
                report.matched.push(letter.clone());
                kept.push(letter);
                continue;
            }
            if next_send > deadline {
                kept.push(letter);
                kept.extend(batch);
                break 'scan;
            }
            sleep_until(next_send).await;
            next_send = next_send.max(Instant::now()) + interval;
            dead.send_back(queue, &letter, &id).await?;
            if note(baton, &letter, &id).await? {
                report.noted += 1;
            }
            dead.delete(queue, &letter).await?;
            report.moved += 1;
            report.matched.push(letter);
        }
    }
    dead.release(queue, &kept).await?;
    info!(
        redrive = %id, queue, moved = report.moved, matched = report.matched.len(),
        complete = report.complete, dry_run = redrive.dry_run, "redrive ended"
    );
    Ok(report)
}

/// Notes redrive `id` in the history of the letter's task, if it names one that exists.
async fn note(baton: &Baton, letter: &Letter, id: &str) -> Result<bool, InfraError> {
    let (Some(tenant), Some(task_id)) = (&letter.failure.tenant, letter.failure.task_id) else {
        return Ok(false);
    };
    let command = Command::Note {
        cause: redriven(id),
    };
    let handled = baton.execute(tenant, &task_id, &command).await?;
    Ok(matches!(handled, Handled::Applied(_)))
}
