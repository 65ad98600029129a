#!/usr/bin/env python3
"""Checks that the Helm chart grants exactly the permissions in config/rbac/.

config/rbac/ is the reviewed, least-privilege source of truth (each rule documents its reason);
the chart carries a copy of the rules in its templates. This script renders the chart with
`helm template` and fails when:
- the chart's ClusterRole rules differ from config/rbac/role.yaml, or its leader-election Role
  rules differ from config/rbac/leader_election_role.yaml (order of rules, and of the entries
  within a rule, does not matter; anything else does);
- any rule in either place uses a wildcard;
- a binding does not bind its role to the ServiceAccount the Deployment runs as, in the
  release namespace;
- with the device gateway enabled, a gateway Role (one per served namespace) or, serving every
  namespace, the gateway ClusterRole differs from config/rbac/gateway_role.yaml, is not bound to
  the gateway Deployment's ServiceAccount, or the gateway gets any other role.

Usage: check_chart_rbac.py [REPO_ROOT]   (needs `helm` on PATH and PyYAML)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

RELEASE = "rbac-check"
NAMESPACE = "flotilla-rbac-check"


def normalize(rules: list[dict]) -> list[tuple]:
    """Returns the rules in a canonical, comparable form (sorted entries, sorted rules)."""
    normalized = []
    for rule in rules or []:
        unknown = set(rule) - {"apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"}
        if unknown:
            raise ValueError(f"rule has unexpected keys {sorted(unknown)}: {rule}")
        normalized.append(
            tuple(
                (key, tuple(sorted(rule.get(key) or [])))
                for key in ("apiGroups", "resources", "resourceNames", "nonResourceURLs", "verbs")
            )
        )
    return sorted(normalized)


def describe(rule: tuple) -> str:
    return ", ".join(f"{key}={list(values)}" for key, values in rule if values)


def wildcards(rules: list[dict]) -> list[str]:
    found = []
    for rule in rules or []:
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            if any("*" in entry for entry in rule.get(key) or []):
                found.append(f"{key} in {rule}")
    return found


def load_documents(path: Path) -> list[dict]:
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc]


def only(documents: list[dict], kind: str, source: str) -> dict:
    matching = [doc for doc in documents if doc.get("kind") == kind]
    if len(matching) != 1:
        raise SystemExit(f"{source}: expected exactly one {kind}, found {len(matching)}")
    return matching[0]


GATEWAY_NAMESPACES = ["fleet-a", "fleet-b"]


def render_chart(root: Path, *values: str) -> list[dict]:
    sets = [arg for value in values for arg in ("--set", value)]
    rendered = subprocess.run(
        ["helm", "template", RELEASE, str(root / "charts" / "flotilla"), "--namespace", NAMESPACE, *sets],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def compare(name: str, expected: list[dict], actual: list[dict], problems: list[str]) -> None:
    want, got = normalize(expected), normalize(actual)
    if want == got:
        return
    before = len(problems)
    for rule in want:
        if rule not in got:
            problems.append(f"{name}: the chart lacks the rule {describe(rule)}")
    for rule in got:
        if rule not in want:
            problems.append(f"{name}: the chart has a rule config/rbac does not: {describe(rule)}")
    if len(problems) == before:
        problems.append(f"{name}: the rules differ in how often a rule repeats")


def is_gateway(doc: dict) -> bool:
    return doc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/component") == "gateway"


def check_binding(binding: dict, role: dict, service_account: str, problems: list[str]) -> None:
    where = f"{binding['kind']} {binding['metadata']['name']}"
    ref = binding.get("roleRef", {})
    if (ref.get("kind"), ref.get("name")) != (role["kind"], role["metadata"]["name"]):
        problems.append(f"{where}: roleRef {ref} does not name {role['kind']} {role['metadata']['name']}")
    elif binding["metadata"].get("namespace") != role["metadata"].get("namespace"):
        problems.append(f"{where}: not in the namespace of {role['kind']} {role['metadata']['name']}")
    subjects = [(s.get("kind"), s.get("name"), s.get("namespace")) for s in binding.get("subjects", [])]
    if subjects != [("ServiceAccount", service_account, NAMESPACE)]:
        problems.append(f"{where}: subjects {subjects} are not the Deployment's ServiceAccount {NAMESPACE}/{service_account}")


def check_gateway(root: Path, source_rules: list[dict], problems: list[str]) -> str:
    """The gateway's RBAC, per served namespace and cluster-wide; returns a summary."""
    summary = []
    for values, scope in (
        (["gateway.enabled=true", "gateway.namespaces={" + ",".join(GATEWAY_NAMESPACES) + "}"], "namespaces"),
        (["gateway.enabled=true"], "cluster"),
    ):
        chart = [doc for doc in render_chart(root, *values) if is_gateway(doc)]
        deployment = only(chart, "Deployment", f"chart with the gateway ({scope})")
        service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        if not any(doc.get("kind") == "ServiceAccount" and doc["metadata"]["name"] == service_account for doc in chart):
            problems.append(f"gateway ({scope}): the chart does not create the ServiceAccount {service_account}")
        roles = [doc for doc in chart if doc.get("kind") in ("Role", "ClusterRole")]
        bindings = [doc for doc in chart if doc.get("kind") in ("RoleBinding", "ClusterRoleBinding")]
        want_kind = "Role" if scope == "namespaces" else "ClusterRole"
        if {role["kind"] for role in roles} != {want_kind}:
            problems.append(f"gateway ({scope}): expected only {want_kind}s, found {sorted(r['kind'] for r in roles)}")
        if scope == "namespaces":
            namespaces = sorted(role["metadata"].get("namespace") for role in roles)
            if namespaces != sorted(GATEWAY_NAMESPACES):
                problems.append(f"gateway Roles are in {namespaces}, not one in each of {GATEWAY_NAMESPACES}")
        for role in roles:
            where = f"gateway {role['kind']} in {role['metadata'].get('namespace', 'the cluster')}"
            problems.extend(f"{where}: wildcard {found}" for found in wildcards(role["rules"]))
            compare(where, source_rules, role["rules"], problems)
            bound = [
                b for b in bindings
                if b["roleRef"]["name"] == role["metadata"]["name"]
                and b["metadata"].get("namespace") == role["metadata"].get("namespace")
            ]
            if len(bound) != 1:
                problems.append(f"{where}: bound {len(bound)} times, not once")
            for binding in bound:
                check_binding(binding, role, service_account, problems)
        if len(bindings) != len(roles):
            problems.append(f"gateway ({scope}): {len(bindings)} bindings for {len(roles)} roles")
        summary.append(f"{len(roles)} {want_kind}(s)")
    return ", ".join(summary)


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    rbac = root / "config" / "rbac"
    source_cluster_role = only(load_documents(rbac / "role.yaml"), "ClusterRole", "config/rbac/role.yaml")
    source_lease_role = only(
        load_documents(rbac / "leader_election_role.yaml"), "Role", "config/rbac/leader_election_role.yaml"
    )

    source_gateway_role = only(load_documents(rbac / "gateway_role.yaml"), "Role", "config/rbac/gateway_role.yaml")

    chart = [doc for doc in render_chart(root) if not is_gateway(doc)]
    cluster_role = only(chart, "ClusterRole", "chart")
    cluster_role_binding = only(chart, "ClusterRoleBinding", "chart")
    lease_role = only(chart, "Role", "chart")
    lease_role_binding = only(chart, "RoleBinding", "chart")
    deployment = only(chart, "Deployment", "chart")
    service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]

    problems: list[str] = []
    for source, rules in (
        ("config/rbac/role.yaml", source_cluster_role["rules"]),
        ("config/rbac/leader_election_role.yaml", source_lease_role["rules"]),
        ("chart ClusterRole", cluster_role["rules"]),
        ("chart Role", lease_role["rules"]),
        ("config/rbac/gateway_role.yaml", source_gateway_role["rules"]),
    ):
        problems.extend(f"{source}: wildcard {found}" for found in wildcards(rules))
    compare("ClusterRole", source_cluster_role["rules"], cluster_role["rules"], problems)
    compare("leader-election Role", source_lease_role["rules"], lease_role["rules"], problems)
    if lease_role["metadata"].get("namespace") != NAMESPACE:
        problems.append(f"leader-election Role is not in the release namespace {NAMESPACE}")
    check_binding(cluster_role_binding, cluster_role, service_account, problems)
    check_binding(lease_role_binding, lease_role, service_account, problems)
    if not any(
        doc.get("kind") == "ServiceAccount" and doc["metadata"]["name"] == service_account for doc in chart
    ):
        problems.append(f"the chart does not create the ServiceAccount {service_account} its Deployment uses")

    gateway = check_gateway(root, source_gateway_role["rules"], problems)

    if problems:
        print("chart RBAC does not match config/rbac/:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(
        f"chart RBAC matches config/rbac/: ClusterRole rules: {len(cluster_role['rules'])}, "
        f"leader-election Role rules: {len(lease_role['rules'])}, both bound to ServiceAccount {service_account}; "
        f"gateway: {gateway}, equal to config/rbac/gateway_role.yaml"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
