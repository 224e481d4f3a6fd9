//! A batch's outbound messages, sent together once its commands are done.
//!
//! A function that handles a batch of messages runs each command through its own [`Baton`],
//! whose lifecycle events and timers are held here instead of sent at once. When the batch is
//! done, [`Outbox::flush`] publishes every held event in as few `PutEvents` as fit and arms every
//! held timer in as few sends: a batch of ten dispatches makes one or two requests to the bus,
//! not ten. Everything held was decided after its commit, as before; the command's message is
//! acknowledged only if what it held went out, else it is delivered again, and its command,
//! meeting its own write, repeats them (events and timers are at least once).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use baton_domain::{Cascade, ControlEvent, Event, Timer};
use chrono::Duration;

use crate::ports::{EventBus, InfraError, TimerQueue};
use crate::service::Baton;

/// What the commands of one batch hold, by the message each came from.
pub struct Outbox {
    bus: Arc<dyn EventBus>,
    timers: Arc<dyn TimerQueue>,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    events: Vec<(String, Vec<Event>)>,
    timers: Vec<(String, Timer, Duration)>,
}

impl Outbox {
    /// An empty outbox that sends through `baton`'s bus and timer queue.
    pub fn new(baton: &Baton) -> Arc<Self> {
        let (bus, timers) = baton.senders();
        Arc::new(Self {
            bus,
            timers,
            held: Mutex::default(),
        })
    }

    /// `baton` with its lifecycle events and timers held here as `message`'s. Control
    /// announcements and cascades go out at once.
    pub fn holding(self: &Arc<Self>, baton: &Baton, message: &str) -> Baton {
        let holder = Arc::new(Holder {
            outbox: Arc::clone(self),
            message: message.to_owned(),
        });
        baton.sending_through(holder.clone(), holder)
    }

    /// Sends what is held; answers the messages whose events or timers could not all be sent,
    /// each with its first error, in the order they were held.
    pub async fn flush(&self) -> Vec<(String, InfraError)> {
        let held = std::mem::take(&mut *self.held.lock().unwrap());
        let (owners, groups): (Vec<String>, Vec<Vec<Event>>) = held.events.into_iter().unzip();
        let published = self.bus.publish_groups(&groups).await;
        let (timer_owners, timers): (Vec<String>, Vec<(Timer, Duration)>) = held
            .timers
            .into_iter()
            .map(|(owner, timer, delay)| (owner, (timer, delay)))
            .unzip();
        let armed = self.timers.arm_each(&timers).await;
        let mut failed: Vec<(String, InfraError)> = Vec::new();
        let answers = owners.into_iter().zip(published);
        for (owner, answer) in answers.chain(timer_owners.into_iter().zip(armed)) {
            if let Err(error) = answer
                && !failed.iter().any(|(seen, _)| *seen == owner)
            {
                failed.push((owner, error));
            }
        }
        failed
    }
}

/// One message's side of an [`Outbox`]: the bus and timer queue its command is given.
struct Holder {
    outbox: Arc<Outbox>,
    message: String,
}

#[async_trait]
impl EventBus for Holder {
    async fn publish(&self, events: &[Event]) -> Result<(), InfraError> {
        let mut held = self.outbox.held.lock().unwrap();
        held.events.push((self.message.clone(), events.to_vec()));
        Ok(())
    }

    async fn announce(&self, event: &ControlEvent) -> Result<(), InfraError> {
        self.outbox.bus.announce(event).await
    }

    async fn cascade(&self, cascade: &Cascade) -> Result<(), InfraError> {
        self.outbox.bus.cascade(cascade).await
    }
}

#[async_trait]
impl TimerQueue for Holder {
    async fn arm(&self, timer: &Timer, delay: Duration) -> Result<(), InfraError> {
        let mut held = self.outbox.held.lock().unwrap();
        held.timers
            .push((self.message.clone(), timer.clone(), delay));
        Ok(())
    }
}
