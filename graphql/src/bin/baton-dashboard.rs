//! Writes the dashboard as one static page, for hosting apart from the API:
//!
//!     baton-dashboard GRAPHQL_URL WEBSOCKET_URL OUT_DIR
//!
//! `OUT_DIR/index.html` then talks to the API at GRAPHQL_URL (the stack's `GraphqlUrl` output)
//! and subscribes at WEBSOCKET_URL (`WebSocketUrl`). The page's origin must be one of the
//! stack's `DashboardOrigins`, which the HTTP API allows cross-origin calls from.

use baton_graphql::dashboard::{Endpoints, page};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [graphql, websocket, out] = args.as_slice() else {
        eprintln!("usage: baton-dashboard GRAPHQL_URL WEBSOCKET_URL OUT_DIR");
        std::process::exit(2)
    };
    let endpoints = Endpoints {
        graphql: Some(graphql.clone()),
        websocket: websocket.clone(),
    };
    let path = std::path::Path::new(out).join("index.html");
    let written =
        std::fs::create_dir_all(out).and_then(|()| std::fs::write(&path, page(&endpoints)));
    if let Err(e) = written {
        eprintln!("cannot write {}: {e}", path.display());
        std::process::exit(1)
    }
    println!("{}", path.display());
}
