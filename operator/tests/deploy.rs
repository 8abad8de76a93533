//! The manifests in `deploy/` as CI sees them: every object `kubectl apply -k deploy/`
//! would send parses into its type with no field lost (a misspelt or misplaced field fails),
//! the example Cells and Tenants validate against the generated CRD schemas and the
//! operator's own checks, the operator's and the control plane's Roles cover every write
//! they make (and a few they must not), and the operator's configuration file loads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use nudge_operator::{apply::contains, build, config::OperatorConfig, crd};
use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::from_value::<Value>(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

/// Parses `doc` as `K` and back: every field of the manifest must survive.
fn round_trips<K: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Result<(), String> {
    let typed: K = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    if contains(&back, doc) {
        Ok(())
    } else {
        Err("a field does not belong to the type (misspelt or misplaced)".into())
    }
}

/// Checks `value` against a CRD's structural OpenAPI schema: types, required fields, enums,
/// and no field the schema does not declare.
fn check(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"] != true {
            errors.push(format!("{at}: null is not allowed"));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !(value.is_i64() || value.is_string()) {
            errors.push(format!("{at}: an integer or a string"));
        }
        return;
    }
    let ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{at}: expected {}", schema["type"]));
        return;
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {options:?}"));
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64())
        && n < min
    {
        errors.push(format!("{at}: below {min}"));
    }
    if let Some(object) = value.as_object() {
        for required in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(required.as_str().unwrap_or_default()) {
                errors.push(format!("{at}.{}: required", required.as_str().unwrap_or_default()));
            }
        }
        let properties = schema["properties"].as_object();
        for (key, field) in object {
            match (properties.and_then(|p| p.get(key)), schema.get("additionalProperties")) {
                (Some(sub), _) => check(sub, field, &format!("{at}.{key}"), errors),
                (None, Some(additional)) if additional.is_object() => {
                    check(additional, field, &format!("{at}.{key}"), errors);
                }
                _ if schema["x-kubernetes-preserve-unknown-fields"] == true => {}
                _ if properties.is_none() => {}
                _ => errors.push(format!("{at}.{key}: not a field of this resource")),
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, item) in list.iter().enumerate() {
            check(items, item, &format!("{at}[{i}]"), errors);
        }
    }
}

