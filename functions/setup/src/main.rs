//! The `setup` Lambda function (a CloudFormation custom resource): wiring only; the behaviour is
//! in `lib.rs`.

use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    baton_aws::lambda::init_tracing();
    let sdk = baton_aws::sdk_config().await;
    let store = baton_aws::DynamoStore::from_env(&sdk)?;
    let http = reqwest::Client::new();
    let (store, http) = (&store, &http);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<baton_fn_setup::Request>| async move {
            baton_fn_setup::handle(store, http, event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
