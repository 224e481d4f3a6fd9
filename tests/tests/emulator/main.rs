//! Baton's tests against the emulator, in one binary: the SDK is linked once, and every test
//! shares one process. Each module is one subject; each test creates its own resources (a
//! [`baton_tests::Sandbox`], worker queues on the deployed [`baton_tests::Stack`], a
//! [`baton_tests::Letters`] pair), which are removed when the fixture is dropped, whether the
//! test passed or panicked. Run one subject with a filter: `cargo test -p baton-tests --test
//! emulator races::`.

mod bad_input;
mod e2e;
mod fixtures;
mod flow;
mod graph;
mod http_executor;
mod in_process;
mod lanes;
mod operations;
mod payloads;
mod races;
mod sdk_faults;
mod template;
mod trust;
