//! What a tenant uses against what its plan allows.
//!
//! `status.usage` and `status.entitlements` are the sums, over the tenant namespaces, of the
//! `status.used` and `status.hard` of each `flotilla-quota` ResourceQuota, in exact quantity
//! arithmetic. Being over quota is judged per namespace, because that is how quotas work: the
//! plan's `quota.hard` applies to each namespace on its own, so one namespace above its quota
//! is refused new resources even when the tenant's total is below the sum. The comparison is
//! against the plan itself, not against `status.hard`: right after a plan change the quota
//! controller has not caught up yet, and while suspended `pods: 0` would report every running
//! pod as an excess. Nothing is ever deleted because of an excess; it is only reported.

use std::collections::BTreeMap;
use std::fmt;

use flotilla_crds::ParsedQuantity;
use flotilla_crds::plan::PlanQuota;
use flotilla_crds::quantity::QuantityError;
use k8s_openapi::api::core::v1::ResourceQuota;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::build::QUOTA_NAME;

/// One resource of one namespace above what the plan allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Overage {
    /// The namespace.
    pub namespace: String,
    /// The resource name, e.g. `requests.cpu`.
    pub resource: String,
    /// What is in use.
    pub used: Quantity,
    /// What the plan allows.
    pub allowed: Quantity,
    /// By how much `used` exceeds `allowed`.
    pub excess: Quantity,
}

impl fmt::Display for Overage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} uses {} of {} (over by {})",
            self.namespace, self.resource, self.used.0, self.allowed.0, self.excess.0
        )
    }
}

/// A quantity in a ResourceQuota status that does not parse (left out of the sums).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableQuantity {
    /// The namespace.
    pub namespace: String,
    /// `used` or `hard`, and the resource, e.g. `used[pods]`.
    pub field: String,
    /// Why it does not parse.
    pub error: QuantityError,
}

/// Usage of a tenant, summed and compared.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageReport {
    /// Sum of `status.used` per resource (for `status.usage`).
    pub usage: BTreeMap<String, Quantity>,
    /// Sum of `status.hard` per resource (for `status.entitlements`).
    pub entitlements: BTreeMap<String, Quantity>,
    /// Every resource of every namespace above the plan, by namespace then resource.
    pub overages: Vec<Overage>,
    /// Tenant namespaces whose quota has not reported usage yet (sorted).
    pub unreported: Vec<String>,
    /// Quantities that could not be read (the API server never writes such; reported
    /// rather than silently dropped).
    pub unreadable: Vec<UnreadableQuantity>,
}

impl UsageReport {
    /// Whether some namespace uses more than the plan allows.
    pub fn is_over_quota(&self) -> bool {
        !self.overages.is_empty()
    }
}

/// Sums the usage of the tenant `namespaces` from their observed `quotas` (other quotas in
/// the list, such as ones tenants created themselves, are ignored) and compares each
/// namespace against `plan_quota`. `None` when no tenant namespace has reported usage yet.
pub fn summarize(
    namespaces: &[String],
    quotas: &[ResourceQuota],
    plan_quota: Option<&PlanQuota>,
) -> Option<UsageReport> {
    let mut report = UsageReport::default();
    let mut usage = Sums::default();
    let mut entitlements = Sums::default();
    let allowed = plan_quota.map(|q| parse_list(&q.hard)).unwrap_or_default();
    let mut reported_any = false;

    for namespace in namespaces {
        let status = quotas
            .iter()
            .find(|q| {
                q.metadata.name.as_deref() == Some(QUOTA_NAME)
                    && q.metadata.namespace.as_deref() == Some(namespace.as_str())
            })
            .and_then(|q| q.status.as_ref());
        let Some(used) = status.and_then(|s| s.used.as_ref()) else {
            report.unreported.push(namespace.clone());
            continue;
        };
        reported_any = true;
        for (resource, quantity) in used {
            match ParsedQuantity::from_quantity(quantity) {
                Ok(value) => {
                    usage.add(resource, value);
                    if let Some(limit) = allowed.get(resource)
                        && value > *limit
                    {
                        report.overages.push(Overage {
                            namespace: namespace.clone(),
                            resource: resource.clone(),
                            used: value.to_quantity(),
                            allowed: limit.to_quantity(),
                            excess: difference(value, *limit).to_quantity(),
                        });
                    }
                }
                Err(error) => report.unreadable.push(UnreadableQuantity {
                    namespace: namespace.clone(),
                    field: format!("used[{resource}]"),
                    error,
                }),
            }
        }
        for (resource, quantity) in status.and_then(|s| s.hard.as_ref()).into_iter().flatten() {
            match ParsedQuantity::from_quantity(quantity) {
                Ok(value) => entitlements.add(resource, value),
                Err(error) => report.unreadable.push(UnreadableQuantity {
                    namespace: namespace.clone(),
                    field: format!("hard[{resource}]"),
                    error,
                }),
            }
        }
    }
    report.unreported.sort();
    report.usage = usage.into_quantities();
    report.entitlements = entitlements.into_quantities();
    reported_any.then_some(report)
}

