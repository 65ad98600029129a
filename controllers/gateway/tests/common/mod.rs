//! Helpers shared by the gateway's integration tests. Each test binary uses a part of them.
#![allow(dead_code)]

pub mod fixture;
pub mod rbac;
