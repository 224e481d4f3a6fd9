//! Any bytes as one SQS message body to every function that consumes events: each must
//! acknowledge it or fail it with a known code (parked in its DLQ with that code), never panic.

#![no_main]

use baton_tests::fuzz::on_shared;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    if let Err(finding) = on_shared(async |harness| harness.event(&body).await) {
        panic!("{finding}");
    }
});
