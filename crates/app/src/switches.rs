//! The kill switches as one batch of dispatches sees them.
//!
//! A dispatch's write names only its task and its project, so no item is written or checked by
//! every dispatch of the deployment. The switches are read instead, strongly consistent, once per
//! batch: each switch when the batch's first due task needs it. The guarantee this gives: once
//! `engageKillSwitch` has returned, every batch that reads the switch afterwards starts nothing; a
//! batch that read it before may still start its remaining due tasks (at most a batch, within the
//! same invocation). A missing switch stops dispatch as an engaged one does, and one that cannot
//! be read fails the dispatch, which is retried: nothing starts unchecked.

use std::collections::HashMap;
use std::sync::Mutex;

use baton_domain::{Gate, KillSwitch, ProjectId, Scope, Tenant};

use crate::ports::{InfraError, KillSwitches};

/// The switches one batch has read, each once.
#[derive(Default)]
pub struct Switches {
    read: Mutex<HashMap<Scope, KillSwitch>>,
}

impl Switches {
    /// What stops a due task of `tenant`'s `project` from starting: the global switch, then the
    /// project's, engaged or missing. Reads each on its first use in this batch.
    pub async fn gate(
        &self,
        store: &dyn KillSwitches,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<Option<Gate>, InfraError> {
        let project = Scope::Project {
            tenant: tenant.clone(),
            project: project.clone(),
        };
        for (scope, gate) in [
            (Scope::Global, Gate::GlobalKillSwitch),
            (project, Gate::ProjectKillSwitch),
        ] {
            if self.stops(store, scope).await? {
                return Ok(Some(gate));
            }
        }
        Ok(None)
    }

    /// Whether the switch of `scope` stops dispatch, as this batch first read it. A missing
    /// switch is read again at each use: a project's first task puts its switch in the batch
    /// that reads it missing.
    async fn stops(&self, store: &dyn KillSwitches, scope: Scope) -> Result<bool, InfraError> {
        let known = self.read.lock().unwrap().get(&scope).cloned();
        let switch = match known {
            Some(switch) => switch,
            None => match store.kill_switch(&scope).await? {
                // A rival read of the same switch in this batch may have come first; either is
                // this batch's view.
                Some(switch) => self
                    .read
                    .lock()
                    .unwrap()
                    .entry(scope)
                    .or_insert(switch)
                    .clone(),
                None => return Ok(true),
            },
        };
        Ok(switch.engaged)
    }
}
