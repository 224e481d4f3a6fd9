//! Emulator resources a fixture created, removed when the fixture is dropped: when its test
//! ends, whether it passed or panicked. No test removes anything by hand.

use anyhow::{Result, anyhow};

/// What one fixture created; removed when it is dropped.
#[derive(Default)]
pub(crate) struct Owned(Resources);

impl Owned {
    pub(crate) fn rule(&mut self, rule: &str, bus: &str) {
        self.0.rules.push((rule.to_owned(), bus.to_owned()));
    }

    pub(crate) fn bus(&mut self, bus: &str) {
        self.0.buses.push(bus.to_owned());
    }

    pub(crate) fn queue(&mut self, url: &str) {
        self.0.queues.push(url.to_owned());
    }

    pub(crate) fn table(&mut self, table: &str) {
        self.0.tables.push(table.to_owned());
    }
}

/// Resources in the order they are removed: a rule before its bus, a bus's targets before the
/// queues they deliver to.
#[derive(Default)]
struct Resources {
    /// Rules and the bus each is on; their targets go with them.
    rules: Vec<(String, String)>,
    buses: Vec<String>,
    queues: Vec<String>,
    tables: Vec<String>,
}

impl Resources {
    fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.buses.is_empty()
            && self.queues.is_empty()
            && self.tables.is_empty()
    }

    /// Removes everything, going on past a failure; the failures, if any, in one error.
    async fn remove(&self) -> Result<()> {
        let sdk = crate::emulator().await;
        let events = aws_sdk_eventbridge::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let mut failures = Vec::new();
        let mut note = |what: String, result: Result<()>| {
            if let Err(error) = result {
                failures.push(format!("{what}: {error:#}"));
            }
        };
        for (rule, bus) in &self.rules {
            note(
                format!("rule {rule}"),
                remove_rule(&events, rule, bus).await,
            );
        }
        for bus in &self.buses {
            let deleted = events.delete_event_bus().name(bus).send().await;
            note(format!("bus {bus}"), deleted.map(drop).map_err(Into::into));
        }
        for url in &self.queues {
            let deleted = sqs.delete_queue().queue_url(url).send().await;
            note(
                format!("queue {url}"),
                deleted.map(drop).map_err(Into::into),
            );
        }
        for table in &self.tables {
            let deleted = dynamodb.delete_table().table_name(table).send().await;
            note(
                format!("table {table}"),
                deleted.map(drop).map_err(Into::into),
            );
        }
        match failures.is_empty() {
            true => Ok(()),
            false => Err(anyhow!("{}", failures.join("; "))),
        }
    }
}

async fn remove_rule(events: &aws_sdk_eventbridge::Client, rule: &str, bus: &str) -> Result<()> {
    let targets = events
        .list_targets_by_rule()
        .rule(rule)
        .event_bus_name(bus)
        .send()
        .await?;
    let ids: Vec<String> = targets
        .targets()
        .iter()
        .map(|t| t.id().to_owned())
        .collect();
    if !ids.is_empty() {
        events
            .remove_targets()
            .rule(rule)
            .event_bus_name(bus)
            .set_ids(Some(ids))
            .send()
            .await?;
    }
    events
        .delete_rule()
        .name(rule)
        .event_bus_name(bus)
        .send()
        .await?;
    Ok(())
}

impl Drop for Owned {
    /// Removes the resources on a thread and runtime of its own: the test's runtime may be a
    /// single thread, this one, blocked here. A removal that fails fails the test, unless the
    /// test is failing already.
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let resources = std::mem::take(&mut self.0);
        let removed = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(resources.remove())
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow!("the removal panicked")));
        if let Err(error) = removed {
            match std::thread::panicking() {
                true => eprintln!("emulator resources left behind: {error:#}"),
                false => panic!("emulator resources left behind: {error:#}"),
            }
        }
    }
}
