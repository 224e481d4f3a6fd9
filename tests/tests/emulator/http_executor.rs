//! The built-in HTTP executor against local servers: success, a failure then success on retry,
//! a timeout, an oversized answer, refused schemes and headers; and its guard: every private
//! destination, however spelled, reached directly, by name or through a redirect, is refused
//! before any connection, while an allowlisted one is called.

use std::sync::Arc;
use std::time::Duration;

use baton_domain::Outcome;
use baton_fn_http_executor::Requester;
use baton_fn_http_executor::guard::{Allowlist, Lookup, system_lookup};
use baton_tests::TestServer;
use serde_json::{Value, json};

fn retryable(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failed { error } if error.retryable)
}

fn code(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Succeeded { .. } => "SUCCEEDED",
        Outcome::Failed { error } => &error.code,
    }
}

/// A requester that may call `server` (a loopback address) and nothing else private.
fn allowing(server: &TestServer) -> Requester {
    let address = server.url.trim_start_matches("http://");
    Requester::new(Allowlist::parse(address).unwrap()).unwrap()
}

async fn run(server: &TestServer, input: Value) -> Outcome {
    allowing(server)
        .execute(&input, Duration::from_secs(20))
        .await
}

#[tokio::test]
async fn a_2xx_answer_succeeds_with_status_headers_and_body() {
    let server = TestServer::start(0).await.unwrap();
    let outcome = run(
        &server,
        json!({"method": "post", "url": format!("{}/echo", server.url),
        "body": {"hello": "world"}}),
    )
    .await;
    let Outcome::Succeeded { output } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(output["status"], 200);
    assert_eq!(output["headers"]["content-type"], "application/json");
    assert_eq!(output["body"], r#"{"hello":"world"}"#);
}

#[tokio::test]
async fn a_5xx_fails_with_its_status_and_the_next_attempt_can_succeed() {
    let server = TestServer::start(0).await.unwrap();
    let input = json!({"url": format!("{}/flaky/a", server.url)});
    let first = run(&server, input.clone()).await;
    assert_eq!(code(&first), "HTTP_500");
    let Outcome::Failed { error } = &first else {
        unreachable!()
    };
    assert!(error.message.contains("try again"), "{}", error.message);
    assert_eq!(code(&run(&server, input).await), "SUCCEEDED");
}

#[tokio::test]
async fn timeouts_caps_schemes_and_headers_are_enforced() {
    let server = TestServer::start(0).await.unwrap();
    let slow = json!({"url": format!("{}/slow", server.url), "timeout_seconds": 1});
    let timed_out = run(&server, slow.clone()).await;
    assert_eq!(code(&timed_out), "TIMEOUT");
    assert!(
        retryable(&timed_out),
        "a timeout may pass on another attempt"
    );
    // The attempt's deadline (or the invocation's) caps a longer timeout.
    let mut patient = slow;
    patient["timeout_seconds"] = json!(20);
    let late = allowing(&server)
        .execute(&patient, Duration::from_millis(500))
        .await;
    assert_eq!(code(&late), "TIMEOUT");
    let none_left = allowing(&server).execute(&patient, Duration::ZERO).await;
    assert_eq!(code(&none_left), "TIMEOUT");
    let big = json!({"url": format!("{}/big", server.url)});
    assert_eq!(code(&run(&server, big.clone()).await), "RESPONSE_TOO_LARGE");
    let mut small_cap = big;
    small_cap["url"] = json!(format!("{}/ok", server.url));
    small_cap["max_response_bytes"] = json!(4);
    assert_eq!(code(&run(&server, small_cap).await), "RESPONSE_TOO_LARGE");
    let ok = format!("{}/ok", server.url);
    for refused in [
        json!({"url": "file:///etc/passwd"}),
        json!({"url": "ftp://x/y"}),
        json!({"url": "not a url"}),
        json!({"nope": 1}),
        json!({"url": "http://x", "method": "GE T"}),
        json!({"url": ok, "headers": {"x-a": "1\r\nx-injected: 2"}}),
        json!({"url": ok, "headers": {"x-a": "1\nx-injected: 2"}}),
        json!({"url": ok, "headers": {"bad name": "1"}}),
    ] {
        let outcome = run(&server, refused.clone()).await;
        assert_eq!(code(&outcome), "INVALID_REQUEST", "{refused}");
        assert!(!retryable(&outcome), "{refused}");
    }
    let closed = Requester::new(Allowlist::parse("127.0.0.1:9").unwrap()).unwrap();
    let unreachable = json!({"url": "http://127.0.0.1:9/"});
    assert_eq!(
        code(&closed.execute(&unreachable, Duration::from_secs(5)).await),
        "CONNECTION_FAILED"
    );
    assert_eq!(server.calls("/ok"), 1, "only the cap test reached /ok");
}

/// Names resolved as the system does, except `public.example`, which resolves to loopback
/// the way a rebinding attacker's domain would.
fn rebinding() -> Lookup {
    let system = system_lookup();
    Arc::new(move |host: String| match host.as_str() {
        "public.example" => Box::pin(async { Ok(vec!["127.0.0.1".parse().unwrap()]) }),
        _ => system(host),
    })
}

#[tokio::test]
async fn private_destinations_are_refused_before_any_connection() {
    let allowed = TestServer::start(0).await.unwrap();
    let target = TestServer::start(0).await.unwrap();
    let port = target.url.rsplit(':').next().unwrap().to_owned();
    let address = allowed.url.trim_start_matches("http://");
    let requester =
        Requester::with_lookup(Allowlist::parse(address).unwrap(), rebinding()).unwrap();
    for url in [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://localhost:{port}/ok"),
        format!("http://2130706433:{port}/ok"),
        format!("http://[::1]:{port}/ok"),
        format!("http://[::ffff:127.0.0.1]:{port}/ok"),
        format!("http://public.example:{port}/ok"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        // An allowed address that redirects to one that is not.
        format!("{}/redirect?to=http://127.0.0.1:{port}/ok", allowed.url),
        format!(
            "{}/redirect?to=http://public.example:{port}/ok",
            allowed.url
        ),
    ] {
        let outcome = requester
            .execute(&json!({"url": url}), Duration::from_secs(5))
            .await;
        assert_eq!(
            code(&outcome),
            "FORBIDDEN_DESTINATION",
            "{url}: {outcome:?}"
        );
        assert!(!retryable(&outcome), "{url}: a refusal is final");
    }
    assert_eq!(
        target.connections(),
        0,
        "a refused request reached the target"
    );
    assert_eq!(allowed.calls("/ok"), 0);
    // The allowlisted address itself, and a redirect to it, are called.
    let direct = json!({"url": format!("{}/ok", allowed.url)});
    assert_eq!(
        code(&requester.execute(&direct, Duration::from_secs(5)).await),
        "SUCCEEDED"
    );
    let hop = json!({"url": format!("{}/redirect?to={}/ok", allowed.url, allowed.url)});
    assert_eq!(
        code(&requester.execute(&hop, Duration::from_secs(5)).await),
        "SUCCEEDED"
    );
    assert_eq!(allowed.calls("/ok"), 2);
}
