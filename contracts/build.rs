fn main() -> std::io::Result<()> {
    let protos = [
        "proto/nudge/events/v1/event.proto",
        "proto/nudge/control/v1/tenant.proto",
        "proto/nudge/interventions/v1/intervention.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    prost_build::Config::new().compile_protos(&protos, &["proto"])
}
