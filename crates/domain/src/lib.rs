//! Baton's domain: what a task is, which commands move it, and the pure `decide` function that holds
//! every business rule of the lifecycle. No I/O, no clock, no AWS: time comes in as an argument.

mod decide;
mod event;
mod flow;
mod graph;
mod ids;
mod payload;
mod submission;
mod task;

pub use decide::{Command, Decision, Effects, MAX_NOTES, Rejection, Timer, Transition, decide};
pub use event::{Event, EventKind};
pub use flow::{
    Change, ControlEvent, Controls, DEFAULT_CONCURRENCY_LIMIT, Gate, KillSwitch, LANE_SLOTS,
    MAX_CONCURRENCY_LIMIT, Parked, Scope, lanes_for,
};
pub use graph::{
    Artifact, Cascade, DependencyError, MAX_ARTIFACTS, MAX_DEPENDENCIES, MAX_DEPENDENTS,
    Provenance, Reach, Step, Taint, cancelled_by_rollback, check_dependencies,
};
pub use ids::{IdError, Lease, ProjectId, TaskId, Tenant, Tier};
pub use payload::{MAX_NESTING, check_payload, check_shape, stored_bytes};
pub use submission::{
    FieldError, Idempotency, InvalidSubmission, NewTask, RetryInput, SubmitRequest,
};
pub use task::{
    HistoryEntry, MAX_REASON_CHARS, MAX_RESULT_BYTES, Outcome, RetryPolicy, Status, Task,
    TaskError, check_reason,
};
