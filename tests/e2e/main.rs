//! End-to-end tests of gpufleet against a real Kubernetes control plane.
//!
//! They take the cluster from `KUBECONFIG` and are ignored by a plain `cargo test` (each says
//! why); `bash tests/run-all.sh` builds and starts etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and KWOK, then runs them with `--ignored`.

mod chart;
mod crds;
mod demo;
mod nodes;
mod operator;
mod support;
mod system;
