//! `setup`: the CloudFormation custom resource that puts what a stack must start with into its
//! table: the global kill switch, present and disengaged. Dispatch treats a missing switch as an
//! engaged one (fail-closed), so a stack without it would start nothing. An existing switch is
//! left as it is (a stack update never disengages it); deleting the stack deletes the table.

use baton_app::InfraError;
use baton_aws::DynamoStore;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{error, info};

/// The parts of a custom resource request this resource uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Request {
    /// `Create`, `Update` or `Delete`.
    pub request_type: String,
    /// Where to PUT the answer (a presigned S3 URL on AWS).
    #[serde(rename = "ResponseURL")]
    pub response_url: String,
    /// Echoed in the answer.
    pub stack_id: String,
    /// Echoed in the answer.
    pub request_id: String,
    /// Echoed in the answer.
    pub logical_resource_id: String,
}

/// The physical id of the resource: there is one switch per stack.
const PHYSICAL_ID: &str = "baton-global-kill-switch";

/// Handles one custom resource request and answers CloudFormation at its response URL.
pub async fn handle(
    store: &DynamoStore,
    http: &reqwest::Client,
    request: Request,
) -> Result<(), reqwest::Error> {
    let outcome = match request.request_type.as_str() {
        "Delete" => Ok(false),
        _ => store.install_global_switch().await,
    };
    let (url, answer) = answer(&request, outcome);
    http.put(url)
        .header("content-type", "")
        .body(answer.to_string())
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Where to answer, and the response document CloudFormation expects.
fn answer(request: &Request, outcome: Result<bool, InfraError>) -> (&str, Value) {
    let (status, reason) = match outcome {
        Ok(installed) => {
            info!(installed, "global kill switch present");
            ("SUCCESS", "global kill switch present".to_owned())
        }
        Err(failure) => {
            error!(error = ?failure, "setup failed");
            ("FAILED", format!("{failure}: {}", failure.source))
        }
    };
    let document = json!({
        "Status": status,
        "Reason": reason,
        "PhysicalResourceId": PHYSICAL_ID,
        "StackId": request.stack_id,
        "RequestId": request.request_id,
        "LogicalResourceId": request.logical_resource_id,
    });
    (&request.response_url, document)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_answered_with_its_reason_and_the_request_ids() {
        let request: Request = serde_json::from_value(json!({
            "RequestType": "Create", "RequestId": "r-1", "ResponseURL": "http://cfn/answer",
            "StackId": "stack-1", "ResourceType": "Custom::KillSwitch",
            "LogicalResourceId": "GlobalKillSwitch", "ResourceProperties": {}
        }))
        .unwrap();
        let (url, document) = answer(&request, Err(InfraError::new("PutItem", "denied")));
        assert_eq!(url, "http://cfn/answer");
        assert_eq!(document["Status"], "FAILED");
        assert_eq!(document["Reason"], "PutItem failed: denied");
        assert_eq!(document["RequestId"], "r-1");
        let (_, document) = answer(&request, Ok(true));
        assert_eq!(document["Status"], "SUCCESS");
        assert_eq!(document["PhysicalResourceId"], PHYSICAL_ID);
    }
}
