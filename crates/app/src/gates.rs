//! What gates one batch of dispatches: the kill switches and each project's controls, as the
//! batch reads them.
//!
//! A dispatch's write names only its task and one lane of its project's slots, so no item is
//! written or checked by every dispatch of the deployment, nor by every dispatch of a project.
//! What the write does not check is read instead, strongly consistent, once per batch: each
//! switch, and each project's controls (its limit and lanes, its pause, whether tasks wait in
//! its ready set), when the batch's first due task needs it. The guarantee this gives: once
//! `engageKillSwitch`, `pauseProject` or `setProjectLimit` has returned, every batch that reads
//! afterwards honours it; a batch that read before may still start its remaining due tasks (at
//! most a batch, within the same invocation). A missing switch stops dispatch as an engaged one
//! does, and a switch or project that cannot be read fails the dispatch, which is retried:
//! nothing starts unchecked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use baton_domain::{Controls, Gate, KillSwitch, ProjectId, Scope, Tenant};

use crate::ports::{InfraError, KillSwitches, ProjectControls};

/// The switches and project controls one batch has read, each once.
#[derive(Default)]
pub struct Gates {
    read: Mutex<HashMap<Scope, KillSwitch>>,
    controls: Mutex<HashMap<(Tenant, ProjectId), Controls>>,
}

/// This process's next turn round a project's lanes; it starts where the operating system's
/// random source puts it, so processes starting together spread over the lanes too.
static TURN: AtomicU32 = AtomicU32::new(u32::MAX);

/// The lane turn for the next task this process starts.
pub(crate) fn next_turn() -> u32 {
    if TURN.load(Ordering::Relaxed) == u32::MAX {
        let mut seed = [0u8; 4];
        // Without the random source every process starts at lane 0: even, only less spread.
        let _ = getrandom::fill(&mut seed);
        let _ = TURN.compare_exchange(
            u32::MAX,
            u32::from_le_bytes(seed) >> 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    TURN.fetch_add(1, Ordering::Relaxed)
}

impl Gates {
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

    /// `tenant`'s `project`'s controls, as this batch first read them.
    pub async fn controls(
        &self,
        store: &dyn ProjectControls,
        tenant: &Tenant,
        project: &ProjectId,
    ) -> Result<Controls, InfraError> {
        let key = (tenant.clone(), project.clone());
        if let Some(known) = self.controls.lock().unwrap().get(&key) {
            return Ok(known.clone());
        }
        let read = store.controls(tenant, project).await?;
        Ok(self
            .controls
            .lock()
            .unwrap()
            .entry(key)
            .or_insert(read)
            .clone())
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
