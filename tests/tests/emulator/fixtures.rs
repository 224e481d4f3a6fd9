//! The fixtures clean up after themselves: what a test created is gone once the test ends, even
//! when it panicked half way.

use anyhow::Result;
use baton_tests::{Letters, Sandbox, emulator};

#[tokio::test]
async fn a_test_that_panics_leaves_none_of_its_resources_behind() -> Result<()> {
    let created = std::sync::Arc::new(std::sync::Mutex::new(None));
    let record = created.clone();
    let failing = tokio::spawn(async move {
        let sandbox = Sandbox::new().await.unwrap();
        let letters = Letters::new("fixture", 1).await.unwrap();
        *record.lock().unwrap() = Some((
            sandbox.settings.clone(),
            letters.source_url.clone(),
            letters.dlq_url.clone(),
        ));
        panic!("the test fails with its fixtures alive");
    })
    .await;
    assert!(failing.unwrap_err().is_panic());
    let (settings, source_url, dlq_url) = created.lock().unwrap().take().unwrap();

    let sdk = emulator().await;
    let table = aws_sdk_dynamodb::Client::new(&sdk)
        .describe_table()
        .table_name(&settings.table)
        .send()
        .await;
    assert!(table.is_err(), "table {} is still there", settings.table);
    let buses = aws_sdk_eventbridge::Client::new(&sdk)
        .list_event_buses()
        .name_prefix(&settings.bus)
        .send()
        .await?;
    assert!(
        buses.event_buses().is_empty(),
        "bus {} is still there",
        settings.bus
    );
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    for url in [&settings.due_queue_url, &source_url, &dlq_url] {
        let queue = sqs.get_queue_attributes().queue_url(url).send().await;
        assert!(queue.is_err(), "queue {url} is still there");
    }
    Ok(())
}
