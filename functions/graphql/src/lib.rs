//! The `graphql` gateway behind an API Gateway HTTP API (payload v2): POST runs a GraphQL request,
//! GET serves GraphiQL. The caller's tenant comes from the `x-baton-tenant` header.

use async_graphql::http::GraphiQLSource;
use baton_domain::Tenant;
use baton_graphql::{BatonSchema, Caller};
use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Error, Request, Response};

/// The header naming the caller's tenant.
pub const TENANT_HEADER: &str = "x-baton-tenant";

/// Answers one HTTP request.
pub async fn handle(schema: &BatonSchema, request: Request) -> Result<Response<Body>, Error> {
    match *request.method() {
        Method::GET => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            GraphiQLSource::build().endpoint("graphql").finish(),
        ),
        Method::POST => {
            let query: async_graphql::Request = match serde_json::from_slice(request.body()) {
                Ok(query) => query,
                Err(e) => {
                    let body = serde_json::json!({"errors": [{
                        "message": format!("the body is not a GraphQL request: {e}"),
                        "extensions": {"code": "BAD_REQUEST"}
                    }]});
                    return respond(
                        StatusCode::BAD_REQUEST,
                        "application/json",
                        body.to_string(),
                    );
                }
            };
            let caller = request
                .headers()
                .get(TENANT_HEADER)
                .and_then(|value| value.to_str().ok())
                .and_then(|tenant| Tenant::parse(tenant).ok())
                .map(Caller);
            let query = match caller {
                Some(caller) => query.data(caller),
                None => query,
            };
            let response = schema.execute(query).await;
            respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&response)?,
            )
        }
        _ => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET or POST".to_owned(),
        ),
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::Text(body))?)
}
