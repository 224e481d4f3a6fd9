//! Baton's application layer: the ports its adapters implement and the service that runs every
//! command through load → decide → commit → perform. No AWS here either: adapters live in
//! `baton-aws`, in-memory ones in [`memory`].

pub mod dead_letters;
#[cfg(feature = "testing")]
pub mod faults;
mod gates;
mod graph;
pub mod memory;
mod outbox;
mod ports;
mod service;

pub use gates::Gates;
pub use graph::{
    Direction, GraphError, Lineage, MAX_GRAPH_NODES, MAX_LINEAGE_DEPTH, RollbackPreview,
};
pub use outbox::Outbox;
pub use ports::{
    Caller, Clock, Commit, Connection, Connections, Created, Delivery, Drain, EventBus, Hold,
    InfraError, KillSwitches, Metrics, ModelQuery, NoMetrics, Page, ProjectControls, ProjectStatus,
    Push, ReadySet, Reservation, Store, Subscription, SystemClock, TaskQuery, TaskStore,
    TimerQueue, Wake, WakeKind, Watch, draw_lease,
};
pub use service::{
    ADMIT_RATE, Baton, ControlError, DRAIN_INTERVAL, Handled, MAX_ADMIT_RATE, MAX_TIMER_DELAY,
    Operator, SWEEP_LIMIT, Start, SubmitError, Submitted, SweepReport, TIMER_GRACE,
};
