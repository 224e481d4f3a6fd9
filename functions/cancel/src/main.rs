//! The `cancel` Lambda function: wiring only; the behaviour is in `lib.rs`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    baton_aws::lambda::run_sqs_consumer(baton_fn_cancel::handle).await
}
