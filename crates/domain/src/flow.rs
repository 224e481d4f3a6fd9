//! Flow control: what may stop a due task from starting, and the controls operators turn.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ProjectId, Tenant};

/// Tasks a project may run at once unless its limit is set otherwise.
pub const DEFAULT_CONCURRENCY_LIMIT: u32 = 10;
/// The highest concurrency limit a project may have.
pub const MAX_CONCURRENCY_LIMIT: u32 = 10_000;
/// How many of a project's slots one lane holds at most: a project's slots are spread over
/// `ceil(limit / LANE_SLOTS)` lanes, each its own item, so no one item is written by every move
/// into or out of a slot (at the highest limit, 250 lanes).
pub const LANE_SLOTS: u32 = 40;

/// The lanes a project of `limit` spreads its slots over.
pub fn lanes_for(limit: u32) -> u16 {
    u16::try_from(limit.div_ceil(LANE_SLOTS).max(1)).unwrap_or(u16::MAX)
}

/// What decides whether a due task of a project may start, as one read of the project gives
/// it: a batch of dispatches reads it once, strongly consistent, and each dispatch's write
/// checks only its lane's share of the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controls {
    /// How many tasks may run at once.
    pub limit: u32,
    /// The lanes its slots have ever been spread over: its limit's lanes, or more where a
    /// higher limit spread them once (their tasks give their slots back to them).
    pub lanes: u16,
    /// Slots taken in the project's own count by tasks an earlier version started (that count
    /// held every slot before lanes); they are taken from the limit before it is shared.
    pub legacy: u64,
    /// Whether it is paused.
    pub paused: bool,
    /// Whether tasks wait in its ready set: a task that comes due joins them.
    pub waiting: bool,
}

impl Controls {
    /// The lanes new tasks start in: those its current limit needs.
    pub fn active_lanes(&self) -> u16 {
        lanes_for(self.limit).min(self.lanes.max(1))
    }

    /// How many tasks lane `lane` may hold (running, and held for admitted ones): its share of
    /// the limit left after the legacy count, the remainder going to the first lanes; nothing
    /// for a lane the limit no longer uses. The shares sum to the limit, so lanes each within
    /// their share keep the project within its limit.
    pub fn share(&self, lane: u16) -> u64 {
        let active = self.active_lanes();
        if lane >= active {
            return 0;
        }
        let available = u64::from(self.limit).saturating_sub(self.legacy);
        let (each, rest) = (available / u64::from(active), available % u64::from(active));
        each + u64::from(u64::from(lane) < rest)
    }

    /// The lane for a task's `turn`: turns taken one after another go round the lanes that have
    /// a share, so a project's moves spread evenly over them.
    pub fn lane(&self, turn: u32) -> u16 {
        let sharing = (0..self.active_lanes())
            .take_while(|&lane| self.share(lane) > 0)
            .count()
            .max(1);
        u16::try_from(turn as usize % sharing).unwrap_or(0)
    }
}

/// What kept a due task from starting.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn controls(limit: u32, lanes: u16, legacy: u64) -> Controls {
        Controls {
            limit,
            lanes,
            legacy,
            paused: false,
            waiting: false,
        }
    }

    #[test]
    fn lanes_grow_with_the_limit_and_their_shares_sum_to_it() {
        assert_eq!(lanes_for(1), 1);
        assert_eq!(lanes_for(LANE_SLOTS), 1);
        assert_eq!(lanes_for(LANE_SLOTS + 1), 2);
        assert_eq!(lanes_for(MAX_CONCURRENCY_LIMIT), 250);
        for (limit, legacy) in [(1, 0), (10, 3), (41, 0), (1000, 7), (10_000, 0), (5, 9)] {
            let controls = controls(limit, lanes_for(limit), legacy);
            let shares: u64 = (0..controls.lanes).map(|lane| controls.share(lane)).sum();
            assert_eq!(
                shares,
                u64::from(limit).saturating_sub(legacy),
                "{limit} {legacy}"
            );
            let (least, most) = (0..controls.lanes)
                .map(|lane| controls.share(lane))
                .fold((u64::MAX, 0), |(least, most), share| {
                    (least.min(share), most.max(share))
                });
            assert!(
                most - least <= 1 && most <= u64::from(LANE_SLOTS),
                "{limit}"
            );
        }
    }

    #[test]
    fn a_lowered_limit_shares_only_the_lanes_it_needs_and_turns_go_round_them() {
        // Spread over 250 lanes once, now limited to 50: two lanes share it, the rest hold
        // only what they ran before.
        let lowered = controls(50, 250, 0);
        assert_eq!(lowered.active_lanes(), 2);
        assert_eq!(
            (lowered.share(0), lowered.share(1), lowered.share(2)),
            (25, 25, 0)
        );
        let turns: Vec<u16> = (0..4).map(|turn| lowered.lane(turn)).collect();
        assert_eq!(turns, [0, 1, 0, 1]);
        // Three slots left after the legacy count, over two lanes: only lanes with a share
        // get turns; none left puts every turn in lane 0, whose share of nothing refuses it.
        let short = controls(45, 2, 44);
        assert_eq!((short.share(0), short.share(1)), (1, 0));
        assert!((0..5).all(|turn| short.lane(turn) == 0));
        let none = controls(10, 1, 12);
        assert_eq!((none.share(0), none.lane(7)), (0, 0));
    }
}
