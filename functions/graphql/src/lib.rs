//! The `graphql` gateway. Behind an API Gateway HTTP API (payload v2): GET `/` serves the
//! dashboard, POST `/graphql` runs GraphQL requests, GET `/graphql` serves GraphiQL, GET `/health`
//! answers that the function runs and GET `/ready` whether the table and every queue answer,
//! with the global kill switch's state. Behind an API Gateway WebSocket API: `$connect`,
//! messages and `$disconnect` of graphql-transport-ws subscriptions. The caller comes from the
//! JWT authorizer's claims when one ran, else from a bearer token verified here.

use std::sync::Arc;

use async_graphql::futures_util::future::join_all;
use async_graphql::{BatchRequest, ServerError};
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequestContext;
use baton_app::{Baton, Caller, SystemClock};
use baton_aws::dlq::SqsDeadLetters;
use baton_domain::Scope;
use baton_graphql::auth::{AuthError, Verifier, bearer, caller_from_claims};
use baton_graphql::dashboard::{self, Endpoints};
use baton_graphql::live::{Connect, Handshake, Live, LiveLimits};
use baton_graphql::{BatonSchema, DeadLetterQueues, LIMITS, Options, limits};
use lambda_http::http::{Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use serde_json::{Value, json};
use tracing::{error, warn};

/// GraphiQL, loaded from unpkg by the browser: a page of our own rather than async-graphql's
/// template, whose template engine took 0.1 MB of the gateway's arm64 package (4.42 → 4.32 MB).
const GRAPHIQL: &str = include_str!("graphiql.html");

/// Everything the gateway serves with.
#[derive(Clone)]
pub struct Gateway {
    /// The schema.
    pub schema: BatonSchema,
    /// Subscriptions.
    pub live: Live,
    /// Checks bearer tokens where no authorizer did.
    pub verifier: Option<Verifier>,
    /// The service, for readiness.
    pub baton: Baton,
    /// The queues and DLQs readiness checks.
    pub queues: Arc<SqsDeadLetters>,
    /// The dashboard page, with this stack's subscription URL in it.
    pub dashboard: Arc<str>,
    /// The dashboard's Content-Security-Policy header.
    pub dashboard_policy: Arc<str>,
}

/// The gateway as the template configures it: the service, connections and pushes from the
/// environment; introspection only when `GRAPHQL_INTROSPECTION=true` (the local stage).
pub async fn gateway_from_env() -> Result<Gateway, Error> {
    let sdk = baton_aws::sdk_config().await;
    let settings = baton_aws::Settings::from_env()?;
    let baton = baton_aws::gateway_baton(&sdk, &settings, Arc::new(SystemClock));
    let introspection = std::env::var("GRAPHQL_INTROSPECTION").is_ok_and(|v| v == "true");
    let queues = Arc::new(SqsDeadLetters::from_env(&sdk)?);
    let dead_letters: DeadLetterQueues = queues.clone();
    let options = Options {
        introspection,
        dead_letters: Some(dead_letters),
    };
    let schema = baton_graphql::schema(baton.clone(), options);
    let verifier = Verifier::from_env()?;
    let (connections, push) = baton_aws::live(&sdk, &settings)?;
    let endpoints = Endpoints {
        graphql: None,
        websocket: baton_aws::subscriptions_url(&sdk)?,
    };
    let live = Live::new(
        baton.clone(),
        schema.clone(),
        connections,
        push,
        verifier.clone(),
    )
    .with_limits(LiveLimits::from_env()?);
    Ok(Gateway {
        schema,
        live,
        verifier,
        baton,
        queues,
        dashboard: dashboard::page(&endpoints).into(),
        dashboard_policy: dashboard::policy(&endpoints, true).into(),
    })
}

/// Answers one request, HTTP or WebSocket.
pub async fn handle(gateway: &Gateway, request: Request) -> Result<Response<Body>, Error> {
    if let RequestContext::WebSocket(context) = request.request_context() {
        return websocket(gateway, &context, &request).await;
    }
    let path = request.uri().path();
    match *request.method() {
        Method::GET if path.ends_with("/health") => respond(
            StatusCode::OK,
            "application/json",
            json!({"status": "ok"}).to_string(),
        ),
        Method::GET if path.ends_with("/ready") => ready(gateway).await,
        // GraphiQL loads its code from unpkg; no site may frame it either.
        Method::GET if path.ends_with("/graphql") => {
            html(GRAPHIQL.to_owned(), "frame-ancestors 'none'")
        }
        // The template routes only `GET /` here besides the paths above.
        Method::GET => html(gateway.dashboard.to_string(), &gateway.dashboard_policy),
        Method::POST => graphql(gateway, &request).await,
        _ => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET or POST".to_owned(),
        ),
    }
}

