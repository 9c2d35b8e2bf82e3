#!/usr/bin/env bash
# Starts, populates and stops the test control plane: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and KWOK, all on 127.0.0.1, from the binaries that
# build-control-plane.sh caches.
#
#   control-plane.sh up                 start everything, write the kubeconfig, wait until ready
#   control-plane.sh nodes N [PREFIX]   create N fake GPU nodes (mixed presets) managed by KWOK
#   control-plane.sh restart-apiserver  stop and start kube-apiserver only (fault tests)
#   control-plane.sh env                print `export KUBECONFIG=…` for a shell
#   control-plane.sh down               stop everything and delete the state
#
# Environment: GPUFLEET_CLUSTER_DIR (default /tmp/gpufleet-cluster) holds state, logs, certs and
# the kubeconfig; GPUFLEET_APISERVER_PORT (default 6443), GPUFLEET_ETCD_PORT (default 2379).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
K8S_VERSION=${GPUFLEET_K8S_VERSION:-v1.37.2}
ETCD_VERSION=${GPUFLEET_ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${GPUFLEET_KWOK_VERSION:-v0.8.0}
CACHE=${GPUFLEET_CACHE:-/var/cache/gpufleet}
DIR=${GPUFLEET_CLUSTER_DIR:-/tmp/gpufleet-cluster}
APISERVER_PORT=${GPUFLEET_APISERVER_PORT:-6443}
ETCD_PORT=${GPUFLEET_ETCD_PORT:-2379}
K8S_MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)

K8S_BIN="$CACHE/bin/kubernetes-$K8S_VERSION"
ETCD="$CACHE/bin/etcd-$ETCD_VERSION/etcd"
KWOK_DIR="$CACHE/bin/kwok-$KWOK_VERSION"
KUBECTL="$CACHE/bin/kubectl-1.$K8S_MINOR/kubectl"
KUBECONFIG_FILE="$DIR/kubeconfig"

log() { printf '[control-plane %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

kubectl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }

# Starts a daemon in the background with its own log and pid file.
start_daemon() {
  local name=$1
  shift
  # A session of its own: a daemon started from a test (restart-apiserver) must outlive the
  # test's process group, which a harness may kill when the test ends.
  setsid "$@" >"$DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$DIR/pids/$name"
  log "started $name (pid $!)"
}

