//! A cell's NetworkPolicies.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
        NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{KAFKA_PORT, Platform};
use crate::crd::Cell;

fn namespace_peer(namespace: &str, pods: Option<BTreeMap<String, String>>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), namespace.to_owned())])),
            ..LabelSelector::default()
        }),
        pod_selector: pods.map(|labels| LabelSelector { match_labels: Some(labels), ..LabelSelector::default() }),
        ..NetworkPolicyPeer::default()
    }
}

fn tcp(port: IntOrString) -> NetworkPolicyPort {
    NetworkPolicyPort { protocol: Some("TCP".to_owned()), port: Some(port), ..NetworkPolicyPort::default() }
}

/// Two policies (NetworkPolicies add up). `<cell>`, over all the cell's pods: Prometheus may
/// scrape every role, and the pods reach DNS, their own Kafka cluster, their own Redis and
/// the platform's OpenBao (the shoppers' data keys), and nothing else (not even the tenants' Postgres, which cell processes never connect to).
/// `<cell>-traffic`, over the ingest and gateway pods: shopper and merchant traffic reaches
/// them only from the ingress controller's namespace.
pub(super) fn network_policies(
    cell: &Cell,
    name: &str,
    platform: &Platform,
    kafka_cluster: &str,
    kafka_namespace: Option<&str>,
    meta: &dyn Fn(String, Option<&str>) -> ObjectMeta,
) -> Vec<NetworkPolicy> {
    let http = || tcp(IntOrString::String("http".to_owned()));
    let store = |r: &crate::crd::DataStoreRef| NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr: r.cidr.clone(), except: None }),
            ..NetworkPolicyPeer::default()
        }]),
        ports: Some(vec![tcp(IntOrString::Int(r.port))]),
    };
    let kafka_pods = BTreeMap::from([("strimzi.io/cluster".to_owned(), kafka_cluster.to_owned())]);
    let kafka_peer = match kafka_namespace {
        Some(ns) => namespace_peer(ns, Some(kafka_pods)),
        None => NetworkPolicyPeer {
            pod_selector: Some(LabelSelector { match_labels: Some(kafka_pods), ..LabelSelector::default() }),
            ..NetworkPolicyPeer::default()
        },
    };
    let cell_pods = BTreeMap::from([("app.kubernetes.io/instance".to_owned(), name.to_owned())]);
    let all = NetworkPolicySpec {
        pod_selector: Some(LabelSelector { match_labels: Some(cell_pods.clone()), ..LabelSelector::default() }),
        policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
        ingress: Some(vec![NetworkPolicyIngressRule {
            from: Some(vec![namespace_peer(&platform.monitoring_namespace, None)]),
            ports: Some(vec![http()]),
        }]),
        egress: Some(vec![
            NetworkPolicyEgressRule {
                to: Some(vec![namespace_peer(
                    "kube-system",
                    Some(BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())])),
                )]),
                ports: Some(vec![
                    NetworkPolicyPort {
                        protocol: Some("UDP".to_owned()),
                        port: Some(IntOrString::Int(53)),
                        end_port: None,
                    },
                    tcp(IntOrString::Int(53)),
                ]),
            },
            NetworkPolicyEgressRule {
                to: Some(vec![kafka_peer]),
                ports: Some(vec![tcp(IntOrString::Int(KAFKA_PORT))]),
            },
            store(&cell.spec.redis),
            NetworkPolicyEgressRule {
                to: Some(vec![namespace_peer(&platform.vault_namespace, None)]),
                ports: Some(vec![tcp(IntOrString::Int(platform.vault_port))]),
            },
        ]),
    };
    let traffic = NetworkPolicySpec {
        pod_selector: Some(LabelSelector {
            match_labels: Some(cell_pods),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "nudge.dev/role".to_owned(),
                operator: "In".to_owned(),
                values: Some(vec!["ingest".to_owned(), "gateway".to_owned()]),
            }]),
        }),
        policy_types: Some(vec!["Ingress".to_owned()]),
        ingress: Some(vec![NetworkPolicyIngressRule {
            from: Some(vec![namespace_peer(&platform.ingress_namespace, None)]),
            ports: Some(vec![http()]),
        }]),
        egress: None,
    };
    vec![
        NetworkPolicy { metadata: meta(name.to_owned(), None), spec: Some(all) },
        NetworkPolicy { metadata: meta(format!("{name}-traffic"), None), spec: Some(traffic) },
    ]
}
