//! The `notifier` Lambda function: wiring only; the behaviour is in `lib.rs`.

use std::sync::Arc;

use baton_aws::emf::EmfMetrics;
use baton_aws::lambda::{init_tracing, serve_batches};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let live: &'static _ = Box::leak(Box::new(baton_fn_graphql::gateway_from_env().await?.live));
    let metrics = Arc::new(EmfMetrics::from_env());
    serve_batches(live, metrics, baton_fn_notifier::handle).await
}
