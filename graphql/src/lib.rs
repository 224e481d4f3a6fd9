//! Baton's GraphQL schema: object types are views over domain values; every error a client sees
//! carries a stable `extensions.code`. Transports (the Lambda gateway) stay thin.

mod types;

use async_graphql::{Context, EmptySubscription, ErrorExtensions, ID, Object, Schema};
use baton_app::{Baton, Handled, InfraError, SubmitError, TaskQuery};
use baton_domain::{Command, ProjectId, SubmitRequest, TaskId, Tenant};
use tracing::error;

pub use types::{SubmitTaskInput, Task, TaskConnection};

/// The schema type.
pub type BatonSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Largest page `tasks` returns.
pub const MAX_PAGE: i32 = 100;

/// Builds the schema over `baton`.
pub fn schema(baton: Baton) -> BatonSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(baton)
        .limit_depth(12)
        .limit_complexity(500)
        .finish()
}

/// The schema in SDL, as checked in at the top level as `schema.graphql`.
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .finish()
        .sdl()
}

/// The calling tenant, as the transport established it. Add it to a request's data.
#[derive(Debug, Clone)]
pub struct Caller(pub Tenant);

fn error(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

fn internal(infra: InfraError) -> async_graphql::Error {
    error!(error = ?infra, "infrastructure failure");
    error("INTERNAL", "internal error; try again")
}

fn caller<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Tenant> {
    ctx.data_opt::<Caller>()
        .map(|caller| &caller.0)
        .ok_or_else(|| {
            error(
                "UNAUTHENTICATED",
                "no tenant: send the x-baton-tenant header",
            )
        })
}

fn parse_id(id: &ID) -> async_graphql::Result<TaskId> {
    TaskId::parse(id)
        .map_err(|e| error("INVALID_INPUT", e.to_string()).extend_with(|_, x| x.set("field", "id")))
}

/// Queries.
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// One task of the caller's, or null when there is none with this id.
    async fn task(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Task>> {
        let tenant = caller(ctx)?;
        let baton = ctx.data_unchecked::<Baton>();
        let task = baton
            .task(tenant, &parse_id(&id)?)
            .await
            .map_err(internal)?;
        Ok(task.map(Task))
    }

    /// A project's tasks, newest first, as a Relay connection.
    async fn tasks(
        &self,
        ctx: &Context<'_>,
        project_id: String,
        status: Option<types::TaskStatus>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<TaskConnection> {
        let tenant = caller(ctx)?;
        let project = ProjectId::parse(&project_id).map_err(|e| {
            error("INVALID_INPUT", e.to_string()).extend_with(|_, x| x.set("field", "projectId"))
        })?;
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(
                error("INVALID_INPUT", format!("first must be 1 to {MAX_PAGE}"))
                    .extend_with(|_, x| x.set("field", "first")),
            );
        }
        let after = after.map(|cursor| parse_id(&ID(cursor))).transpose()?;
        let query = TaskQuery {
            tenant: tenant.clone(),
            project,
            status: status.map(Into::into),
            first: first as usize,
            after,
        };
        let page = ctx
            .data_unchecked::<Baton>()
            .tasks(&query)
            .await
            .map_err(internal)?;
        Ok(TaskConnection::from(page))
    }
}

/// Mutations.
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Submits a task. Invalid input fails with `INVALID_INPUT`, naming every wrong field.
    async fn submit_task(
        &self,
        ctx: &Context<'_>,
        input: SubmitTaskInput,
    ) -> async_graphql::Result<Task> {
        let tenant = caller(ctx)?;
        let request = SubmitRequest {
            tenant: Some(tenant.to_string()),
            ..input.into()
        };
        let id = TaskId::from_uuid(uuid::Uuid::now_v7());
        match ctx.data_unchecked::<Baton>().submit(&request, id).await {
            Ok(submitted) => Ok(Task(submitted.task)),
            Err(SubmitError::Invalid(invalid)) => {
                let fields: Vec<String> = invalid.0.iter().map(|e| e.field.clone()).collect();
                Err(
                    error("INVALID_INPUT", invalid.to_string()).extend_with(|_, x| {
                        x.set("field", fields[0].clone());
                        x.set("fields", fields.clone());
                    }),
                )
            }
            Err(SubmitError::Infra(infra)) => Err(internal(infra)),
        }
    }

    /// Cancels an unfinished task; cancelling a cancelled task returns it unchanged.
    async fn cancel_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<Task> {
        let tenant = caller(ctx)?;
        let command = Command::Cancel {
            reason: reason.unwrap_or_else(|| "cancelled by a client".to_owned()),
        };
        let handled = ctx
            .data_unchecked::<Baton>()
            .execute(tenant, &parse_id(&id)?, &command)
            .await
            .map_err(internal)?;
        match handled {
            Handled::Applied(task) | Handled::AlreadyApplied(task) => Ok(Task(*task)),
            Handled::NotFound => Err(error("NOT_FOUND", format!("no task {}", id.as_str()))),
            // Only a finished task refuses a cancel.
            Handled::Rejected(rejection) | Handled::LostRace(rejection) => {
                Err(error("INVALID_TRANSITION", rejection.to_string()))
            }
            Handled::Rearmed(_) => Err(error("INTERNAL", "unexpected outcome")),
        }
    }
}
