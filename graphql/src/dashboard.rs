//! The dashboard: one page (`dashboard/` at the repository's top: `index.html`, `app.js`,
//! `style.css`), put together with where it finds the API. The gateway serves it at `/`;
//! `baton-dashboard` writes it out as a static file to host elsewhere.

use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};

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

/// The page, in one document, for `endpoints`, carrying its [`policy`] (without framing, which
/// a `<meta>` cannot set) so a static copy is held to it too.
pub fn page(endpoints: &Endpoints) -> String {
    // JSON inside <script>: `<` escaped, so no value can close the element.
    let json = serde_json::to_string(endpoints)
        .expect("plain strings serialize")
        .replace('<', "\\u003c");
    let meta = format!(
        r#"<meta http-equiv="Content-Security-Policy" content="{}">"#,
        policy(endpoints, false)
    );
    TEMPLATE
        .replacen("<!--POLICY-->", &meta, 1)
        .replacen("/*STYLE*/", STYLE, 1)
        .replacen("/*ENDPOINTS*/", &json, 1)
        .replacen("/*SCRIPT*/", SCRIPT, 1)
}

/// The page's Content-Security-Policy: its own inlined script and style, named by hash; requests
/// to the page's origin and the API's; no plugins, frames, forms or base URL. With `framing`,
/// also `frame-ancestors 'none'` (no site may frame it), which only a response header carries.
pub fn policy(endpoints: &Endpoints, framing: bool) -> String {
    let hash = |text: &str| {
        let digest = Sha256::digest(text.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    let mut connect = vec!["'self'".to_owned()];
    let origins = [
        endpoints.graphql.as_deref(),
        Some(endpoints.websocket.as_str()),
    ];
    connect.extend(origins.into_iter().flatten().filter_map(origin));
    let mut policy = format!(
        "default-src 'none'; script-src {}; style-src {}; img-src data:; connect-src {}; \
         base-uri 'none'; form-action 'none'",
        hash(SCRIPT),
        hash(STYLE),
        connect.join(" "),
    );
    if framing {
        policy.push_str("; frame-ancestors 'none'");
    }
    policy
}

/// The `scheme://host[:port]` of `url`, if it is one a policy can name (nothing that could
/// break out of the policy or its attribute).
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    let plain = |text: &str, extra: &str| {
        !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    (plain(scheme, "+-.") && plain(host, ".-:[]")).then(|| format!("{scheme}://{host}"))
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
    fn the_policy_allows_the_inlined_script_and_style_and_the_apis_origins_only() {
        let endpoints = Endpoints {
            graphql: Some("https://api.example/prod/graphql".into()),
            websocket: "wss://live.example/prod".into(),
        };
        let header = policy(&endpoints, true);
        assert!(
            header.starts_with("default-src 'none'; script-src 'sha256-"),
            "{header}"
        );
        assert!(
            header.contains("connect-src 'self' https://api.example wss://live.example;"),
            "{header}"
        );
        assert!(header.ends_with("; frame-ancestors 'none'"));
        assert!(!header.contains("unsafe"));
        let page = page(&endpoints);
        let meta = policy(&endpoints, false);
        assert!(page.contains(&format!(r#"content="{meta}""#)));
        assert!(!meta.contains("frame-ancestors"));
        assert!(
            !SCRIPT.contains("style:"),
            "style attributes would be refused"
        );
        // A URL that could break out of the policy is left out of it.
        let hostile = Endpoints {
            graphql: None,
            websocket: "wss://x\" onload=\"alert(1)/".into(),
        };
        assert!(policy(&hostile, true).contains("connect-src 'self';"));
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
