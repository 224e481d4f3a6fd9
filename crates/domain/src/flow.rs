//! Flow control: what may stop a due task from starting, and the controls operators turn.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ProjectId, Tenant};

/// Tasks a project may run at once unless its limit is set otherwise.
pub const DEFAULT_CONCURRENCY_LIMIT: u32 = 10;
/// The highest concurrency limit a project may have.
pub const MAX_CONCURRENCY_LIMIT: u32 = 10_000;

/// What kept a due task from starting. The dispatch transaction checks all of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Gate {
    /// The project runs as many tasks as its limit allows.
    Capacity,
    /// The project is paused.
    Paused,
    /// The global kill switch is engaged, missing or unreadable.
    GlobalKillSwitch,
    /// The project's kill switch is engaged, missing or unreadable.
    ProjectKillSwitch,
}

impl Gate {
    /// The stored and wire name, e.g. `PROJECT_KILL_SWITCH`.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Capacity => "CAPACITY",
            Gate::Paused => "PAUSED",
            Gate::GlobalKillSwitch => "GLOBAL_KILL_SWITCH",
            Gate::ProjectKillSwitch => "PROJECT_KILL_SWITCH",
        }
    }
}

/// A due task that waits in its project's ready set instead of running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    /// What stopped it.
    pub gate: Gate,
    /// Since when it waits.
    pub since: DateTime<Utc>,
}

/// Which kill switch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scope {
    /// The one that stops every dispatch of every tenant.
    Global,
    /// One project's.
    Project {
        /// The project's owner.
        tenant: Tenant,
        /// The project.
        project: ProjectId,
    },
}

/// Who changed a control, why, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The caller's identity.
    pub by: String,
    /// Their reason.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A kill switch's state. A switch that does not exist stops dispatch like an engaged one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    /// Whether it stops dispatch.
    pub engaged: bool,
    /// The change that put it in this state.
    pub last: Change,
}

/// A control an operator turned, as announced on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "control", rename_all = "snake_case")]
pub enum ControlEvent {
    /// A kill switch was engaged or disengaged.
    KillSwitch {
        /// Which one.
        scope: Scope,
        /// Its new state.
        engaged: bool,
        /// Who, why, when.
        #[serde(flatten)]
        change: Change,
    },
    /// A project was paused or resumed.
    Pause {
        /// The project's owner.
        tenant: Tenant,
        /// The project.
        project: ProjectId,
        /// Whether it is paused now.
        paused: bool,
        /// Who, why, when.
        #[serde(flatten)]
        change: Change,
    },
    /// A project's concurrency limit was set.
    Limit {
        /// The project's owner.
        tenant: Tenant,
        /// The project.
        project: ProjectId,
        /// The new limit.
        limit: u32,
        /// Who, why, when.
        #[serde(flatten)]
        change: Change,
    },
}

impl ControlEvent {
    /// The EventBridge `detail-type`.
    pub fn detail_type(&self) -> &'static str {
        match self {
            ControlEvent::KillSwitch { .. } => "KillSwitchChanged",
            ControlEvent::Pause { .. } | ControlEvent::Limit { .. } => "ProjectControlChanged",
        }
    }

    /// The resource it is about, e.g. `baton:project:acme/reports`.
    pub fn resource(&self) -> String {
        match self {
            ControlEvent::KillSwitch {
                scope: Scope::Global,
                ..
            } => "baton:kill-switch:global".to_owned(),
            ControlEvent::KillSwitch {
                scope: Scope::Project { tenant, project },
                ..
            }
            | ControlEvent::Pause {
                tenant, project, ..
            }
            | ControlEvent::Limit {
                tenant, project, ..
            } => format!("baton:project:{tenant}/{project}"),
        }
    }
}
