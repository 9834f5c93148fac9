#!/usr/bin/env bash
# kube-proxy (the real one, in the cluster's mode: iptables or nftables, see
# PWE2E_PROXY_MODE in up.sh) vs podwarp's socket LB on the e2e cluster:
# new connections/s to one ClusterIP with N Services programmed, and how long
# one Service change takes to reach each datapath at that size.
#
#   test/e2e/cluster/up.sh; $KUBECTL apply -f deploy/podwarp.yaml   # then:
#   test/e2e/cluster/bench-services.sh 1000 5000 10000      # PWE2E_RUN=<run dir> for another cluster
#
# Every Service selects the same two pwperf servers (so every Service has an
# EndpointSlice of 2 endpoints). Connections come from a pod of the bench
# namespace: with the namespace disabled they take kube-proxy's DNAT, enabled
# podwarp's connect() hook. One table row per N on stdout (Markdown).
set -euo pipefail
ENV_FILE=${PWE2E_RUN:-/var/lib/podwarp-e2e/current}/env
[[ -f $ENV_FILE ]] || { echo "bench: no cluster ($ENV_FILE): run up.sh first" >&2; exit 2; }
# shellcheck disable=SC1090
. "$ENV_FILE"
SECS=${SECS:-5}
NSB=pwbench-$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')
AGENT_NS=podwarp-system
log() { echo "bench [$(date +%T)] $*" >&2; }
now_ms() { date +%s%3N; }
agent() { $KUBECTL -n $AGENT_NS get pods -l app.kubernetes.io/component=agent -o jsonpath='{.items[0].metadata.name}'; }
MODE=${PROXY_MODE:-iptables}
# whether kube-proxy has programmed a ClusterIP (TCP port 80)
kp_has() {
  if [[ $MODE == nftables ]]; then
    nsenter --net="/run/netns/$NS" nft list map ip kube-proxy service-ips | grep -F "$1 . tcp . 80 :" >/dev/null
  else
    nsenter --net="/run/netns/$NS" iptables-save -t nat | grep -- "-d $1/32 .*KUBE-SVC" >/dev/null
  fi
}

trap '$KUBECTL delete namespace $NSB --wait=false >/dev/null 2>&1 || true' EXIT
$KUBECTL create namespace $NSB >/dev/null
pod() { # name role command...
  local name=$1 role=$2; shift 2
  local cmd; cmd=$(printf '"%s",' "$@"); cmd="[${cmd%,}]"
  echo "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"$name\",\"namespace\":\"$NSB\",\"labels\":{\"role\":\"$role\"}},\"spec\":{\"terminationGracePeriodSeconds\":0,\"containers\":[{\"name\":\"c\",\"image\":\"localhost/pwe2e/test:1\",\"imagePullPolicy\":\"Never\",\"command\":$cmd}]}}"
}
{ pod s1 echo pwperf server -p 8080; pod s2 echo pwperf server -p 8080; pod client client sleep 36000; } | $KUBECTL apply -f - >/dev/null
$KUBECTL -n $NSB wait --for=condition=Ready pod/s1 pod/s2 pod/client --timeout=120s >/dev/null

svc_list() { # from to
  local i
  printf '{"apiVersion":"v1","kind":"List","items":['
  for ((i = $1; i < $2; i++)); do
    ((i > $1)) && printf ','
    printf '{"apiVersion":"v1","kind":"Service","metadata":{"name":"s%d","namespace":"%s"},"spec":{"selector":{"role":"echo"},"ports":[{"protocol":"TCP","port":80,"targetPort":8080}]}}' "$i" "$NSB"
  done
  printf ']}'
}
conn_rate() { # vip
  $KUBECTL -n $NSB exec client -- pwperf conn -c "$1" -p 80 -d "$SECS" | tail -1 | sed -E 's/.*"per_second":([0-9.]+).*/\1/'
}
set_enabled() { # true|false
  if [[ $1 == true ]]; then $KUBECTL label ns $NSB podwarp.io/accelerate=true --overwrite >/dev/null
  else $KUBECTL label ns $NSB podwarp.io/accelerate- >/dev/null; fi
  local a cip want=enabled end=$(( $(date +%s) + 120 ))
  a=$(agent); cip=$($KUBECTL -n $NSB get pod client -o jsonpath='{.status.podIP}')
  until $KUBECTL -n $AGENT_NS exec "$a" -- podwarp dump endpoints | awk -v ip="$cip" '$1==ip{print $4}' | grep "$( [[ $1 == true ]] && echo '^enabled' || echo '^-' )" >/dev/null; do
    (( $(date +%s) < end )) || { log "client endpoint not $want in time"; return 1; }
    sleep 1
  done
}

echo "| Services | kube-proxy ($MODE) conn/s | podwarp socket LB conn/s | Service change → kube-proxy rule | Service change → podwarp pw_svc |"
echo "|---:|---:|---:|---:|---:|"
have=0
for n in "$@"; do
  t0=$(now_ms)
  for ((from = have; from < n; from += 1000)); do
    to=$((from + 1000)); ((to > n)) && to=$n
    svc_list "$from" "$to" | $KUBECTL apply -f - >/dev/null
  done
  have=$n
  last=$($KUBECTL -n $NSB get svc "s$((n - 1))" -o jsonpath='{.spec.clusterIP}')
  a=$(agent)
  end=$(( $(date +%s) + 900 ))
  until kp_has "$last" && $KUBECTL -n $AGENT_NS exec "$a" -- podwarp dump services | grep "$last" >/dev/null; do
    (( $(date +%s) < end )) || { log "N=$n not programmed after 900 s"; exit 1; }
    sleep 2
  done
  log "N=$n programmed in both datapaths in $(( ($(now_ms) - t0) / 1000 )) s"
  vip=$($KUBECTL -n $NSB get svc s0 -o jsonpath='{.spec.clusterIP}')
  set_enabled false; kp=$(conn_rate "$vip")
  set_enabled true; pw=$(conn_rate "$vip")
  set_enabled false
  # one more Service: time until each datapath has it (polled every ~0.2 s)
  svc_list "$n" "$((n + 1))" | $KUBECTL apply -f - >/dev/null
  t0=$(now_ms)
  new=$($KUBECTL -n $NSB get svc "s$n" -o jsonpath='{.spec.clusterIP}')
  kp_ms=""; pw_ms=""; end=$(( $(date +%s) + 300 ))
  while [[ -z $kp_ms || -z $pw_ms ]] && (( $(date +%s) < end )); do
    [[ -z $kp_ms ]] && kp_has "$new" && kp_ms=$(( $(now_ms) - t0 ))
    [[ -z $pw_ms ]] && $KUBECTL -n $AGENT_NS exec "$a" -- podwarp dump services | grep "$new" >/dev/null && pw_ms=$(( $(now_ms) - t0 ))
  done
  $KUBECTL -n $NSB delete svc "s$n" --wait=false >/dev/null
  echo "| $n | $kp | $pw | ${kp_ms:-timeout} ms | ${pw_ms:-timeout} ms |"
done
