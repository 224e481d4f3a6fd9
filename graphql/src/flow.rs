//! Flow control in the schema: project limits, pause/resume and kill switches, and the types that
//! show them.

use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};
use baton_app::{Baton, Caller, ControlError, Operator};
use baton_domain::{ProjectId, Scope};
use chrono::{DateTime, Utc};

use crate::{caller, error, internal, invalid, parse_project};

/// The most history entries of a kill switch one query lists.
const MAX_HISTORY: i32 = 100;

/// What keeps a due task from starting.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "baton_domain::Gate")]
pub enum Gate {
    /// Its project runs as many tasks as its limit allows.
    Capacity,
    /// Its project is paused.
    Paused,
    /// The global kill switch is engaged (or missing).
    GlobalKillSwitch,
    /// Its project's kill switch is engaged (or missing).
    ProjectKillSwitch,
}

/// Why a due task waits in its project's ready set, and since when.
#[derive(SimpleObject)]
pub struct Parked {
    /// What holds it back.
    pub gate: Gate,
    /// Since when it waits.
    pub since: DateTime<Utc>,
}

impl From<baton_domain::Parked> for Parked {
    fn from(parked: baton_domain::Parked) -> Self {
        Self {
            gate: parked.gate.into(),
            since: parked.since,
        }
    }
}

/// Who changed a control, why and when.
#[derive(SimpleObject, Clone)]
pub struct ControlChange {
    /// The caller's identity (their token's `sub`).
    pub by: String,
    /// Their reason.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl From<baton_domain::Change> for ControlChange {
    fn from(change: baton_domain::Change) -> Self {
        Self {
            by: change.by,
            reason: change.reason,
            at: change.at,
        }
    }
}

/// One change of a kill switch.
#[derive(SimpleObject)]
pub struct KillSwitchChange {
    /// Whether it was engaged by this change.
    pub engaged: bool,
    /// Who, why, when.
    pub change: ControlChange,
}

/// Which kill switch: give exactly one of `global: true` or `projectId`.
#[derive(InputObject)]
pub struct KillSwitchScope {
    /// The global switch, which stops every dispatch of every tenant (needs the `baton:admin`
    /// scope to turn).
    pub global: Option<bool>,
    /// One of the caller's projects.
    pub project_id: Option<String>,
}

impl KillSwitchScope {
    fn scope(&self, caller: &Caller) -> async_graphql::Result<Scope> {
        match (self.global, &self.project_id) {
            (Some(true), None) => Ok(Scope::Global),
            (None | Some(false), Some(project)) => Ok(Scope::Project {
                tenant: caller.tenant.clone(),
                project: parse_project(project)?,
            }),
            _ => Err(invalid(
                "scope",
                "give exactly one of `global: true` or `projectId`",
            )),
        }
    }
}

/// A kill switch. Dispatch checks it inside the dispatch transaction: engaged, missing or
/// unreadable, nothing starts. Held tasks stay Scheduled and start once it is disengaged.
pub struct KillSwitch {
    scope: Scope,
    state: Option<baton_domain::KillSwitch>,
}

impl KillSwitch {
    pub(crate) fn new(scope: Scope, state: Option<baton_domain::KillSwitch>) -> Self {
        Self { scope, state }
    }

    /// Whether who turned it and why is kept from `caller`: the global switch's changes are
    /// operators' business; a tenant sees its own projects' changes.
    fn hidden_from(&self, caller: &Caller) -> bool {
        self.scope == Scope::Global && !caller.admin
    }
}

/// The refusal of `what` to a caller without the `baton:admin` scope.
fn forbidden(what: &str) -> async_graphql::Error {
    error(
        "FORBIDDEN",
        format!("{what} needs the `{}` scope", crate::auth::ADMIN_SCOPE),
    )
}

#[Object]
impl KillSwitch {
    /// `global`, or the project's id.
    async fn scope(&self) -> &str {
        match &self.scope {
            Scope::Global => "global",
            Scope::Project { project, .. } => project.as_str(),
        }
    }

    /// Whether it stops dispatch: engaged, or missing.
    async fn engaged(&self) -> bool {
        self.state.as_ref().is_none_or(|state| state.engaged)
    }

    /// Whether the switch exists. A missing switch stops dispatch until it is set again.
    async fn present(&self) -> bool {
        self.state.is_some()
    }

    /// The change that put it in its state: null when missing, and for the global switch
    /// unless the caller is an operator (`baton:admin`), since operators' names and reasons are
    /// theirs to see.
    async fn last_change(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ControlChange>> {
        if self.hidden_from(caller(ctx)?) {
            return Ok(None);
        }
        Ok(self.state.as_ref().map(|state| state.last.clone().into()))
    }

    /// Its changes, newest first. The global switch's only for operators (`FORBIDDEN`
    /// otherwise).
    async fn history(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, desc = "How many, 1 to 100.")] first: i32,
    ) -> async_graphql::Result<Vec<KillSwitchChange>> {
        if self.hidden_from(caller(ctx)?) {
            return Err(forbidden("the global kill switch's history"));
        }
        if !(1..=MAX_HISTORY).contains(&first) {
            return Err(invalid(
                "first",
                format!("first must be 1 to {MAX_HISTORY}"),
            ));
        }
        let history = ctx
            .data_unchecked::<Baton>()
            .kill_switch_history(&self.scope, first as usize)
            .await
            .map_err(internal)?;
        Ok(history
            .into_iter()
            .map(|switch| KillSwitchChange {
                engaged: switch.engaged,
                change: switch.last.into(),
            })
            .collect())
    }
}

