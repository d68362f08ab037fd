#!/usr/bin/env bash
# The tests' Kubernetes: ../shared/k8s-local (a real single-node 1.20 on loopback) under $K8S_LOCAL, built once when
# the prefix has no build yet (~10 min), started (idempotent, ~10 s), waited on until its node is Ready, and with the
# test image local/busybox:test in the node's containerd (no registry is reachable). Run as root.
# Built when any kit binary is missing, so an older build on a reused machine is brought up to date.
# The cluster's processes live as long as the process that started them: run this from the shell that runs the
# tests (.ci/run does), or keep it alive yourself: nohup setsid bash -c 'tools/k8s_up.sh; sleep infinity' &
# Then: export KUBECONFIG=$K8S_LOCAL/admin.kubeconfig; make test-k8s
set -euo pipefail
: "${K8S_LOCAL:?set K8S_LOCAL to the kit prefix, e.g. K8S_LOCAL=/var/lib/hades-k8s}"
export K8S_LOCAL
kit=$(cd "$(dirname "$0")/../../shared/k8s-local" && pwd)
image=local/busybox:test
socket=/run/k8s-containerd/containerd.sock

# Every binary the kit builds: a prefix from an older kit (no kube-proxy: no Service routing, no DNS) is brought up
# to date; the kit's setup builds only what is missing (~15 s for kube-proxy with the source tree's build cache).
missing=()
for binary in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy; do
  [ -x "$K8S_LOCAL/bin/$binary" ] || missing+=("$binary")
done
if ((${#missing[@]})) || [ ! -f "$K8S_LOCAL/images/busybox.tar" ]; then
  echo "k8s_up: building the cluster under $K8S_LOCAL (missing: ${missing[*]:-images}; all of it: ~10 min)"
  "$kit/setup-from-scratch.sh"
fi
"$kit/up.sh"

kubectl=("$K8S_LOCAL/bin/kubectl" --kubeconfig "$K8S_LOCAL/admin.kubeconfig")
for _ in $(seq 1 120); do
  "${kubectl[@]}" get nodes --no-headers 2>/dev/null | grep -q ' Ready ' && break
  sleep 1
done
"${kubectl[@]}" get nodes --no-headers | grep -q ' Ready ' || { echo "k8s_up: the node is not Ready" >&2; exit 1; }

if ! ctr -a "$socket" -n k8s.io images ls -q | grep -qx "docker.io/$image"; then
  echo "k8s_up: importing $image"
  ctr -a "$socket" -n k8s.io images import "$K8S_LOCAL/images/busybox.tar"
fi
echo "k8s_up: ready; export KUBECONFIG=$K8S_LOCAL/admin.kubeconfig"
