//! A batch's outbound messages, sent together once its commands are done.
//!
//! A function that handles a batch of messages runs each command through its own [`Baton`],
//! whose lifecycle events and timers are held here instead of sent at once. When the batch is
//! done, [`Outbox::flush`] publishes every held event in as few `PutEvents` as fit and arms every
//! held timer in as few sends: a batch of ten dispatches makes one or two requests to the bus,
//! not ten. Everything held was decided after its commit, as before; the command's message is
//! acknowledged only if what it held went out, else it is delivered again, and its command,
//! meeting its own write, repeats them (events and timers are at least once).
//!
//! A slot given back admits from its project's ready set if anything waits there, which takes
//! a read of the project's drain. That read is held too: after the batch's commits, each
//! project whose slots the batch gave back is read once and admits once, and a message whose
//! admission failed is delivered again (its command repeats it).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use baton_domain::{Cascade, ControlEvent, Event, ProjectId, Tenant, Timer};
use chrono::Duration;

use crate::ports::{EventBus, InfraError, TimerQueue};
use crate::service::Baton;

/// What the commands of one batch hold, by the message each came from.
pub struct Outbox {
    /// The batch's service, which sends at once.
    baton: Baton,
    bus: Arc<dyn EventBus>,
    timers: Arc<dyn TimerQueue>,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    events: Vec<(String, Vec<Event>)>,
    timers: Vec<(String, Timer, Duration)>,
    admissions: Vec<(String, Tenant, ProjectId)>,
}

/// Where a command sends the admission a slot it gave back calls for: none, at once; a batch's
/// outbox, when the batch is done.
pub(crate) trait Admissions: Send + Sync {
    /// Holds the admission of `tenant`'s `project`.
    fn hold(&self, tenant: &Tenant, project: &ProjectId);
}

impl Outbox {
    /// An empty outbox that sends through `baton`'s bus and timer queue.
    pub fn new(baton: &Baton) -> Arc<Self> {
        let (bus, timers) = baton.senders();
        Arc::new(Self {
            baton: baton.clone(),
            bus,
            timers,
            held: Mutex::default(),
        })
    }

    /// `baton` with its lifecycle events, timers and admissions held here as `message`'s.
    /// Control announcements and cascades go out at once.
    pub fn holding(self: &Arc<Self>, baton: &Baton, message: &str) -> Baton {
        let holder = Arc::new(Holder {
            outbox: Arc::clone(self),
            message: message.to_owned(),
        });
        baton.sending_through(holder.clone(), holder.clone(), holder)
    }

    /// Sends what is held, then admits once into each project whose slots were given back;
    /// answers the messages whose events, timers or admissions did not all go out, each with
    /// its first error, in the order they were held.
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
        let mut answers: Vec<(String, Result<(), InfraError>)> =
            answers.chain(timer_owners.into_iter().zip(armed)).collect();
        let mut admitted: Vec<(&Tenant, &ProjectId, Result<(), InfraError>)> = Vec::new();
        for (owner, tenant, project) in &held.admissions {
            let done = admitted
                .iter()
                .find(|(t, p, _)| *t == tenant && *p == project);
            let answer = match done {
                Some((_, _, answer)) => answer.as_ref().map_err(InfraError::shared).copied(),
                None => {
                    let answer = self.baton.admit_released(tenant, project).await;
                    let shared = answer.as_ref().map_err(InfraError::shared).copied();
                    admitted.push((tenant, project, answer));
                    shared
                }
            };
            answers.push((owner.clone(), answer));
        }
        for (owner, answer) in answers {
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

impl Admissions for Holder {
    fn hold(&self, tenant: &Tenant, project: &ProjectId) {
        let mut held = self.outbox.held.lock().unwrap();
        held.admissions
            .push((self.message.clone(), tenant.clone(), project.clone()));
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