/// Readiness: the table answers (reading the global kill switch), and so does every queue and
/// DLQ. The switch's state is reported; engaged, the stack is still ready (it serves and
/// queues), it only starts nothing.
async fn ready(gateway: &Gateway) -> Result<Response<Body>, Error> {
    let switch = gateway.baton.kill_switch(&Scope::Global).await;
    let urls: Vec<&str> = gateway.queues.urls().collect();
    let checks = join_all(urls.iter().map(|url| gateway.queues.reachable(url))).await;
    let unreachable: Vec<&str> = urls
        .iter()
        .zip(&checks)
        .filter(|(_, check)| check.is_err())
        .map(|(url, _)| *url)
        .collect();
    let table = match &switch {
        Ok(_) => json!({"ok": true}),
        Err(infra) => {
            error!(error = ?infra, "readiness: the table does not answer");
            json!({"ok": false, "error": infra.operation})
        }
    };
    let kill_switch = match &switch {
        // A missing switch stops every dispatch, as an engaged one does.
        Ok(state) => json!({"engaged": state.as_ref().is_none_or(|s| s.engaged)}),
        Err(_) => Value::Null,
    };
    let ok = switch.is_ok() && unreachable.is_empty();
    let body = json!({
        "ready": ok,
        "table": table,
        "queues": {"ok": unreachable.is_empty(), "checked": urls.len(), "unreachable": unreachable},
        "killSwitch": kill_switch,
    });
    let status = match ok {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    respond(status, "application/json", body.to_string())
}

fn errors(status: StatusCode, errors: &[ServerError]) -> Result<Response<Body>, Error> {
    let body = json!({ "errors": errors });
    respond(status, "application/json", body.to_string())
}

fn coded(code: &str, message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}

/// The caller of an HTTP request: authorizer claims, else a verified bearer token, else none.
fn http_caller(gateway: &Gateway, request: &Request) -> Result<Option<Caller>, AuthError> {
    if let RequestContext::ApiGatewayV2(context) = request.request_context()
        && let Some(jwt) = context.authorizer.and_then(|a| a.jwt)
    {
        let claims: serde_json::Map<String, Value> = jwt
            .claims
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        return caller_from_claims(&Value::Object(claims)).map(Some);
    }
    let Some(token) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
    else {
        return Ok(None);
    };
    match &gateway.verifier {
        Some(verifier) => verifier.verify(token).map(Some),
        None => Err(AuthError::Invalid(
            "no key is configured to verify tokens".into(),
        )),
    }
}

async fn graphql(gateway: &Gateway, request: &Request) -> Result<Response<Body>, Error> {
    let body = request.body().as_ref();
    if body.len() > LIMITS.body_bytes {
        let refused = limits::exceeded("bodyBytes", LIMITS.body_bytes);
        return errors(StatusCode::PAYLOAD_TOO_LARGE, &[refused]);
    }
    let batch: BatchRequest = match serde_json::from_slice(body) {
        Ok(batch) => batch,
        Err(e) => {
            let refused = coded(
                "BAD_REQUEST",
                format!("the body is not a GraphQL request: {e}"),
            );
            return errors(StatusCode::BAD_REQUEST, &[refused]);
        }
    };
    if let BatchRequest::Batch(requests) = &batch
        && requests.len() > LIMITS.batch
    {
        return errors(
            StatusCode::BAD_REQUEST,
            &[limits::exceeded("batch", LIMITS.batch)],
        );
    }
    // Every operation needs a caller: no token is refused as a bad one is, with one message;
    // why a token was refused is logged, never sent.
    let batch = match http_caller(gateway, request) {
        Ok(Some(caller)) => batch.data(caller),
        Ok(None) => {
            return errors(
                StatusCode::UNAUTHORIZED,
                &[coded("UNAUTHENTICATED", AuthError::Missing.to_string())],
            );
        }
        Err(refused) => {
            warn!(reason = ?refused, "bearer token refused");
            return errors(
                StatusCode::UNAUTHORIZED,
                &[coded("UNAUTHENTICATED", refused.to_string())],
            );
        }
    };
    let response = gateway.schema.execute_batch(batch).await;
    respond(
        StatusCode::OK,
        "application/json",
        serde_json::to_string(&response)?,
    )
}

async fn websocket(
    gateway: &Gateway,
    context: &ApiGatewayWebsocketProxyRequestContext,
    request: &Request,
) -> Result<Response<Body>, Error> {
    let connection = context.connection_id.as_deref().unwrap_or_default();
    let outcome = match context.event_type.as_deref() {
        Some("CONNECT") => {
            let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
            let query = request.query_string_parameters();
            let handshake = Handshake {
                protocols: header(header::SEC_WEBSOCKET_PROTOCOL),
                token: header(header::AUTHORIZATION)
                    .and_then(bearer)
                    .or_else(|| query.first("token")),
            };
            let now = chrono::Utc::now();
            match gateway.live.connect(connection, handshake, now).await {
                Ok(Connect::Accept(protocol)) => {
                    let mut response = Response::builder().status(StatusCode::OK);
                    if let Some(protocol) = protocol {
                        response = response.header(header::SEC_WEBSOCKET_PROTOCOL, protocol);
                    }
                    return Ok(response.body(Body::Empty)?);
                }
                Ok(Connect::Busy) => {
                    return respond(
                        StatusCode::TOO_MANY_REQUESTS,
                        "text/plain",
                        "too many connections for this tenant".to_owned(),
                    );
                }
                Ok(Connect::Refuse(refused)) => {
                    warn!(connection, reason = ?refused, "WebSocket handshake refused");
                    return respond(StatusCode::UNAUTHORIZED, "text/plain", refused.to_string());
                }
                Err(infra) => Err(infra),
            }
        }
        Some("MESSAGE") => {
            let body = std::str::from_utf8(request.body().as_ref()).unwrap_or_default();
            gateway.live.message(connection, body).await
        }
        Some("DISCONNECT") => gateway.live.disconnect(connection).await,
        other => {
            error!(event_type = ?other, "unknown WebSocket event");
            Ok(())
        }
    };
    match outcome {
        Ok(()) => Ok(Response::builder()
            .status(StatusCode::OK)
            .body(Body::Empty)?),
        Err(infra) => {
            error!(connection, error = ?infra, "WebSocket event failed");
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "internal error".to_owned(),
            )
        }
    }
}

/// A page with its Content-Security-Policy, never framed, sniffed or sent with a referrer.
fn html(page: String, policy: &str) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CONTENT_SECURITY_POLICY, policy)
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .body(Body::Text(page))?)
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Result<Response<Body>, Error> {
    Ok(Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::Text(body))?)
}
