//! The load lifecycles put on each key DynamoDB partitions by — the items they write and the index
//! partitions their writes put entries in — counted from the requests Baton sends ([`Calls`]
//! hands every write here). One item or index partition takes at most 1,000 write units a second,
//! and transactions on one item at once conflict, so the most-written key bounds how many
//! lifecycles a second one project, or the whole deployment, can run.
//!
//! Item writes are charged by AWS's rule for items under 1 KB (the shared ones are: project
//! counters, switches): one unit, two in a transaction. An index's units are DynamoDB's own answer
//! (`ReturnConsumedCapacity = INDEXES`), shared among its partitions as the requests put entries
//! in them (an entry's removal lands where it was put).
//!
//! [`Calls`]: crate::calls::Calls

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::operation as ddb;
use aws_sdk_dynamodb::types::{AttributeValue, ConsumedCapacity};
use aws_smithy_runtime_api::client::interceptors::context::Input;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use serde::Serialize;

type Item = HashMap<String, AttributeValue>;

/// The maximum write rate of one item or index partition (write units per second).
const KEY_WRITE_UNITS_PER_SECOND: f64 = 1000.0;

/// What one write request touched.
#[derive(Debug, Clone, Default)]
pub struct Touched {
    /// The partition keys of the items it writes or condition-checks.
    items: Vec<String>,
    /// Whether they are written in one transaction.
    transactional: bool,
    /// The index partitions it puts an entry in: `(index, partition)`.
    entries: Vec<(String, String)>,
}

impl Storable for Touched {
    type Storer = StoreReplace<Self>;
}

/// What a write request touches, for the DynamoDB write inputs; `indexes` are the table's
/// `(index, partition attribute)`.
pub fn touched(input: &Input, indexes: &[(String, String)]) -> Option<Touched> {
    let mut touched = Touched::default();
    if let Some(put) = input.downcast_ref::<ddb::put_item::PutItemInput>() {
        touched.put(put.item.as_ref()?, indexes);
    } else if let Some(update) = input.downcast_ref::<ddb::update_item::UpdateItemInput>() {
        touched.update(
            update.key.as_ref()?,
            update.update_expression.as_deref().unwrap_or_default(),
            update.expression_attribute_names.as_ref(),
            update.expression_attribute_values.as_ref(),
            indexes,
        );
    } else if let Some(delete) = input.downcast_ref::<ddb::delete_item::DeleteItemInput>() {
        touched.items.extend(pk(delete.key.as_ref()?));
    } else if let Some(batch) = input.downcast_ref::<ddb::batch_write_item::BatchWriteItemInput>() {
        for request in batch
            .request_items
            .iter()
            .flat_map(|r| r.values())
            .flatten()
        {
            if let Some(put) = &request.put_request {
                touched.put(&put.item, indexes);
            }
            if let Some(delete) = &request.delete_request {
                touched.items.extend(pk(&delete.key));
            }
        }
    } else if let Some(transaction) =
        input.downcast_ref::<ddb::transact_write_items::TransactWriteItemsInput>()
    {
        touched.transactional = true;
        for item in transaction.transact_items.iter().flatten() {
            if let Some(put) = &item.put {
                touched.put(&put.item, indexes);
            }
            if let Some(update) = &item.update {
                touched.update(
                    &update.key,
                    &update.update_expression,
                    update.expression_attribute_names.as_ref(),
                    update.expression_attribute_values.as_ref(),
                    indexes,
                );
            }
            if let Some(delete) = &item.delete {
                touched.items.extend(pk(&delete.key));
            }
            if let Some(check) = &item.condition_check {
                touched.items.extend(pk(&check.key));
            }
        }
    } else {
        return None;
    }
    Some(touched)
}

fn pk(item: &Item) -> Option<String> {
    item.get("pk")?.as_s().ok().cloned()
}

impl Touched {
    fn put(&mut self, item: &Item, indexes: &[(String, String)]) {
        self.items.extend(pk(item));
        for (index, attribute) in indexes {
            if let Some(partition) = item.get(attribute).and_then(|v| v.as_s().ok()) {
                self.entries.push((index.clone(), partition.clone()));
            }
        }
    }

