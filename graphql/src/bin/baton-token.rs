//! Mints a bearer token for a stack that verifies tokens itself (the local stage):
//!
//!     baton-token TENANT [SUBJECT] [--admin]
//!
//! `--admin` adds the `baton:admin` scope (the global kill switch).
//! Signs with `BATON_JWT_SECRET`, `BATON_JWT_ISSUER` and `BATON_JWT_AUDIENCE` (as
//! `localstack/env.sh` sets them); valid for 12 hours.

use baton_domain::Tenant;
use baton_graphql::Caller;
use baton_graphql::auth::mint;

fn main() {
    let (flags, mut args): (Vec<String>, Vec<String>) = std::env::args()
        .skip(1)
        .partition(|arg| arg.starts_with("--"));
    let admin = flags.iter().any(|flag| flag == "--admin");
    if let Some(unknown) = flags.iter().find(|flag| *flag != "--admin") {
        exit(&format!("unknown flag {unknown}"));
    }
    args.reverse();
    let mut args = std::iter::from_fn(move || args.pop());
    let usage = "usage: baton-token TENANT [SUBJECT] [--admin]";
    let tenant = args.next().unwrap_or_else(|| exit(usage));
    let tenant = Tenant::parse(&tenant).unwrap_or_else(|e| exit(&e.to_string()));
    let subject = args.next().unwrap_or_else(|| "developer".to_owned());
    let var =
        |name: &str| std::env::var(name).unwrap_or_else(|_| exit(&format!("{name} is not set")));
    let token = mint(
        var("BATON_JWT_SECRET").as_bytes(),
        &var("BATON_JWT_ISSUER"),
        &var("BATON_JWT_AUDIENCE"),
        &Caller {
            tenant,
            subject,
            admin,
        },
        chrono::Duration::hours(12),
    );
    println!("{token}");
}

fn exit(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2)
}
