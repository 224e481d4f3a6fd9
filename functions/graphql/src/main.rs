//! The `graphql` Lambda function: wiring only; the behaviour is in `lib.rs`.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    baton_aws::lambda::init_tracing();
    let schema = baton_graphql::schema(baton_aws::baton_from_env().await?);
    let schema = &schema;
    lambda_http::run(lambda_http::service_fn(move |request| {
        baton_fn_graphql::handle(schema, request)
    }))
    .await
}
