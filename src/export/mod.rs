//! Exporting a validated manifest to other systems.
//!
//! Owns: turning a [`crate::manifest::Manifest`] (as `check` accepted it)
//! into another system's objects. Does not own: loading or checking the
//! manifest (the CLI runs the same pipeline as `check`), nor writing files
//! (the CLI does).
//!
//! - [`kubernetes`]: Deployments, Services, NetworkPolicies and the in-pod
//!   manifests `supervisor run-one` reads (docs/kubernetes.md).

pub mod kubernetes;