    /// An update puts an index entry where its expression assigns the index's partition
    /// attribute (`attribute = :value`, by name or placeholder).
    fn update(
        &mut self,
        key: &Item,
        expression: &str,
        names: Option<&HashMap<String, String>>,
        values: Option<&Item>,
        indexes: &[(String, String)],
    ) {
        self.items.extend(pk(key));
        for (index, attribute) in indexes {
            let placeholders = names
                .into_iter()
                .flatten()
                .filter(|(_, name)| *name == attribute)
                .map(|(placeholder, _)| placeholder.as_str());
            for left in std::iter::once(attribute.as_str()).chain(placeholders) {
                let pattern = format!("{left} = ");
                let assigned = expression
                    .match_indices(&pattern)
                    .filter(|(at, _)| {
                        let before = expression[..*at].chars().next_back();
                        before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '#'))
                    })
                    .filter_map(|(at, matched)| {
                        let rest = &expression[at + matched.len()..];
                        let value = rest.split([',', ' ', ')']).next()?;
                        values?.get(value)?.as_s().ok()
                    });
                for partition in assigned {
                    self.entries.push((index.clone(), partition.clone()));
                }
            }
        }
    }
}

/// A key's load over a run.
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    write_units: f64,
    transactions: f64,
}

/// Every key's load, added up request by request.
#[derive(Debug, Default)]
pub struct Keys {
    items: BTreeMap<String, Load>,
    /// Per index, the write units DynamoDB reported.
    index_units: BTreeMap<String, f64>,
    /// Per index partition, the entries put in it.
    index_entries: BTreeMap<(String, String), u64>,
}

impl Keys {
    /// Adds one request: what it touched and, when it was answered, the capacity it consumed.
    pub fn add(&mut self, touched: &Touched, consumed: &[&ConsumedCapacity]) {
        let per_item = if touched.transactional { 2.0 } else { 1.0 };
        for key in &touched.items {
            let load = self.items.entry(key.clone()).or_default();
            load.write_units += per_item;
            load.transactions += f64::from(u8::from(touched.transactional));
        }
        for entry in &touched.entries {
            *self.index_entries.entry(entry.clone()).or_default() += 1;
        }
        for capacity in consumed {
            for (index, units) in capacity.global_secondary_indexes().into_iter().flatten() {
                *self.index_units.entry(index.clone()).or_default() +=
                    units.capacity_units().unwrap_or(0.0);
            }
        }
    }

    /// The loads per lifecycle over `lifecycles`, the keys of project `tenant#project` apart
    /// from the deployment's; a task's own item (and its idempotency key) is nobody's hot key.
    pub fn report(&self, lifecycles: usize, project: &str) -> HotKeys {
        let per = |x: f64| x / lifecycles as f64;
        // Its items end in `#{tenant}#{project}`, its lanes are `L#{tenant}#{project}#{lane}`;
        // its index partitions are `{tenant}#{project}`, or `{tenant}#{project}#{shard}`.
        let ours = |key: &str| {
            let numbered = |key: &str| {
                key.rsplit_once('#')
                    .is_some_and(|(path, n)| path == project && n.parse::<u16>().is_ok())
            };
            key == project
                || key.ends_with(&format!("#{project}"))
                || key.strip_prefix("L#").is_some_and(numbered)
                || numbered(key)
        };
        let mut keys: Vec<HotKey> = self
            .items
            .iter()
            .filter(|(key, _)| !key.starts_with("T#") && !key.starts_with("I#"))
            .map(|(key, load)| HotKey {
                key: format!("item {key}"),
                project: ours(key),
                write_units: per(load.write_units),
                transactions: per(load.transactions),
            })
            .collect();
        for (index, units) in &self.index_units {
            let entries = |partition: Option<&str>| -> u64 {
                self.index_entries
                    .iter()
                    .filter(|((i, p), _)| i == index && partition.is_none_or(|want| p == want))
                    .map(|(_, n)| n)
                    .sum()
            };
            let all = entries(None);
            let partitions = self.index_entries.keys().filter(|(i, _)| i == index);
            if all == 0 {
                keys.push(HotKey {
                    key: format!("index {index} (entries removed)"),
                    project: false,
                    write_units: per(*units),
                    transactions: 0.0,
                });
            }
            for (_, partition) in partitions {
                let share = entries(Some(partition)) as f64 / all as f64;
                keys.push(HotKey {
                    key: format!("index {index} {partition}"),
                    project: ours(partition),
                    write_units: per(units * share),
                    transactions: 0.0,
                });
            }
        }
        keys.sort_by(|a, b| b.write_units.total_cmp(&a.write_units));
        let hottest = |project: bool| keys.iter().find(|k| k.project == project).cloned();
        let bound = |key: &Option<HotKey>| {
            key.as_ref()
                .filter(|k| k.write_units > 0.0)
                .map_or(f64::INFINITY, |k| {
                    KEY_WRITE_UNITS_PER_SECOND / k.write_units
                })
        };
        let (project, deployment) = (hottest(true), hottest(false));
        HotKeys {
            project_bound: bound(&project),
            deployment_bound: bound(&deployment),
            project,
            deployment,
            keys,
        }
    }
}

