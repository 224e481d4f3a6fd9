//! Counts every AWS request a client makes, by service and operation, with the DynamoDB capacity
//! each one consumed: an SDK interceptor that asks DynamoDB for `ReturnConsumedCapacity =
//! INDEXES` (the emulator computes it by AWS's rules: item size, transactional double cost,
//! indexes) and reads the answer. It also hands every write to [`Keys`], the load per key.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation as ddb;
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use aws_sdk_eventbridge::operation::put_events::PutEventsInput;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextMut, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use crate::keys::{self, Keys, Touched};

/// What one operation added up to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Requests (an SDK retry is the same request).
    pub calls: u64,
    /// Entries the requests carried where the price is per entry (EventBridge `PutEvents`).
    pub entries: u64,
    /// DynamoDB capacity units consumed (read or write, by the operation).
    pub units: f64,
    /// Requests that failed (a failed condition included).
    pub failed: u64,
}

/// `(service, operation)` → tally.
pub type Tallies = BTreeMap<(String, String), Tally>;

/// The interceptor: clone it into each client's configuration; every clone adds to one count.
#[derive(Debug, Clone)]
pub struct Calls {
    tallies: Arc<Mutex<Tallies>>,
    keys: Arc<Mutex<Keys>>,
    /// The task table's `(index, partition attribute)`.
    indexes: Arc<Vec<(String, String)>>,
}

impl Calls {
    /// A count of nothing yet, for clients of the task table the template declares.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            tallies: Arc::default(),
            keys: Arc::default(),
            indexes: Arc::new(baton_tests::table_indexes()?),
        })
    }

    /// The counts so far, and a fresh start (of the keys' loads too).
    pub fn take(&self) -> (Tallies, Keys) {
        (
            std::mem::take(&mut self.tallies.lock().expect("tallies")),
            std::mem::take(&mut self.keys.lock().expect("keys")),
        )
    }

    /// Requests counted so far.
    pub fn requests(&self) -> u64 {
        self.tallies
            .lock()
            .expect("tallies")
            .values()
            .map(|t| t.calls)
            .sum()
    }

    fn add(&self, metadata: &Metadata, add: impl FnOnce(&mut Tally)) {
        let key = (metadata.service().to_owned(), metadata.name().to_owned());
        add(self
            .tallies
            .lock()
            .expect("tallies")
            .entry(key)
            .or_default());
    }
}

/// Sets `ReturnConsumedCapacity = TOTAL` on the DynamoDB inputs Baton sends.
macro_rules! ask_capacity {
    ($input:expr, $($op:ident::$ty:ident),+) => {
        $(if let Some(input) = $input.downcast_mut::<ddb::$op::$ty>() {
            input.return_consumed_capacity = Some(ReturnConsumedCapacity::Indexes);
        })+
    };
}

/// The capacities an output reports, for the outputs that can carry them.
macro_rules! consumed {
    ($output:expr, single: [$($one:ident::$one_ty:ident),+], many: [$($many:ident::$many_ty:ident),+]) => {{
        let mut capacities: Vec<&ConsumedCapacity> = Vec::new();
        $(if let Some(output) = $output.downcast_ref::<ddb::$one::$one_ty>() {
            capacities.extend(output.consumed_capacity());
        })+
        $(if let Some(output) = $output.downcast_ref::<ddb::$many::$many_ty>() {
            capacities.extend(output.consumed_capacity());
        })+
        capacities
    }};
}

fn capacity(consumed: &ConsumedCapacity) -> f64 {
    consumed.capacity_units().unwrap_or(0.0)
}

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "bench-calls"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input_mut();
        // Serialization consumes the input: count what is priced per entry now.
        if let Some(put) = input.downcast_ref::<PutEventsInput>()
            && let Some(metadata) = cfg.load::<Metadata>()
        {
            let entries = put.entries().len() as u64;
            self.add(metadata, |tally| tally.entries += entries);
        }
        if let Some(touched) = keys::touched(input, &self.indexes) {
            cfg.interceptor_state().store_put(touched);
        }
        ask_capacity!(
            input,
            get_item::GetItemInput,
            batch_get_item::BatchGetItemInput,
            query::QueryInput,
            put_item::PutItemInput,
            update_item::UpdateItemInput,
            delete_item::DeleteItemInput,
            batch_write_item::BatchWriteItemInput,
            transact_write_items::TransactWriteItemsInput,
            transact_get_items::TransactGetItemsInput
        );
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(metadata) = cfg.load::<Metadata>() else {
            return Ok(());
        };
        let (capacities, failed) = match context.output_or_error() {
            Some(Ok(output)) => (
                consumed!(output,
                    single: [get_item::GetItemOutput, query::QueryOutput, put_item::PutItemOutput,
                        update_item::UpdateItemOutput, delete_item::DeleteItemOutput],
                    many: [batch_get_item::BatchGetItemOutput, batch_write_item::BatchWriteItemOutput,
                        transact_write_items::TransactWriteItemsOutput,
                        transact_get_items::TransactGetItemsOutput]),
                false,
            ),
            _ => (Vec::new(), true),
        };
        let mut units: f64 = capacities.iter().map(|c| capacity(c)).sum();
        // MiniStack answers BatchGetItem without its capacity: a read unit per item returned,
        // as AWS charges a strongly consistent read of an item under 4 KB (Baton's are).
        if let Some(Ok(output)) = context.output_or_error()
            && let Some(batch) = output.downcast_ref::<ddb::batch_get_item::BatchGetItemOutput>()
            && batch.consumed_capacity().is_empty()
        {
            units += batch
                .responses()
                .map_or(0, |r| r.values().map(Vec::len).sum::<usize>()) as f64;
        }
        if let Some(touched) = cfg.load::<Touched>() {
            self.keys.lock().expect("keys").add(touched, &capacities);
        }
        self.add(metadata, |tally| {
            tally.calls += 1;
            tally.units += units;
            tally.failed += u64::from(failed);
        });
        Ok(())
    }
}
