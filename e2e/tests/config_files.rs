//! The example configuration files load through the real loader and match the defaults.

use std::path::Path;

use nudge_control_plane::ControlPlaneConfig;
use nudge_data_plane_cell::CellConfig;
use secrecy::ExposeSecret;

#[test]
fn example_configs_load_and_equal_the_defaults() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let none = serde_json::json!({});
    let cp: ControlPlaneConfig = nudge_platform_config::load(
        "NUDGE_TEST_UNUSED_CP__",
        Some(&root.join("deploy/config/control-plane.toml")),
        &none,
    )?;
    let defaults = ControlPlaneConfig::default();
    // Debug output redacts secrets, so compare those explicitly.
    assert_eq!(format!("{cp:?}"), format!("{defaults:?}"));
    assert_eq!(cp.database.url.expose_secret(), defaults.database.url.expose_secret());
    assert_eq!(cp.database.owner_url.expose_secret(), defaults.database.owner_url.expose_secret());
    assert_eq!(cp.redis.url.expose_secret(), defaults.redis.url.expose_secret());

    let cell: CellConfig =
        nudge_platform_config::load("NUDGE_TEST_UNUSED_CELL__", Some(&root.join("deploy/config/cell.toml")), &none)?;
    assert_eq!(format!("{cell:?}"), format!("{:?}", CellConfig::default()));
    assert_eq!(cell.redis.url.expose_secret(), CellConfig::default().redis.url.expose_secret());
    Ok(())
}
