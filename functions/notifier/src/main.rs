//! The `notifier` Lambda function (fed by the task table's stream): wiring only; the behaviour is
//! in `lib.rs`.

use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    baton_aws::lambda::init_tracing();
    let live = &baton_fn_graphql::gateway_from_env().await?.live;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            baton_fn_notifier::handle(live, &event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
