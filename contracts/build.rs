fn main() -> std::io::Result<()> {
    let protos = [
        "proto/nudge/events/v1/event.proto",
        "proto/nudge/control/v1/tenant.proto",
        "proto/nudge/control/v1/model.proto",
        "proto/nudge/control/v1/erasure.proto",
        "proto/nudge/control/v1/campaign.proto",
        "proto/nudge/interventions/v1/intervention.proto",
        "proto/nudge/features/v1/features.proto",
        "proto/nudge/predictions/v1/prediction.proto",
        "proto/nudge/usage/v1/usage.proto",
        "proto/nudge/sealed/v1/sealed.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    prost_build::Config::new().compile_protos(&protos, &["proto"])
}
