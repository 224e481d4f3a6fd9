//! The `http-executor` Lambda function: wiring only; the behaviour is in `lib.rs`.

use std::sync::Arc;

use baton_aws::emf::EmfMetrics;
use baton_aws::lambda::{init_tracing, serve_batches_until};
use baton_fn_http_executor::{Executor, handle};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let settings = baton_aws::Settings::from_env()?;
    let sdk = baton_aws::sdk_config().await;
    let bus = baton_aws::EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&sdk), &settings.bus);
    let executor: &'static Executor = Box::leak(Box::new(Executor::from_env(bus)?));
    serve_batches_until(executor, Arc::new(EmfMetrics::from_env()), handle).await
}