/// A project's tasks by status and its flow controls.
pub struct ProjectStatus {
    tenant: baton_domain::Tenant,
    project: ProjectId,
    status: baton_app::ProjectStatus,
}

impl ProjectStatus {
    pub(crate) fn new(
        tenant: baton_domain::Tenant,
        project: ProjectId,
        status: baton_app::ProjectStatus,
    ) -> Self {
        Self {
            tenant,
            project,
            status,
        }
    }
}

/// How many tasks are in one status.
#[derive(SimpleObject)]
pub struct StatusCount {
    /// The status.
    pub status: crate::TaskStatus,
    /// How many tasks are in it.
    pub count: u64,
}

#[Object]
impl ProjectStatus {
    /// The project.
    async fn project_id(&self) -> &str {
        self.project.as_str()
    }

    /// One count per status, every status listed.
    async fn counts(&self) -> Vec<StatusCount> {
        self.status
            .counts
            .iter()
            .map(|&(status, count)| StatusCount {
                status: status.into(),
                count,
            })
            .collect()
    }

    /// All of the project's tasks.
    async fn total(&self) -> u64 {
        self.status.total()
    }

    /// Tasks running now; each holds one of the project's slots.
    async fn running(&self) -> u64 {
        self.status.count(baton_domain::Status::Running)
    }

    /// Slots held for tasks admitted from the ready set that have not started yet: with
    /// `running`, what the limit counts, so a task that comes due meanwhile cannot take them.
    async fn reserved(&self) -> u64 {
        self.status.reserved
    }

    /// How many tasks may run at once (default 10).
    async fn limit(&self) -> u32 {
        self.status.limit
    }

    /// Due tasks waiting in the ready set (for a slot, or for a pause or kill switch to end).
    async fn queued(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        ctx.data_unchecked::<Baton>()
            .queued(&self.tenant, &self.project)
            .await
            .map_err(internal)
    }

    /// What holds its due tasks back right now, the first a dispatch meets: the global kill
    /// switch, the project's, its pause, its limit (null: they start).
    async fn held_by(&self) -> Option<Gate> {
        self.status.gate().map(Into::into)
    }

    /// Whether it is paused.
    async fn paused(&self) -> bool {
        self.status.paused.is_some()
    }

    /// Who paused it, why and when (null while it runs).
    async fn pause(&self) -> Option<ControlChange> {
        self.status.paused.clone().map(Into::into)
    }

    /// The global kill switch.
    async fn global_kill_switch(&self) -> KillSwitch {
        KillSwitch::new(Scope::Global, self.status.global_switch.clone())
    }

    /// The project's kill switch.
    async fn kill_switch(&self) -> KillSwitch {
        let scope = Scope::Project {
            tenant: self.tenant.clone(),
            project: self.project.clone(),
        };
        KillSwitch::new(scope, self.status.project_switch.clone())
    }
}

fn control_error(error: ControlError) -> async_graphql::Error {
    match error {
        ControlError::Invalid { field, message } => invalid(field, message),
        ControlError::Infra(infra) => internal(infra),
    }
}

fn operator<'a>(caller: &'a Caller, reason: &'a str) -> Operator<'a> {
    Operator {
        by: &caller.subject,
        reason,
    }
}

/// Reads a kill switch of the caller's.
pub(crate) async fn kill_switch(
    ctx: &Context<'_>,
    caller: &Caller,
    scope: &KillSwitchScope,
) -> async_graphql::Result<KillSwitch> {
    let scope = scope.scope(caller)?;
    let state = ctx
        .data_unchecked::<Baton>()
        .kill_switch(&scope)
        .await
        .map_err(internal)?;
    Ok(KillSwitch::new(scope, state))
}

/// Engages or disengages a kill switch; the global one only for operators.
pub(crate) async fn set_kill_switch(
    ctx: &Context<'_>,
    caller: &Caller,
    scope: &KillSwitchScope,
    engaged: bool,
    reason: &str,
) -> async_graphql::Result<KillSwitch> {
    let scope = scope.scope(caller)?;
    if scope == Scope::Global && !caller.admin {
        return Err(forbidden("the global kill switch"));
    }
    let switch = ctx
        .data_unchecked::<Baton>()
        .set_kill_switch(&scope, engaged, &operator(caller, reason))
        .await
        .map_err(control_error)?;
    Ok(KillSwitch::new(scope, Some(switch)))
}

/// What a project control does.
pub(crate) enum ProjectControl {
    Pause,
    Resume { rate: i32 },
    Limit(i32),
}

/// Turns a control of one of the caller's projects and answers its status after.
pub(crate) async fn control_project(
    ctx: &Context<'_>,
    caller: &Caller,
    project_id: &str,
    control: ProjectControl,
    reason: &str,
) -> async_graphql::Result<ProjectStatus> {
    let project = parse_project(project_id)?;
    let baton = ctx.data_unchecked::<Baton>();
    let operator = operator(caller, reason);
    let tenant = &caller.tenant;
    let status = match control {
        ProjectControl::Pause => baton.pause(tenant, &project, &operator).await,
        ProjectControl::Resume { rate } => {
            let rate = u32::try_from(rate).unwrap_or(0);
            baton.resume(tenant, &project, &operator, rate).await
        }
        ProjectControl::Limit(limit) => {
            let limit = u32::try_from(limit).unwrap_or(0);
            baton.set_limit(tenant, &project, limit, &operator).await
        }
    }
    .map_err(control_error)?;
    Ok(ProjectStatus::new(tenant.clone(), project, status))
}
