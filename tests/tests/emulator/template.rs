//! The template against the code, without deploying it: every function in it has a crate with a
//! handler and is in the list the deploy and package scripts build, every role is least privilege
//! (no wildcard action or resource, events put only from Baton's own sources), and every DLQ and
//! function has its alarm.

use std::collections::BTreeSet;

use serde_norway::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn template() -> Value {
    let text = std::fs::read_to_string(format!("{ROOT}/infra/template.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn resources(template: &Value, kind: &str) -> Vec<(String, Value)> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, resource)| resource["Type"].as_str() == Some(kind))
        .map(|(name, resource)| (name.as_str().unwrap().to_owned(), resource.clone()))
        .collect()
}

/// The text under a CloudFormation short-form tag (`!Sub x` → `x`), or a plain string.
fn text(value: &Value) -> Option<&str> {
    match value {
        Value::Tagged(tagged) => tagged.value.as_str(),
        other => other.as_str(),
    }
}

/// A function's short name, from `FunctionName: !Sub ${AWS::StackName}-{name}`.
fn function_name(function: &Value) -> String {
    let name = text(&function["Properties"]["FunctionName"]).unwrap();
    name.strip_prefix("${AWS::StackName}-").unwrap().to_owned()
}

fn functions() -> Vec<(String, String, Value)> {
    resources(&template(), "AWS::Serverless::Function")
        .into_iter()
        .map(|(logical, function)| (logical, function_name(&function), function))
        .collect()
}

/// Every string in a value, tags unwrapped, lists flattened.
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        Value::Tagged(tagged) => strings(&tagged.value),
        Value::String(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

#[test]
fn every_function_in_the_template_has_a_crate_with_a_handler_and_is_packaged() {
    // The list both the local deploy and `make package` build.
    let list = std::fs::read_to_string(format!("{ROOT}/infra/functions")).unwrap();
    let listed: BTreeSet<String> = list.split_whitespace().map(str::to_owned).collect();
    let mut names = BTreeSet::new();
    for (logical, name, function) in functions() {
        let dir = format!("{ROOT}/functions/{name}");
        let manifest = std::fs::read_to_string(format!("{dir}/Cargo.toml"))
            .unwrap_or_else(|_| panic!("{logical}: no crate functions/{name}"));
        assert!(
            manifest.contains(&format!("name = \"baton-fn-{name}\"")),
            "{logical}: functions/{name} is not the crate baton-fn-{name}"
        );
        let lib = std::fs::read_to_string(format!("{dir}/src/lib.rs")).unwrap();
        assert!(
            lib.contains("pub async fn handle("),
            "{logical}: no handler"
        );
        assert!(std::path::Path::new(&format!("{dir}/src/main.rs")).exists());
        let key = strings(&function["Properties"]["CodeUri"]["Key"]).join(" ");
        assert!(
            key.contains(&format!("{name}.zip")),
            "{logical}: code key {key}"
        );
        names.insert(name);
    }
    let crates: BTreeSet<String> = std::fs::read_dir(format!("{ROOT}/functions"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, crates, "every function crate is deployed");
    assert_eq!(
        names, listed,
        "infra/functions lists exactly the template's functions"
    );
}

#[test]
fn every_role_allows_only_named_actions_on_named_resources() {
    for (logical, name, function) in functions() {
        let policies = function["Properties"]["Policies"].as_sequence().unwrap();
        let statements = policies
            .iter()
            .flat_map(|policy| policy["Statement"].as_sequence().unwrap());
        let mut actions = BTreeSet::new();
        for statement in statements {
            assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{logical}");
            for action in strings(&statement["Action"]) {
                assert!(!action.contains('*'), "{logical}: wildcard action {action}");
                actions.insert(action);
            }
            let resources = strings(&statement["Resource"]);
            assert!(
                !resources.is_empty(),
                "{logical}: a statement without resources"
            );
            for resource in resources {
                assert_ne!(resource, "*", "{logical}: any resource");
                assert!(
                    !resource.ends_with(":*") && !resource.contains(":*:"),
                    "{logical}: wildcard resource {resource}"
                );
            }
        }
        // Baton's sources speak for every tenant on the bus: its functions put events from them
        // alone, and only the executor from its own.
        let sources: BTreeSet<String> = policies
            .iter()
            .flat_map(|policy| policy["Statement"].as_sequence().unwrap())
            .filter(|statement| strings(&statement["Action"]).contains(&"events:PutEvents".into()))
            .map(|statement| {
                let pinned = &statement["Condition"]["StringEquals"]["events:source"];
                pinned
                    .as_str()
                    .unwrap_or_else(|| panic!("{logical}: PutEvents from any source"))
                    .to_owned()
            })
            .collect();
        let expected = match name.as_str() {
            "http-executor" => "baton.http",
            _ => "baton",
        };
        assert!(
            sources.iter().all(|source| source == expected),
            "{logical}: {sources:?}"
        );
        // No write checks the kill switches: a batch of dispatches reads them.
        assert!(
            !actions.contains("dynamodb:ConditionCheckItem"),
            "{logical}"
        );
        assert!(!actions.contains("dynamodb:Scan"), "{logical}: scans");
    }
}

#[test]
fn the_counter_and_the_notifier_read_the_task_tables_stream_of_both_images() {
    let template = template();
    let table = &template["Resources"]["TaskTable"]["Properties"];
    assert_eq!(
        table["StreamSpecification"]["StreamViewType"].as_str(),
        Some("NEW_AND_OLD_IMAGES")
    );
    for (name, start) in [("counter", "TRIM_HORIZON"), ("notifier", "LATEST")] {
        let (_, _, function) = functions()
            .into_iter()
            .find(|(_, short, _)| short == name)
            .unwrap();
        let events = function["Properties"]["Events"].as_mapping().unwrap();
        let streams: Vec<&Value> = events
            .values()
            .filter(|event| event["Type"].as_str() == Some("DynamoDB"))
            .collect();
        assert_eq!(streams.len(), 1, "{name}");
        let properties = &streams[0]["Properties"];
        assert_eq!(
            strings(&properties["Stream"]),
            ["TaskTable.StreamArn"],
            "{name}"
        );
        // The counter counts every write since the stream began; the notifier tells of new ones.
        assert_eq!(
            properties["StartingPosition"].as_str(),
            Some(start),
            "{name}"
        );
        if name == "counter" {
            // What the sandbox and the bench hand the counter at once.
            let batch = properties["BatchSize"].as_u64().unwrap();
            assert_eq!(batch, baton_tests::COUNTER_BATCH as u64);
        }
    }
}

#[test]
fn every_dlq_and_every_function_has_an_alarm() {
    let template = template();
    let alarmed: BTreeSet<String> = resources(&template, "AWS::CloudWatch::Alarm")
        .iter()
        .flat_map(|(_, alarm)| {
            let dimensions = alarm["Properties"]["Dimensions"].as_sequence().unwrap();
            dimensions
                .iter()
                .flat_map(|d| strings(&d["Value"]))
                .collect::<Vec<_>>()
        })
        .collect();
    for (logical, _) in resources(&template, "AWS::SQS::Queue") {
        if logical.ends_with("DLQ") {
            let name = format!("{logical}.QueueName");
            assert!(alarmed.contains(&name), "{logical} has no alarm");
        }
    }
    for (logical, _, _) in functions() {
        assert!(alarmed.contains(&logical), "{logical} has no errors alarm");
    }
}

#[test]
fn chaos_reaches_the_functions_only_on_the_local_and_test_stages_and_is_off_by_default() {
    let template = template();
    assert_eq!(
        template["Parameters"]["Chaos"]["Default"].as_str(),
        Some("")
    );
    // `ChaosOn: !And [given, !Or [Stage = local, Stage = test]]`, as YAML sees the tags.
    let condition = format!("{:?}", template["Conditions"]["ChaosOn"]);
    for needed in ["\"Chaos\"", "\"local\"", "\"test\"", "Or", "And", "Not"] {
        assert!(
            condition.contains(needed),
            "ChaosOn lacks {needed}: {condition}"
        );
    }
    assert!(!condition.contains("prod"), "{condition}");
    let variable = format!(
        "{:?}",
        template["Globals"]["Function"]["Environment"]["Variables"]["BATON_CHAOS"]
    );
    assert!(
        variable.contains("ChaosOn") && variable.contains("AWS::NoValue"),
        "{variable}"
    );
}
