//! The dashboard: one page (`dashboard/` at the repository's top: `index.html`, `app.js`,
//! `style.css`), put together with where it finds the API. The gateway serves it at `/`;
//! `baton-dashboard` writes it out as a static file to host elsewhere.

use serde::Serialize;

const TEMPLATE: &str = include_str!("../../dashboard/index.html");
const SCRIPT: &str = include_str!("../../dashboard/app.js");
const STYLE: &str = include_str!("../../dashboard/style.css");

/// Where the page finds the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Endpoints {
    /// The GraphQL URL; `None`: the `graphql` route beside the page (served by the gateway).
    pub graphql: Option<String>,
    /// Where subscriptions connect (`wss://…`).
    pub websocket: String,
}

/// The page, in one document, for `endpoints`.
pub fn page(endpoints: &Endpoints) -> String {
    // JSON inside <script>: `<` escaped, so no value can close the element.
    let endpoints = serde_json::to_string(endpoints)
        .expect("plain strings serialize")
        .replace('<', "\\u003c");
    TEMPLATE
        .replacen("/*STYLE*/", STYLE, 1)
        .replacen("/*ENDPOINTS*/", &endpoints, 1)
        .replacen("/*SCRIPT*/", SCRIPT, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints_in(page: &str) -> serde_json::Value {
        let start = page
            .find(r#"<script id="endpoints" type="application/json">"#)
            .unwrap();
        let rest = &page[start..];
        let json = &rest[rest.find('>').unwrap() + 1..rest.find("</script>").unwrap()];
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_page_carries_its_style_script_and_endpoints() {
        let page = page(&Endpoints {
            graphql: Some("https://api.example/graphql".into()),
            websocket: "wss://live.example/prod".into(),
        });
        assert!(page.contains("--accent"), "the style is inlined");
        assert!(page.contains("class Live"), "the script is inlined");
        assert!(!page.contains("/*STYLE*/") && !page.contains("/*SCRIPT*/"));
        assert_eq!(
            endpoints_in(&page),
            serde_json::json!({"graphql": "https://api.example/graphql", "websocket": "wss://live.example/prod"})
        );
    }

    #[test]
    fn no_endpoint_can_close_the_script_element() {
        let page = page(&Endpoints {
            graphql: None,
            websocket: "wss://x/</script><script>alert(1)</script>".into(),
        });
        assert_eq!(
            page.matches("</script>").count(),
            2,
            "the endpoints' and the app's"
        );
        assert_eq!(
            endpoints_in(&page)["websocket"],
            "wss://x/</script><script>alert(1)</script>"
        );
        assert_eq!(endpoints_in(&page)["graphql"], serde_json::Value::Null);
    }
}
