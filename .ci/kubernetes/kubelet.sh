#!/bin/bash
# Start, stop or ask about the test cluster's kubelet, by the pid in $R/run/kubelet.pid (never by
# name: other kubelets may run on a machine). up.sh starts it through this script; the chaos test
# (tests/kube) stops it to take the node NotReady and starts it again. Stopping the kubelet leaves
# the pods' containers running on the private dockerd; a started kubelet finds them again.
# Usage: bash .ci/kubernetes/kubelet.sh start|stop|status     Env: R (default /var/cache/swarmrun-k8s)
set -euo pipefail
R=${R:-/var/cache/swarmrun-k8s}; B=$R/bin; S=$R/run; L=$R/logs
running() { [ -f $S/kubelet.pid ] && kill -0 "$(cat $S/kubelet.pid)" 2>/dev/null; }
case "${1:-}" in
start)
  if running; then echo "kubelet running (pid $(cat $S/kubelet.pid))"; exit 0; fi
  mkdir -p $R/kubelet/pki $R/kubelet/volume-plugins $R/kubelet/seccomp $R/dockershim $L
  nohup $B/kubelet --kubeconfig=$R/kubeconfig --container-runtime=docker --docker-endpoint=unix://$S/docker.sock \
   --pod-infra-container-image=k8sr/pause:3.2 --root-dir=$R/kubelet --cert-dir=$R/kubelet/pki --experimental-dockershim-root-directory=$R/dockershim \
   --volume-plugin-dir=$R/kubelet/volume-plugins --seccomp-profile-root=$R/kubelet/seccomp \
   --address=127.0.0.1 --port=10250 --read-only-port=0 --healthz-bind-address=127.0.0.1 --healthz-port=10248 --hostname-override=localhost \
   --cgroups-per-qos=false --enforce-node-allocatable= --cgroup-driver=cgroupfs --fail-swap-on=false --make-iptables-util-chains=false \
   --image-gc-high-threshold=100 --image-gc-low-threshold=99 --oom-score-adj=0 >> $L/kubelet.log 2>&1 &
  echo $! > $S/kubelet.pid
  echo "kubelet started (pid $!)";;
stop)
  running || { echo "kubelet not running"; exit 0; }
  pid=$(cat $S/kubelet.pid); kill "$pid"
  for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  echo "kubelet stopped (pid $pid)";;
status)
  if running; then echo "kubelet running (pid $(cat $S/kubelet.pid))"; else echo "kubelet not running"; exit 3; fi;;
*) echo "usage: kubelet.sh start|stop|status" >&2; exit 2;;
esac