stop_daemon() {
  local name=$1 pidfile="$DIR/pids/$1"
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

wait_for() {
  local what=$1 seconds=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "$what not ready after ${seconds}s; last log lines:"
      tail -n 30 "$DIR/logs/$what.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
  log "$what ready"
}

make_certificates() {
  local certs="$DIR/certs"
  mkdir -p "$certs"
  [ -f "$certs/ca.crt" ] && return
  # A throw-away CA signs the serving certificate, so clients verify TLS like on a real cluster.
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=gpufleet-test-ca" \
    -keyout "$certs/ca.key" -out "$certs/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$certs/apiserver.key" -out "$certs/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc,IP:10.96.0.1\n' \
    >"$certs/san.ext"
  openssl x509 -req -in "$certs/apiserver.csr" -CA "$certs/ca.crt" -CAkey "$certs/ca.key" \
    -CAcreateserial -days 30 -extfile "$certs/san.ext" -out "$certs/apiserver.crt" 2>/dev/null
  # One RSA key signs and verifies service-account tokens.
  openssl genrsa -out "$certs/service-account.key" 2048 2>/dev/null
  openssl rsa -in "$certs/service-account.key" -pubout -out "$certs/service-account.pub" 2>/dev/null
  local token
  token=$(openssl rand -hex 24)
  echo "$token" >"$certs/admin.token"
  printf '%s,admin,admin,system:masters\n' "$token" >"$certs/tokens.csv"
}

write_kubeconfig() {
  local token
  token=$(cat "$DIR/certs/admin.token")
  cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gpufleet-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $DIR/certs/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: gpufleet-test
  context: {cluster: gpufleet-test, user: admin, namespace: default}
current-context: gpufleet-test
EOF
  chmod 600 "$KUBECONFIG_FILE"
}

start_apiserver() {
  start_daemon kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$DIR/certs/apiserver.crt" --tls-private-key-file="$DIR/certs/apiserver.key" \
    --client-ca-file="$DIR/certs/ca.crt" \
    --token-auth-file="$DIR/certs/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$DIR/certs/service-account.pub" \
    --service-account-signing-key-file="$DIR/certs/service-account.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --enable-priority-and-fairness=false \
    --max-requests-inflight=2000 --max-mutating-requests-inflight=1000 \
    --v=1
  wait_for kube-apiserver 120 curl -sfk "https://127.0.0.1:$APISERVER_PORT/readyz"
}

up() {
  for binary in "$ETCD" "$K8S_BIN/kube-apiserver" "$K8S_BIN/kube-controller-manager" \
    "$K8S_BIN/kube-scheduler" "$KWOK_DIR/kwok" "$KUBECTL"; do
    if [ ! -x "$binary" ]; then
      log "missing $binary: run tests/cluster/build-control-plane.sh first"
      exit 1
    fi
  done
  if [ -f "$DIR/pids/kube-apiserver" ] && kill -0 "$(cat "$DIR/pids/kube-apiserver")" 2>/dev/null; then
    log "already running (KUBECONFIG=$KUBECONFIG_FILE)"
    return
  fi
  mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/etcd"
  make_certificates
  write_kubeconfig

  start_daemon etcd "$ETCD" --data-dir="$DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls="http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster="default=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --unsafe-no-fsync --quota-backend-bytes=8589934592
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  start_apiserver

  start_daemon kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$KUBECONFIG_FILE" --bind-address=127.0.0.1 --secure-port=10257 \
    --leader-elect=false --use-service-account-credentials=false \
    --service-account-private-key-file="$DIR/certs/service-account.key" \
    --root-ca-file="$DIR/certs/ca.crt" \
    --cluster-signing-cert-file="$DIR/certs/ca.crt" --cluster-signing-key-file="$DIR/certs/ca.key" \
    --controllers='*,-node-ipam-controller' \
    --kube-api-qps=500 --kube-api-burst=1000 --v=2
  wait_for kube-controller-manager 60 curl -sfk https://127.0.0.1:10257/healthz

  cat >"$DIR/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $KUBECONFIG_FILE
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
profiles:
- schedulerName: default-scheduler
  pluginConfig:
  # The baseline gpufleet is compared with: kube-scheduler packing nvidia.com/gpu.
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - {name: nvidia.com/gpu, weight: 10}
        - {name: cpu, weight: 1}
        - {name: memory, weight: 1}
EOF
  start_daemon kube-scheduler "$K8S_BIN/kube-scheduler" --config="$DIR/scheduler.yaml" \
    --bind-address=127.0.0.1 --secure-port=10259 --v=1
  wait_for kube-scheduler 60 curl -sfk https://127.0.0.1:10259/healthz

  # KWOK's standalone binary has no stages built in: hand it the fast node and pod stages.
  local stage_args=()
  for stage in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    if [ -f "$KWOK_DIR/stages/$stage" ]; then
      stage_args+=(--config "$KWOK_DIR/stages/$stage")
    fi
  done
  # gpufleet's own: the kubelet's pod status sync that KWOK's stages lack (see the file).
  stage_args+=(--config "$here/stages/pod-ready-resync.yaml")
  # Node leases as a kubelet keeps them (nodeLeaseDurationSeconds 40, renewed every 10 s): the
  # node lifecycle controller's heartbeat. Without them the standalone binary heartbeats only
  # through the Node's status, every 10–20 minutes by the heartbeat-with-lease stage, so every
  # node looks silent 50 s (node-monitor-grace-period) after each status update and all its Pods
  # are marked NotReady.
  start_daemon kwok "$KWOK_DIR/kwok" --kubeconfig="$KUBECONFIG_FILE" \
    --node-lease-duration-seconds=40 \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 --cidr=10.128.0.0/10 \
    --server-address=127.0.0.1:10247 \
    "${stage_args[@]}"
  wait_for kwok 60 curl -sf http://127.0.0.1:10247/healthz
  wait_for default-serviceaccount 60 kubectl get serviceaccount default -n default
  log "control plane up: export KUBECONFIG=$KUBECONFIG_FILE"
}

# One fake node, GFD-labelled, with the capacity of a real machine of that preset.
# Args: name product gpu_count memory_mib family compute_major compute_minor machine
make_node() {
  local name=$1 product=$2 count=$3 memory=$4 family=$5 major=$6 minor=$7 machine=$8
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
    topology.kubernetes.io/zone: zone-$(( $(cksum <<<"$name" | cut -d' ' -f1) % 3 ))
    nvidia.com/gpu.present: "true"
    nvidia.com/gpu.product: $product
    nvidia.com/gpu.count: "$count"
    nvidia.com/gpu.memory: "$memory"
    nvidia.com/gpu.family: $family
    nvidia.com/gpu.compute.major: "$major"
    nvidia.com/gpu.compute.minor: "$minor"
    nvidia.com/gpu.machine: $machine
    nvidia.com/gpu.replicas: "1"
    nvidia.com/gpu.sharing-strategy: none
    nvidia.com/mig.capable: "$( [ "$family" = hopper ] || [ "$family" = ampere ] && echo true || echo false)"
spec:
  taints:
  - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
status:
  capacity: {cpu: "128", memory: 2048Gi, pods: "110", nvidia.com/gpu: "$count", ephemeral-storage: 2Ti}
  allocatable: {cpu: "126", memory: 2000Gi, pods: "110", nvidia.com/gpu: "$count", ephemeral-storage: 2Ti}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kubeProxyVersion: fake}
EOF
}

