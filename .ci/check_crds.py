#!/usr/bin/env python3
"""Checks that YAML files (the output of `flotilla crds`, or charts/flotilla/crds/*.yaml) hold Flotilla's CustomResourceDefinitions.

kubectl cannot validate a CRD without an API server, so this checks offline what the API server
and `kubectl get flotilla` rely on: every document parses and is an apiextensions.k8s.io/v1
CustomResourceDefinition named <plural>.<group> in group flotilla.dev; each of the seven kinds is
there once with its scope; each version has a structural schema (type: object at the root),
a status subresource and printer columns; exactly one version is the storage version; and every
kind has a short name and the category `flotilla`.

Usage: check_crds.py FILE...   (needs PyYAML; the files together must hold each kind once)
"""

from __future__ import annotations

import sys

import yaml

GROUP = "flotilla.dev"
CATEGORY = "flotilla"
# kind -> scope, as the Foundation issue defines them.
EXPECTED = {
    "Plan": "Cluster",
    "Subscription": "Cluster",
    "Channel": "Namespaced",
    "Campaign": "Namespaced",
    "FirmwareRelease": "Namespaced",
    "Device": "Namespaced",
    "FirmwareRollout": "Namespaced",
}


def problems_of(crd: dict) -> list[str]:
    problems = []
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    kind = names.get("kind", "<no kind>")
    name = (crd.get("metadata") or {}).get("name")

    def problem(message: str) -> None:
        problems.append(f"{kind}: {message}")

    if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or crd.get("kind") != "CustomResourceDefinition":
        problem(f"is {crd.get('apiVersion')} {crd.get('kind')}, not an apiextensions.k8s.io/v1 CustomResourceDefinition")
    if spec.get("group") != GROUP:
        problem(f"group is {spec.get('group')!r}, not {GROUP!r}")
    if name != f"{names.get('plural')}.{spec.get('group')}":
        problem(f"metadata.name {name!r} is not <plural>.<group>")
    if kind not in EXPECTED:
        problem("is not one of Flotilla's kinds")
    elif spec.get("scope") != EXPECTED[kind]:
        problem(f"scope is {spec.get('scope')!r}, not {EXPECTED[kind]!r}")
    for field in ("plural", "singular"):
        if not names.get(field):
            problem(f"names.{field} is missing")
    if not names.get("shortNames"):
        problem("has no short name")
    if CATEGORY not in (names.get("categories") or []):
        problem(f"is not in the category {CATEGORY!r} (kubectl get {CATEGORY})")

    versions = spec.get("versions") or []
    if not versions:
        problem("has no versions")
    if sum(1 for version in versions if version.get("storage")) != 1:
        problem("must have exactly one storage version")
    for version in versions:
        label = version.get("name", "<unnamed version>")
        if not version.get("served"):
            problem(f"version {label} is not served")
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
        if schema.get("type") != "object":
            problem(f"version {label}: openAPIV3Schema is not a structural schema (type: object)")
        if "status" not in (version.get("subresources") or {}):
            problem(f"version {label} has no status subresource")
        if not version.get("additionalPrinterColumns"):
            problem(f"version {label} has no printer columns")
    return problems


def main() -> int:
    paths = sys.argv[1:]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    documents = []
    for path in paths:
        with open(path) as file:
            documents.extend(doc for doc in yaml.safe_load_all(file) if doc is not None)

    problems = []
    kinds = []
    for document in documents:
        if not isinstance(document, dict):
            problems.append(f"a document is not a mapping: {str(document)[:80]}")
            continue
        problems.extend(problems_of(document))
        kinds.append(((document.get("spec") or {}).get("names") or {}).get("kind"))
    for kind in sorted(EXPECTED):
        count = kinds.count(kind)
        if count != 1:
            problems.append(f"{kind}: expected once, found {count} times")

    if problems:
        print(f"{' '.join(paths)}: not a valid set of Flotilla CRDs:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{len(documents)} CustomResourceDefinitions, all well-formed: {', '.join(sorted(kinds))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
