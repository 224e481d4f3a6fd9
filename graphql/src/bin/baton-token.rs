//! Mints a bearer token for a stack that verifies tokens itself (the local stage):
//!
//!     baton-token TENANT [SUBJECT]
//!
//! Signs with `BATON_JWT_SECRET`, `BATON_JWT_ISSUER` and `BATON_JWT_AUDIENCE` (as
//! `localstack/env.sh` sets them); valid for 12 hours.

use baton_domain::Tenant;
use baton_graphql::Caller;
use baton_graphql::auth::mint;

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: baton-token TENANT [SUBJECT]";
    let tenant = args.next().unwrap_or_else(|| exit(usage));
    let tenant = Tenant::parse(&tenant).unwrap_or_else(|e| exit(&e.to_string()));
    let subject = args.next().unwrap_or_else(|| "developer".to_owned());
    let var =
        |name: &str| std::env::var(name).unwrap_or_else(|_| exit(&format!("{name} is not set")));
    let token = mint(
        var("BATON_JWT_SECRET").as_bytes(),
        &var("BATON_JWT_ISSUER"),
        &var("BATON_JWT_AUDIENCE"),
        &Caller { tenant, subject },
        chrono::Duration::hours(12),
    );
    println!("{token}");
}

fn exit(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2)
}
