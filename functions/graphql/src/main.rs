//! The `graphql` Lambda function: wiring only; the behaviour is in `lib.rs`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    baton_aws::lambda::init_tracing();
    let gateway = baton_fn_graphql::gateway_from_env().await?;
    let gateway = &gateway;
    lambda_http::run(lambda_http::service_fn(move |request| {
        baton_fn_graphql::handle(gateway, request)
    }))
    .await
}
