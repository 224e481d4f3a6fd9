//! The built-in HTTP executor against a local server: success, a failure then success on
//! retry, a timeout, an oversized answer and a refused scheme, each as the outcome it reports.

use std::time::Duration;

use baton_domain::Outcome;
use baton_fn_http_executor::execute;
use baton_tests::TestServer;
use serde_json::{Value, json};

fn code(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Succeeded { .. } => "SUCCEEDED",
        Outcome::Failed { error } => &error.code,
    }
}

async fn run(input: Value) -> Outcome {
    let client = reqwest::Client::new();
    execute(&client, &input, Duration::from_secs(20)).await
}

#[tokio::test]
async fn a_2xx_answer_succeeds_with_status_headers_and_body() {
    let server = TestServer::start(0).await.unwrap();
    let outcome = run(
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
    let first = run(input.clone()).await;
    assert_eq!(code(&first), "HTTP_500");
    let Outcome::Failed { error } = &first else {
        unreachable!()
    };
    assert!(error.message.contains("try again"), "{}", error.message);
    assert_eq!(code(&run(input).await), "SUCCEEDED");
}

#[tokio::test]
async fn timeouts_caps_and_schemes_are_enforced() {
    let server = TestServer::start(0).await.unwrap();
    let slow = json!({"url": format!("{}/slow", server.url), "timeout_seconds": 1});
    assert_eq!(code(&run(slow.clone()).await), "TIMEOUT");
    // The attempt's deadline caps a longer timeout.
    let client = reqwest::Client::new();
    let mut patient = slow;
    patient["timeout_seconds"] = json!(20);
    let late = execute(&client, &patient, Duration::from_millis(500)).await;
    assert_eq!(code(&late), "TIMEOUT");
    let big = json!({"url": format!("{}/big", server.url)});
    assert_eq!(code(&run(big.clone()).await), "RESPONSE_TOO_LARGE");
    let mut small_cap = big;
    small_cap["url"] = json!(format!("{}/ok", server.url));
    small_cap["max_response_bytes"] = json!(4);
    assert_eq!(code(&run(small_cap).await), "RESPONSE_TOO_LARGE");
    for refused in [
        json!({"url": "file:///etc/passwd"}),
        json!({"url": "ftp://x/y"}),
        json!({"url": "not a url"}),
        json!({"nope": 1}),
        json!({"url": "http://x", "method": "GE T"}),
    ] {
        assert_eq!(
            code(&run(refused.clone()).await),
            "INVALID_REQUEST",
            "{refused}"
        );
    }
    assert_eq!(
        code(&run(json!({"url": "http://127.0.0.1:9/"})).await),
        "CONNECTION_FAILED"
    );
}