fn crd_schema(kind: &str) -> Value {
    let file = match kind {
        "Cell" => "cells.nudge.dev.yaml",
        "ErasureRequest" => "erasurerequests.nudge.dev.yaml",
        _ => "tenants.nudge.dev.yaml",
    };
    let crd = documents(&deploy().join("crds").join(file)).remove(0);
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn schema_errors(doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let schema = crd_schema(doc["kind"].as_str().unwrap());
    // The API server handles apiVersion, kind and metadata itself.
    let mut body = doc.clone();
    for key in ["apiVersion", "kind", "metadata"] {
        body.as_object_mut().unwrap().remove(key);
    }
    check(&schema, &body, "", &mut errors);
    errors
}

#[test]
fn every_manifest_of_the_kustomization_is_a_valid_object() {
    let kustomization = documents(&deploy().join("kustomization.yaml")).remove(0);
    let resources: Vec<&str> =
        kustomization["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    for crd in ["crds/cells.nudge.dev.yaml", "crds/tenants.nudge.dev.yaml", "crds/erasurerequests.nudge.dev.yaml"] {
        assert!(resources.contains(&crd), "the kustomization installs {crd}");
    }
    let mut seen = 0;
    for resource in resources {
        for doc in documents(&deploy().join(resource)) {
            seen += 1;
            let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{resource}: an object without kind"));
            let name = doc["metadata"]["name"].as_str().unwrap_or_else(|| panic!("{resource}: a {kind} without name"));
            let checked = match kind {
                "CustomResourceDefinition" => {
                    let generated = nudge_operator::render().unwrap();
                    let (_, yaml) = generated.iter().find(|(file, _)| resource.ends_with(file.as_str())).unwrap();
                    let generated: Value = serde_yaml::from_str(yaml).unwrap();
                    if generated == doc { Ok(()) } else { Err("differs from the generated CRD".into()) }
                }
                "Namespace" => round_trips::<Namespace>(&doc),
                "ServiceAccount" => round_trips::<ServiceAccount>(&doc),
                "ClusterRole" => round_trips::<ClusterRole>(&doc),
                "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(&doc),
                "Role" => round_trips::<Role>(&doc),
                "RoleBinding" => round_trips::<RoleBinding>(&doc),
                "Deployment" => round_trips::<Deployment>(&doc),
                "Service" => round_trips::<Service>(&doc),
                "KafkaTopic" => {
                    let spec = &doc["spec"];
                    if spec["partitions"].as_i64().is_some_and(|p| p > 0) && spec["topicName"].is_string() {
                        Ok(())
                    } else {
                        Err("a KafkaTopic needs topicName and partitions".into())
                    }
                }
                other => Err(format!("no check for kind {other}: add one")),
            };
            if let Err(problem) = checked {
                panic!("{resource}: {kind} {name}: {problem}");
            }
        }
    }
    assert!(seen > 10, "only {seen} objects read");
    for generated in kustomization["configMapGenerator"].as_array().unwrap() {
        for file in generated["files"].as_array().unwrap() {
            let (_, path) = file.as_str().unwrap().split_once('=').unwrap();
            assert!(deploy().join(path).is_file(), "configMapGenerator names a missing {path}");
        }
    }
}

#[test]
fn the_examples_validate_against_the_crds_and_the_operators_checks() {
    let mut examples = 0;
    for entry in std::fs::read_dir(deploy().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        for mut doc in documents(&path) {
            examples += 1;
            let errors = schema_errors(&doc);
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            // What the API server adds before the operator sees it.
            doc["metadata"]["uid"] = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into();
            match doc["kind"].as_str().unwrap() {
                "Cell" => {
                    let cell: crd::Cell = serde_json::from_value(doc).unwrap();
                    build::validate(&cell).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                "Tenant" => {
                    let tenant: crd::Tenant = serde_json::from_value(doc).unwrap();
                    nudge_operator::tenant::validate(&tenant).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                "ErasureRequest" => {
                    let erasure: crd::ErasureRequest = serde_json::from_value(doc).unwrap();
                    nudge_operator::erasure::check(&erasure).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                other => panic!("{}: unexpected kind {other}", path.display()),
            }
        }
    }
    assert!(examples >= 3);
}

#[test]
fn the_schema_check_catches_what_the_api_server_would_refuse() {
    let cell = documents(&deploy().join("examples/shared-cell.yaml")).remove(0);
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut doc = cell.clone();
        edit(&mut doc);
        schema_errors(&doc)
    };
    assert_eq!(broken(&|d| d["spec"]["tier"] = "platinum".into()).len(), 1, "an enum");
    assert_eq!(broken(&|d| d["spec"]["capacity"]["tenants"] = "many".into()).len(), 1, "a type");
    assert_eq!(broken(&|d| d["spec"]["regoin"] = "eu".into()).len(), 1, "an unknown field");
    assert_eq!(
        broken(&|d| {
            d["spec"].as_object_mut().unwrap().remove("version");
        })
        .len(),
        1,
        "a required field"
    );
    let mut deployment =
        documents(&deploy().join("k8s/operator.yaml")).into_iter().find(|d| d["kind"] == "Deployment").unwrap();
    deployment["spec"]["replicaz"] = 2.into();
    assert!(round_trips::<Deployment>(&deployment).is_err(), "a misspelt field of a built-in kind");
}

/// Whether a rule of `role` (a Role in `deploy/k8s/<file>`) allows `verb` on `resource`.
fn role_allows(file: &str, name: &str) -> impl Fn(&str, &str, &str) -> bool {
    let role = documents(&deploy().join("k8s").join(file))
        .into_iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Role {name} in {file}"));
    assert_eq!(role["metadata"]["namespace"], "nudge", "rights in the cells' namespace only");
    let role: Role = serde_json::from_value(role).unwrap();
    move |group: &str, resource: &str, verb: &str| {
        role.rules.iter().flatten().any(|rule| {
            rule.api_groups.iter().flatten().any(|g| g == group)
                && rule.resources.iter().flatten().any(|r| r == resource)
                && rule.verbs.iter().any(|v| v == verb)
        })
    }
}

#[test]
fn the_roles_cover_every_write_and_no_more_than_that() {
    let allows = role_allows("operator.yaml", "nudge-operator");
    // Server-side apply of a new object is checked as `create`.
    for kind in build::child_kinds(&build::Platform::default()) {
        for verb in ["get", "list", "watch", "create", "patch", "delete"] {
            assert!(allows(&kind.group, &kind.plural, verb), "{verb} {}/{}", kind.group, kind.plural);
        }
    }
    for resource in ["cells", "tenants", "cells/status", "tenants/status", "erasurerequests/status"] {
        assert!(allows(crd::GROUP, resource, "patch"), "patch {resource}");
    }
    for verb in ["get", "list", "watch"] {
        assert!(allows(crd::GROUP, "erasurerequests", verb), "{verb} erasurerequests");
    }
    assert!(!allows(crd::GROUP, "erasurerequests", "patch"), "an erasure's spec is the operator's (people's) own");
    assert!(allows(crd::GROUP, "cells", "create"), "a dedicated tenant's cell is created");
    assert!(allows(crd::GROUP, "cells", "delete"), "a deleted dedicated tenant deletes its cell");
    assert!(!allows(crd::GROUP, "tenants", "delete"), "tenants are the control plane's to delete");
    for owner in ["cells/finalizers", "tenants/finalizers"] {
        assert!(allows(crd::GROUP, owner, "update"), "blockOwnerDeletion on children of {owner}");
    }

    let control_plane = role_allows("control-plane.yaml", "nudge-control-plane");
    for verb in ["create", "patch", "get", "delete"] {
        assert!(control_plane(crd::GROUP, "tenants", verb), "{verb} tenants");
    }
    assert!(control_plane("", "secrets", "create") && control_plane("", "secrets", "patch"));
    assert!(control_plane(crd::GROUP, "tenants/finalizers", "update"), "the Secret's owner blocks deletion");
    assert!(!control_plane("", "secrets", "get"), "the control plane never reads the cells' secrets");
    assert!(!control_plane(crd::GROUP, "cells", "patch"), "cells are the operator's");
}

#[test]
fn the_operator_configuration_file_loads() {
    let config: OperatorConfig = nudge_platform_config::load(
        "NUDGE_TEST_UNUSED_OPERATOR__",
        Some(&deploy().join("config/operator.toml")),
        &serde_json::json!({}),
    )
    .unwrap();
    let defaults = OperatorConfig::default();
    assert_eq!(config.platform, defaults.platform, "the file documents the defaults");
    assert_eq!(config.dedicated, defaults.dedicated);
    assert_eq!(config.control_plane.url, defaults.control_plane.url);
    assert_eq!(config.namespace.as_deref(), Some("nudge"));
}