# The mixed presets, cycled: 8×H100-80GB, 8×H200-141GB, 4×L40S, 8×A100-40GB.
nodes() {
  local count=${1:?usage: control-plane.sh nodes N [PREFIX]} prefix=${2:-gpu-node}
  local manifest="$DIR/nodes-$prefix.yaml"
  : >"$manifest"
  for i in $(seq 0 $((count - 1))); do
    case $((i % 4)) in
      0) make_node "$prefix-$i" NVIDIA-H100-80GB-HBM3 8 81559 hopper 9 0 DGX-H100 ;;
      1) make_node "$prefix-$i" NVIDIA-H200 8 143771 hopper 9 0 DGX-H200 ;;
      2) make_node "$prefix-$i" NVIDIA-L40S 4 46068 ada-lovelace 8 9 L40S-SERVER ;;
      3) make_node "$prefix-$i" NVIDIA-A100-SXM4-40GB 8 40960 ampere 8 0 DGX-A100 ;;
    esac
  done >>"$manifest"
  kubectl apply --server-side -f "$manifest" >/dev/null
  log "created $count fake GPU nodes ($prefix-0 … $prefix-$((count - 1))); waiting for Ready"
  local deadline=$((SECONDS + 120 + count / 5))
  while :; do
    local ready
    ready=$(kubectl get nodes -l type=kwok -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
      grep -c "^$prefix-[0-9]* True$" || true)
    [ "$ready" -ge "$count" ] && break
    if [ $SECONDS -ge $deadline ]; then log "only $ready of $count nodes Ready"; exit 1; fi
    sleep 1
  done
  log "$count nodes Ready"
}

down() {
  for daemon in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_daemon "$daemon"
  done
  rm -rf "$DIR"
  log "control plane stopped"
}

case "${1:-}" in
  up) up ;;
  nodes) shift; nodes "$@" ;;
  restart-apiserver) stop_daemon kube-apiserver; start_apiserver ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_FILE" ;;
  kubectl) shift; kubectl "$@" ;;
  down) down ;;
  *) echo "usage: $0 up | nodes N [PREFIX] | restart-apiserver | env | kubectl ARGS… | down" >&2; exit 2 ;;
esac
