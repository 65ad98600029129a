//! The gateway's RBAC (`config/rbac/gateway_role.yaml`) checked against the requests the gateway
//! really sent, as the sandbox logged them: every request must be granted by a rule, and every
//! verb a rule grants must have been used, so the Role neither lacks nor carries a permission.

use std::path::Path;

use flotilla_sandbox::RequestRecord;
use flotilla_sandbox::rbac::{self, Rule};

/// The rules of the gateway's Role.
pub fn gateway_rules() -> Vec<Rule> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/rbac/gateway_role.yaml");
    rbac::rules_in(&[&path]).expect("config/rbac/gateway_role.yaml is readable")
}

/// The requests no rule grants, and the granted `verb group/resource` nobody used.
pub fn check(records: &[RequestRecord], rules: &[Rule]) -> (Vec<String>, Vec<String>) {
    let report = rbac::check(
        records.iter().flat_map(RequestRecord::required),
        rules,
        |_, _| true,
    );
    (report.denied, report.unused)
}
