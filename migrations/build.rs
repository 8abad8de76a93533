// `sqlx::migrate!` embeds the SQL at compile time; rebuild when a migration is added or edited.
fn main() {
    println!("cargo:rerun-if-changed=sql");
}
