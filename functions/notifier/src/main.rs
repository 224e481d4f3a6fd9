//! The `notifier` Lambda function: wiring only; the behaviour is in `lib.rs`.

use std::convert::Infallible;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    baton_aws::lambda::init_tracing();
    let live: &'static _ = Box::leak(Box::new(baton_fn_graphql::gateway_from_env().await?.live));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, Infallible>(baton_fn_notifier::handle(live, event.payload).await)
    }))
    .await
}
