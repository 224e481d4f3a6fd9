//! The `sweeper` Lambda function: wiring only; the behaviour is in `lib.rs`.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    baton_aws::lambda::init_tracing();
    let baton = baton_aws::baton_from_env().await?;
    let baton = &baton;
    lambda_runtime::run(service_fn(
        move |scheduled: LambdaEvent<Value>| async move {
            let deadline = scheduled.context.deadline();
            Ok::<_, lambda_runtime::Error>(baton_fn_sweeper::handle(baton, deadline).await?)
        },
    ))
    .await
}
