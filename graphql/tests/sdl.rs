//! `schema.graphql` at the top level is the exported schema; this test fails when it drifts.
//! Regenerate it with `BATON_UPDATE_SDL=1 cargo test -p baton-graphql --test sdl`.

#[test]
fn the_checked_in_sdl_matches_the_schema() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    let current = baton_graphql::sdl();
    if std::env::var_os("BATON_UPDATE_SDL").is_some() {
        std::fs::write(path, &current).expect("write schema.graphql");
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == current,
        "schema.graphql is out of date: run `BATON_UPDATE_SDL=1 cargo test -p baton-graphql --test sdl`"
    );
}
