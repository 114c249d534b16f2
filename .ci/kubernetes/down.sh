#!/bin/bash
# Stop the test cluster up.sh started: every process by its pid file, the pods' containers on the
# private dockerd, the kubelet's mounts, the namespace and the host paths kubelet 1.20 hard-codes.
# The build ($R/bin, Go cache) stays. Usage: bash .ci/kubernetes/down.sh
R=${R:-/var/cache/swarmrun-k8s}; S=$R/run
stop() { [ -f $S/$1.pid ] && kill $(cat $S/$1.pid) 2>/dev/null; rm -f $S/$1.pid; }
for p in kube-proxy kubelet scheduler kcm apiserver; do stop $p; done; sleep 1
DOCKER_HOST=unix://$S/docker.sock docker ps -aq 2>/dev/null | xargs -r env DOCKER_HOST=unix://$S/docker.sock docker rm -f >/dev/null
stop redis; stop etcd; stop dockerd
for i in $(seq 1 40); do [ -S $S/docker.sock ] || break; sleep 0.25; done
mount | awk -v r="$R/" 'index($3, r)==1 {print $3}' | sort -r | xargs -r -n1 umount    # kubelet's tmpfs/bind mounts
ip netns del k8sr 2>/dev/null || true   # takes the veth pair with it
ip link del k8sr-h 2>/dev/null || true
# paths kubelet 1.20 hard-codes (pod logs, device-plugin socket) and the flex dir created on first run
rm -rf /var/log/pods /var/log/containers /var/lib/kubelet/device-plugins; rmdir /var/lib/kubelet 2>/dev/null
[ -d /usr/libexec/kubernetes/kubelet-plugins/volume/exec ] && rmdir -p /usr/libexec/kubernetes/kubelet-plugins/volume/exec 2>/dev/null
true