/// One key's load per lifecycle.
#[derive(Debug, Clone, Serialize)]
pub struct HotKey {
    /// `item {pk}` or `index {name} {partition}`.
    pub key: String,
    /// Whether it belongs to the project (else the deployment shares it).
    pub project: bool,
    /// Write units per lifecycle.
    pub write_units: f64,
    /// Transactions it takes part in per lifecycle.
    pub transactions: f64,
}

/// The hottest keys of a run.
#[derive(Debug, Clone, Serialize)]
pub struct HotKeys {
    /// The project's most-written key.
    pub project: Option<HotKey>,
    /// The most-written key the deployment's projects share.
    pub deployment: Option<HotKey>,
    /// Lifecycles a second one project can run before its hottest key takes 1,000 write units a
    /// second.
    pub project_bound: f64,
    /// The same for the whole deployment and its shared hottest key.
    pub deployment_bound: f64,
    /// Every key but the tasks' own, most written first.
    pub keys: Vec<HotKey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_owned())
    }

    fn indexes() -> Vec<(String, String)> {
        [("by-wake", "wake_key"), ("by-ready", "ready_key")]
            .map(|(i, a)| (i.to_owned(), a.to_owned()))
            .to_vec()
    }

    #[test]
    fn an_update_puts_entries_where_it_assigns_an_index_key_by_name_or_placeholder() {
        let key = HashMap::from([("pk".to_owned(), s("T#acme#1"))]);
        let names = HashMap::from([("#r".to_owned(), "ready_key".to_owned())]);
        let values = HashMap::from([
            (":key".to_owned(), s("CHECK#2")),
            (":ready".to_owned(), s("acme#p")),
            (":other".to_owned(), s("x")),
        ]);
        let mut touched = Touched::default();
        touched.update(
            &key,
            "SET old_wake_key = :other, wake_key = :key, #r = :ready REMOVE parked",
            Some(&names),
            Some(&values),
            &indexes(),
        );
        assert_eq!(touched.items, ["T#acme#1"]);
        assert_eq!(
            touched.entries,
            [
                ("by-wake".to_owned(), "CHECK#2".to_owned()),
                ("by-ready".to_owned(), "acme#p".to_owned())
            ]
        );
    }

    #[test]
    fn shared_keys_are_charged_per_write_and_index_units_shared_by_entries() {
        let mut keys = Keys::default();
        let project = Touched {
            items: vec!["T#acme#1".into(), "P#acme#p".into()],
            transactional: true,
            entries: vec![("by-wake".into(), "CHECK#0".into())],
        };
        let switch = Touched {
            items: vec!["KILL#global".into()],
            transactional: false,
            entries: vec![("by-wake".into(), "CHECK#1".into())],
        };
        let capacity = ConsumedCapacity::builder()
            .global_secondary_indexes(
                "by-wake",
                aws_sdk_dynamodb::types::Capacity::builder()
                    .capacity_units(2.0)
                    .build(),
            )
            .build();
        keys.add(&project, &[&capacity]);
        keys.add(&switch, &[]);
        let report = keys.report(2, "acme#p");
        let project = report.project.unwrap();
        assert_eq!(
            (
                project.key.as_str(),
                project.write_units,
                project.transactions
            ),
            ("item P#acme#p", 1.0, 0.5)
        );
        assert_eq!(report.project_bound, 1000.0);
        let deployment = report.deployment.unwrap();
        assert_eq!(deployment.write_units, 0.5, "{deployment:?}");
        assert!(report.keys.iter().all(|k| !k.key.contains("T#")));
    }

    #[test]
    fn a_project_s_lanes_are_its_keys_and_another_s_are_not() {
        let mut keys = Keys::default();
        for pk in [
            "L#acme#p#0",
            "L#acme#p#17",
            "L#acme#p#17",
            "L#acme#px#0",
            "acme#p#3",
        ] {
            let touched = Touched {
                items: vec![pk.into()],
                transactional: true,
                entries: Vec::new(),
            };
            keys.add(&touched, &[]);
        }
        let report = keys.report(4, "acme#p");
        let project = report.project.unwrap();
        assert_eq!(
            (project.key.as_str(), project.write_units),
            ("item L#acme#p#17", 1.0)
        );
        let ours = |key: &str| report.keys.iter().any(|k| k.key == key && k.project);
        assert!(ours("item acme#p#3") && ours("item L#acme#p#0"));
        assert_eq!(report.deployment.unwrap().key, "item L#acme#px#0");
    }
}
