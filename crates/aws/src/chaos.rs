//! The chaos run's faults inside the functions, compiled only with the `chaos` feature (the
//! chaos run's deploy builds with it; release packages never do). Its switch is `BATON_CHAOS`,
//! which the template sets only when its `Chaos` parameter is given on the `local` or `test`
//! stage: SDK responses lost ([`crate::faults::FaultyHttp`]), handled messages reported failed
//! so SQS delivers them again, and processes killed after a batch's commits and before its
//! acknowledgement.

use std::sync::OnceLock;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use tracing::{error, warn};

use crate::lambda::failure;

/// The chaos run's faults, as shares: responses lost at the SDK boundary, acknowledged messages
/// delivered again, batches whose process is killed after their commits and before their
/// acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Chaos {
    /// The share of SDK requests whose response is lost.
    pub lose: f64,
    /// The share of handled messages reported failed anyway, so SQS delivers them again.
    pub duplicate: f64,
    /// The share of batches after which the process dies unacknowledged.
    pub crash: f64,
}

impl Chaos {
    /// From `BATON_CHAOS` (`lose=0.1,duplicate=0.1,crash=0.02`), read once per process; `None`
    /// when unset. A value that does not parse is logged and ignored: chaos is never switched on
    /// by accident.
    pub fn from_env() -> Option<Self> {
        static CHAOS: OnceLock<Option<Chaos>> = OnceLock::new();
        *CHAOS.get_or_init(|| Self::read(&std::env::var("BATON_CHAOS").ok()?))
    }

    fn read(text: &str) -> Option<Self> {
        match Self::parse(text) {
            Ok(chaos) => {
                warn!(?chaos, "chaos is on: faults will be injected");
                Some(chaos)
            }
            Err(reason) => {
                error!(%text, %reason, "BATON_CHAOS ignored");
                None
            }
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut chaos = Chaos::default();
        for pair in text.split(',').filter(|pair| !pair.trim().is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not name=share"))?;
            let share: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|share| (0.0..=1.0).contains(share))
                .ok_or_else(|| format!("`{value}` is not a share between 0 and 1"))?;
            match name.trim() {
                "lose" => chaos.lose = share,
                "duplicate" => chaos.duplicate = share,
                "crash" => chaos.crash = share,
                other => return Err(format!("unknown fault `{other}`")),
            }
        }
        Ok(chaos)
    }

    /// Whether a draw falls within `share`.
    pub fn strikes(share: f64) -> bool {
        fastrand::f64() < share
    }
}

/// The ids of `event`'s messages, when chaos is on (which it may report failed later).
pub(crate) fn message_ids(chaos: Option<Chaos>, event: &SqsEvent) -> Vec<String> {
    match chaos {
        Some(_) => event
            .records
            .iter()
            .filter_map(|r| r.message_id.clone())
            .collect(),
        None => Vec::new(),
    }
}

/// A settled batch as chaos leaves it: some handled messages reported failed, so SQS delivers
/// them again; now and then the process dies before the batch is acknowledged.
pub(crate) fn disturbed(
    chaos: Option<Chaos>,
    ids: &[String],
    mut response: SqsBatchResponse,
) -> SqsBatchResponse {
    let Some(chaos) = chaos else {
        return response;
    };
    if Chaos::strikes(chaos.crash) {
        error!(
            messages = ids.len(),
            "chaos: killed after the batch's commits, before its acknowledgement"
        );
        std::process::exit(137);
    }
    for id in ids {
        let failed = response
            .batch_item_failures
            .iter()
            .any(|f| &f.item_identifier == id);
        if !failed && Chaos::strikes(chaos.duplicate) {
            warn!(message_id = %id, "chaos: a handled message will be delivered again");
            response.batch_item_failures.push(failure(id.clone()));
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaos_parses_its_shares_and_refuses_anything_else() {
        let chaos = Chaos::parse("lose=0.1, duplicate=0.1,crash=0.02").unwrap();
        assert_eq!(
            chaos,
            Chaos {
                lose: 0.1,
                duplicate: 0.1,
                crash: 0.02
            }
        );
        assert!(Chaos::parse("lose=2").is_err());
        assert!(Chaos::parse("explode=0.1").is_err());
        assert!(Chaos::parse("lose").is_err());
    }

    #[test]
    fn chaos_reports_handled_messages_failed_so_they_come_again() {
        let chaos = Chaos {
            lose: 0.0,
            duplicate: 1.0,
            crash: 0.0,
        };
        let ids = vec!["a".to_owned(), "b".to_owned()];
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures.push(failure("b".to_owned()));
        let response = disturbed(Some(chaos), &ids, response);
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["b", "a"]);
    }
}