/// Per-resource running sums. Each sum keeps the format of the first quantity added, so
/// memory stays binary (`16Gi`) and CPU decimal (`1500m`).
#[derive(Default)]
struct Sums(BTreeMap<String, ParsedQuantity>);

impl Sums {
    fn add(&mut self, resource: &str, value: ParsedQuantity) {
        self.0
            .entry(resource.to_owned())
            .and_modify(|sum| *sum = sum.saturating_add(value))
            .or_insert(value);
    }

    fn into_quantities(self) -> BTreeMap<String, Quantity> {
        self.0
            .into_iter()
            .map(|(resource, sum)| (resource, sum.to_quantity()))
            .collect()
    }
}

fn parse_list(list: &BTreeMap<String, Quantity>) -> BTreeMap<String, ParsedQuantity> {
    list.iter()
        .filter_map(|(name, q)| Some((name.clone(), ParsedQuantity::from_quantity(q).ok()?)))
        .collect()
}

/// `minuend − subtrahend`, in the minuend's format.
///
/// `ParsedQuantity` offers addition but no subtraction or negation, so the subtrahend is
/// negated through its canonical text (a canonical quantity has no sign, and `-` in front
/// of it is a valid quantity of the same magnitude).
fn difference(minuend: ParsedQuantity, subtrahend: ParsedQuantity) -> ParsedQuantity {
    let negated = ParsedQuantity::parse(&format!("-{}", subtrahend.to_canonical_string()))
        .unwrap_or(ParsedQuantity::ZERO);
    minuend.saturating_add(negated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceQuotaStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use proptest::prelude::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    fn list(entries: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), q(v)))
            .collect()
    }

    fn quota(namespace: &str, used: &[(&str, &str)], hard: &[(&str, &str)]) -> ResourceQuota {
        ResourceQuota {
            metadata: ObjectMeta {
                name: Some(QUOTA_NAME.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            status: Some(ResourceQuotaStatus {
                used: Some(list(used)),
                hard: Some(list(hard)),
            }),
            ..ResourceQuota::default()
        }
    }

    fn names(namespaces: &[&str]) -> Vec<String> {
        namespaces.iter().map(|s| (*s).to_owned()).collect()
    }

    fn plan(hard: &[(&str, &str)]) -> PlanQuota {
        PlanQuota { hard: list(hard) }
    }

    #[test]
    fn usage_and_entitlements_are_summed_exactly() {
        let quotas = [
            quota(
                "a",
                &[
                    ("requests.cpu", "1500m"),
                    ("limits.memory", "3Gi"),
                    ("pods", "4"),
                ],
                &[
                    ("requests.cpu", "4"),
                    ("limits.memory", "8Gi"),
                    ("pods", "20"),
                ],
            ),
            quota(
                "b",
                &[
                    ("requests.cpu", "700m"),
                    ("limits.memory", "512Mi"),
                    ("pods", "1"),
                ],
                &[
                    ("requests.cpu", "4"),
                    ("limits.memory", "8Gi"),
                    ("pods", "20"),
                ],
            ),
        ];
        let report = summarize(&names(&["a", "b"]), &quotas, None).unwrap();
        assert_eq!(
            report.usage,
            list(&[
                ("limits.memory", "3584Mi"),
                ("pods", "5"),
                ("requests.cpu", "2200m")
            ])
        );
        assert_eq!(
            report.entitlements,
            list(&[
                ("limits.memory", "16Gi"),
                ("pods", "40"),
                ("requests.cpu", "8")
            ])
        );
        assert!(report.overages.is_empty());
        assert!(!report.is_over_quota());
        assert!(report.unreported.is_empty());
    }

    #[test]
    fn overages_are_judged_per_namespace_against_the_plan() {
        // After a downgrade to 2 CPUs and 10 pods per namespace: `a` is over on both, `b`
        // is within, and the totals alone would hide `a`'s pods.
        let quotas = [
            quota(
                "a",
                &[
                    ("requests.cpu", "3"),
                    ("pods", "12"),
                    ("limits.memory", "10Gi"),
                ],
                &[],
            ),
            quota("b", &[("requests.cpu", "500m"), ("pods", "2")], &[]),
        ];
        let report = summarize(
            &names(&["a", "b"]),
            &quotas,
            Some(&plan(&[
                ("requests.cpu", "2"),
                ("pods", "10"),
                ("limits.memory", "8Gi"),
            ])),
        )
        .unwrap();
        let lines: Vec<String> = report.overages.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "a: limits.memory uses 10Gi of 8Gi (over by 2Gi)",
                "a: pods uses 12 of 10 (over by 2)",
                "a: requests.cpu uses 3 of 2 (over by 1)",
            ]
        );
        assert!(report.is_over_quota());
    }

    #[test]
    fn fractional_excess_is_exact() {
        let quotas = [quota("a", &[("requests.cpu", "2100m")], &[])];
        let report = summarize(
            &names(&["a"]),
            &quotas,
            Some(&plan(&[("requests.cpu", "2")])),
        )
        .unwrap();
        assert_eq!(report.overages[0].excess, q("100m"));
        let at_limit = [quota("a", &[("requests.cpu", "2000m")], &[])];
        let report = summarize(
            &names(&["a"]),
            &at_limit,
            Some(&plan(&[("requests.cpu", "2")])),
        )
        .unwrap();
        assert!(
            report.overages.is_empty(),
            "using exactly the quota is not over it"
        );
    }

    #[test]
    fn resources_the_plan_does_not_limit_are_never_over() {
        let quotas = [quota("a", &[("services", "50")], &[])];
        let report = summarize(&names(&["a"]), &quotas, Some(&plan(&[("pods", "1")]))).unwrap();
        assert!(report.overages.is_empty());
        assert_eq!(report.usage, list(&[("services", "50")]));
    }

    #[test]
    fn namespaces_without_a_reported_quota_are_listed() {
        let mut pending = quota("b", &[], &[]);
        pending.status = None;
        let quotas = [quota("a", &[("pods", "1")], &[]), pending];
        let report = summarize(&names(&["c", "a", "b"]), &quotas, None).unwrap();
        assert_eq!(report.unreported, ["b", "c"]);
        assert_eq!(summarize(&names(&["b"]), &quotas, None), None);
        assert_eq!(summarize(&[], &quotas, None), None);
    }

    #[test]
    fn quotas_outside_the_tenant_or_not_ours_are_ignored() {
        let mut theirs = quota("a", &[("pods", "100")], &[]);
        theirs.metadata.name = Some("tenant-own-quota".into());
        let quotas = [
            theirs,
            quota("a", &[("pods", "1")], &[]),
            quota("elsewhere", &[("pods", "9")], &[]),
        ];
        let report = summarize(&names(&["a"]), &quotas, None).unwrap();
        assert_eq!(report.usage, list(&[("pods", "1")]));
    }

    #[test]
    fn unreadable_quantities_are_reported_not_summed() {
        let quotas = [quota(
            "a",
            &[("pods", "lots"), ("services", "2")],
            &[("pods", "??")],
        )];
        let report = summarize(&names(&["a"]), &quotas, None).unwrap();
        assert_eq!(report.usage, list(&[("services", "2")]));
        let fields: Vec<_> = report.unreadable.iter().map(|u| u.field.as_str()).collect();
        assert_eq!(fields, ["used[pods]", "hard[pods]"]);
    }

    fn millis(values: &[u32]) -> Vec<(String, String)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("ns{i}"), format!("{v}m")))
            .collect()
    }

    proptest! {
        #[test]
        fn sums_and_overages_agree_with_integer_arithmetic(
            used in prop::collection::vec(0u32..100_000, 1..8),
            limit in 0u32..100_000,
        ) {
            let per_namespace = millis(&used);
            let quotas: Vec<ResourceQuota> = per_namespace
                .iter()
                .map(|(ns, v)| quota(ns, &[("requests.cpu", v)], &[]))
                .collect();
            let namespaces: Vec<String> = per_namespace.iter().map(|(ns, _)| ns.clone()).collect();
            let limit_text = format!("{limit}m");
            let report = summarize(
                &namespaces,
                &quotas,
                Some(&plan(&[("requests.cpu", &limit_text)])),
            )
            .unwrap();
            let total: u64 = used.iter().map(|v| u64::from(*v)).sum();
            let summed = ParsedQuantity::from_quantity(&report.usage["requests.cpu"]).unwrap();
            prop_assert_eq!(summed.milli_value(), total as i64);
            let expected_over: Vec<(String, i64)> = per_namespace
                .iter()
                .zip(&used)
                .filter(|(_, v)| **v > limit)
                .map(|((ns, _), v)| (ns.clone(), i64::from(*v) - i64::from(limit)))
                .collect();
            let actual_over: Vec<(String, i64)> = report
                .overages
                .iter()
                .map(|o| (o.namespace.clone(), ParsedQuantity::from_quantity(&o.excess).unwrap().milli_value()))
                .collect();
            prop_assert_eq!(actual_over, expected_over);
        }

        #[test]
        fn the_order_of_namespaces_does_not_change_the_sums(
            used in prop::collection::vec(0u32..10_000, 1..6),
        ) {
            let per_namespace = millis(&used);
            let quotas: Vec<ResourceQuota> = per_namespace
                .iter()
                .map(|(ns, v)| quota(ns, &[("requests.cpu", v)], &[]))
                .collect();
            let mut namespaces: Vec<String> = per_namespace.iter().map(|(ns, _)| ns.clone()).collect();
            let forward = summarize(&namespaces, &quotas, None).unwrap();
            namespaces.reverse();
            let backward = summarize(&namespaces, &quotas, None).unwrap();
            prop_assert_eq!(forward.usage, backward.usage);
        }
    }
}
