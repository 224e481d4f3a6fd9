//! Any bytes as the body of a GraphQL POST with a tenant's token: the gateway must answer JSON
//! with data or coded errors, never panic.

#![no_main]

use baton_tests::fuzz::on_shared;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    if let Err(finding) = on_shared(async |harness| harness.graphql("acme", &body).await) {
        panic!("{finding}");
    }
});
