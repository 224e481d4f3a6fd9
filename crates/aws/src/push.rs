use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use baton_app::{Delivery, InfraError, Push};

/// The HTTPS endpoint of WebSocket API `api_id`, stage `stage`: on AWS
/// `https://{api}.execute-api.{region}.amazonaws.com/{stage}`; with `AWS_ENDPOINT_URL` set (an
/// emulator), `{endpoint}/_aws/execute-api/{api}/{stage}`. Its `@connections` path is the
/// management API; the same address with a WebSocket scheme is where clients connect
/// ([`websocket_url`]).
pub fn websocket_endpoint(sdk: &aws_config::SdkConfig, api_id: &str, stage: &str) -> String {
    match sdk.endpoint_url() {
        Some(emulator) => format!(
            "{}/_aws/execute-api/{api_id}/{stage}",
            emulator.trim_end_matches('/')
        ),
        None => {
            let region = sdk.region().map_or("us-east-1", |r| r.as_ref());
            format!("https://{api_id}.execute-api.{region}.amazonaws.com/{stage}")
        }
    }
}

/// Where clients of WebSocket API `api_id`, stage `stage` connect: [`websocket_endpoint`] with
/// `wss://` (or `ws://` for a plain-HTTP emulator).
pub fn websocket_url(sdk: &aws_config::SdkConfig, api_id: &str, stage: &str) -> String {
    let endpoint = websocket_endpoint(sdk, api_id, stage);
    match endpoint.split_once("://") {
        Some(("http", rest)) => format!("ws://{rest}"),
        Some((_, rest)) => format!("wss://{rest}"),
        None => endpoint,
    }
}

/// Messages to WebSocket clients through API Gateway's `@connections` management API.
#[derive(Debug, Clone)]
pub struct ApiGatewayPush {
    client: Client,
}

impl ApiGatewayPush {
    /// Pushes through the management endpoint of WebSocket API `api_id`, stage `stage`
    /// ([`websocket_endpoint`]).
    pub fn new(sdk: &aws_config::SdkConfig, api_id: &str, stage: &str) -> Self {
        let endpoint = websocket_endpoint(sdk, api_id, stage);
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .build();
        Self {
            client: Client::from_conf(config),
        }
    }
}

#[async_trait]
impl Push for ApiGatewayPush {
    async fn send(&self, connection: &str, message: &str) -> Result<Delivery, InfraError> {
        let result = self
            .client
            .post_to_connection()
            .connection_id(connection)
            .data(Blob::new(message.as_bytes()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Delivery::Sent),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_gone_exception()) =>
            {
                Ok(Delivery::Gone)
            }
            Err(error) => Err(InfraError::new("API Gateway PostToConnection", error)),
        }
    }

    async fn disconnect(&self, connection: &str) -> Result<(), InfraError> {
        let result = self
            .client
            .delete_connection()
            .connection_id(connection)
            .send()
            .await;
        match result {
            Err(error)
                if !error
                    .as_service_error()
                    .is_some_and(|e| e.is_gone_exception()) =>
            {
                Err(InfraError::new("API Gateway DeleteConnection", error))
            }
            _ => Ok(()),
        }
    }
}
