//! `sqlx::migrate!` embeds `migrations/` at compile time, but Cargo does not know the macro
//! read it: without this, a new migration is left out of the build until something else in
//! the crate changes (sqlx documents the same build script).
fn main() {
    println!("cargo:rerun-if-changed=../../../migrations");
}
