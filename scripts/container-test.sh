#!/usr/bin/env bash
# The container image, end to end, on a Docker engine started here if none answers:
#
#   1. build the real Dockerfile (base images fabricated locally: scripts/docker-base-images.sh);
#   2. one container, read-only root, non-root: `GET /` answers `Hello World!`, the admin port
#      answers, logs are JSON, the visit counter (guest/counter/) on the embedded `file` store in
#      the image's data dir (a VOLUME) keeps its count across `docker restart`, SIGTERM drains and
#      exits 0;
#   3. 3 replicas behind one virtual IP spread the way kube-proxy does it (iptables nat:
#      `statistic --mode random` DNAT per endpoint, MASQUERADE for hairpin traffic):
#      (a) every request through the VIP succeeds and every replica serves some;
#      (b) a replica killed under load → once its endpoint (and its half-open conntrack entries)
#          is removed, zero failures;
#      (c) a new handler written into each replica's mounted folder, the way kubelet updates a
#          ConfigMap volume (`..data` symlink swap) → every replica hot-swaps, zero failures;
#      (d) a rolling replacement (surge a new replica, add it, remove an old one, SIGTERM it)
#          → zero failures, every old replica exits 0;
#      (e) handlers from a registry, as k8s/oci/ deploys them: a registry with basic auth
#          (Debian's docker-registry) on the test network's gateway, the image's own `wasmlet
#          push`, replicas whose folder holds only wasmlet.toml with an oci:// digest and whose
#          credentials are a mounted Docker config → editing the digest hot-swaps every replica,
#          zero failures, no restart;
#      (f) one count shared in Redis, as k8s/redis/ deploys it: Debian's redis-server with a
#          password on the gateway, 3 replicas running the visit counter with k8s/redis/wasmlet.toml
#          (its URL changed) and the password as a mounted read-only file → 2,000 requests to
#          /count through the VIP (250/s, 32 clients) while a replica is killed and replaced: the
#          counter in Redis ends at 2,000 less the failed requests (counted; a request that failed
#          after its INCRBY, its replica killed before the answer left, is reported as such), the
#          N of the successful answers all distinct (no increment lost or doubled), the password
#          in no log, /handlers or /metrics.
#
# Traffic goes only to the containers on the network this script creates (and the registry and
# Redis it starts on that network's gateway). A trap removes every container (with its anonymous
# volumes), network, route and iptables rule it created, stops the registry and Redis, and stops
# dockerd if it started it.
# Prints PASS/FAIL per check and `container: N passed, M failed`; exits non-zero on failure.
#
# Environment: IMAGE (default wasmlet:test), V2_WASM (the handler swapped in; default
# target/wasm32-wasip2/release/v2.wasm), COUNTER_WASM (the visit counter; default
# target/wasm32-wasip2/release/hello_counter.wasm, built when missing), SKIP_BUILD=1 (reuse
# IMAGE), BUILD_NETWORK (host).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
image=${IMAGE:-wasmlet:test}
python=${PYTHON:-python3}
id=$$                       # names everything this run creates
name=wlt$id                 # containers, network, iptables chains
bridge=wlt$id               # the network's Linux bridge (15 characters at most)
work=$(mktemp -d /tmp/wasmlet-ctest.XXXXXX)
chmod 755 "$work"           # bind-mounted into containers that run as 65532
started=$(date +%s)
passed=0
failed=0
summary=()
load_pid=
registry_pid=
redis_pid=
replica_args=()             # more `docker run` arguments for run_replica

pass() { echo "PASS $*"; passed=$((passed + 1)); summary+=("PASS $1"); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); summary+=("FAIL $1"); }
info() { echo "     $*"; }
now_ns() { date +%s%N; }

cleanup() {
  local rc=$?
  set +e
  [[ -n $load_pid ]] && kill "$load_pid" 2>/dev/null && wait "$load_pid" 2>/dev/null
  [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
  [[ -n $redis_pid ]] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  if docker info >/dev/null 2>&1; then
    local cs
    cs=$(docker ps -aq --filter "label=wasmlet-test=$id")
    # -v: with the anonymous volumes of the image's VOLUME (the key-value data dir).
    [[ -n $cs ]] && docker rm -f -v $cs >/dev/null
    docker network rm "$name" >/dev/null 2>&1
  fi
  if [[ -n ${vip:-} ]]; then
    iptables -t nat -D OUTPUT -d "$vip/32" -p tcp --dport 80 -j "$name-SVC" 2>/dev/null
    iptables -t nat -D PREROUTING -d "$vip/32" -p tcp --dport 80 -j "$name-SVC" 2>/dev/null
    iptables -t nat -D POSTROUTING -o "$bridge" -m mark --mark 0x4000/0x4000 -j MASQUERADE 2>/dev/null
    ip route del "$vip/32" dev "$bridge" 2>/dev/null
  fi
  local chains
  chains=$(iptables -t nat -S 2>/dev/null | awk -v p="-N $name-" 'index($0, p) == 1 {print $2}')
  for c in $chains; do iptables -t nat -F "$c"; done
  for c in $chains; do iptables -t nat -X "$c"; done
  "$root/scripts/docker-engine.sh" stop "$work/dockerd.pid" >/dev/null
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers ---------------------------------------------------------------------------------

ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }

http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" || true; }

wait_ready() { # wait_ready IP [SECONDS] → 0 once /readyz answers 200
  local deadline=$((SECONDS + ${2:-30}))
  while ((SECONDS < deadline)); do
    [[ $(http_code "http://$1:9090/readyz") == 200 ]] && return 0
    sleep 0.1
  done
  return 1
}

# publish_files DIR SOURCE:NAME...: what kubelet's AtomicWriter does to a ConfigMap volume. The
# payload goes into a new timestamped folder, `..data_tmp` → that folder is renamed over `..data`
# (one atomic rename), the visible names are symlinks through `..data`, and the old folder is
# removed.
publish_files() {
  local dir=$1 new old file
  shift
  mkdir -p "$dir"
  chmod 755 "$dir"
  new=$(mktemp -d "$dir/..$(date -u +%Y_%m_%d_%H_%M_%S).XXXXXXXXX")
  for file in "$@"; do cp "${file%%:*}" "$new/${file##*:}"; done
  chmod 0444 "$new"/*
  chmod 0755 "$new"
  old=$(readlink "$dir/..data" || true)
  ln -s "$(basename "$new")" "$dir/..data_tmp"
  mv -T "$dir/..data_tmp" "$dir/..data"
  for file in "$@"; do
    [[ -L $dir/${file##*:} ]] || ln -s "..data/${file##*:}" "$dir/${file##*:}"
  done
  [[ -z $old ]] || rm -rf "${dir:?}/$old"
}

publish() { # publish DIR WASM: k8s/handlers/ with WASM as hello.wasm
  publish_files "$1" k8s/handlers/wasmlet.toml:wasmlet.toml "$2:hello.wasm"
}

# start_replicas CHECK PREFIX PUBLISH: replicas $name-PREFIXi, i = 1..3, each mounting the folder
# $work/PREFIXi that `PUBLISH i` fills; sets ips and waits until each is ready.
start_replicas() {
  local check=$1 prefix=$2 publish_replica=$3 i
  ips=()
  for i in 1 2 3; do
    "$publish_replica" "$i"
    ips+=("$(run_replica "$name-$prefix$i" "$work/$prefix$i")")
  done
  for i in 1 2 3; do
    wait_ready "${ips[$((i - 1))]}" 30 ||
      fail "$check: replica $prefix$i not ready; logs:"$'\n'"$(docker logs "$name-$prefix$i" 2>&1 | tail -n 10)"
  done
}

# swap_under_load CSV PREFIX PUBLISH: under load through the VIP, `PUBLISH i` swaps the handler of
# replica $name-PREFIXi, i = 1..3, 0.3 s apart (kubelets do not sync at the same instant); then
# waits for every replica in ips to answer $body2. Sets pending, restarted, swap_ms, t_all, during.
swap_under_load() {
  local csv=$1 prefix=$2 publish_replica=$3 starts t_swap i
  local names=("$name-${prefix}1" "$name-${prefix}2" "$name-${prefix}3")
  starts=$(docker inspect -f '{{.State.StartedAt}}' "${names[@]}")
  start_load "$csv"
  sleep 1
  t_swap=$(now_ns)
  for i in 1 2 3; do
    "$publish_replica" "$i"
    sleep 0.3
  done
  read -ra pending <<<"$(await_body "$body2" "${ips[@]}")"
  t_all=$(now_ns)
  sleep 2
  stop_load
  swap_ms=$(((t_all - t_swap) / 1000000))
  during=$(load_summary "$csv" || true)
  restarted=no
  [[ $starts == "$(docker inspect -f '{{.State.StartedAt}}' "${names[@]}")" ]] || restarted=yes
}

# await_body BODY IP...: until every IP answers BODY (30 s at most); prints those that never did.
await_body() {
  local body=$1 deadline=$((SECONDS + 30)) ip left
  shift
  local pending=("$@")
  while ((${#pending[@]} && SECONDS < deadline)); do
    left=()
    for ip in "${pending[@]}"; do
      [[ $(curl -s -m 2 "http://$ip:5000/") == "$body" ]] || left+=("$ip")
    done
    pending=("${left[@]}")
    ((${#pending[@]})) && sleep 0.1
  done
  echo "${pending[*]}"
}

run_replica() { # run_replica NAME HANDLER_DIR → the container's IP
  docker run -d --name "$1" --label "wasmlet-test=$id" --network "$name" \
    --read-only --tmpfs /var/cache/wasmlet:uid=65532,gid=65532,mode=0700 \
    -v "$2:/app/handlers:ro" "${replica_args[@]}" "$image" >/dev/null
  # Hairpin mode on every bridge port (what kubelet's hairpin-veth mode does): br_netfilter
  # bridges a DNATed frame straight to its new destination, which for a replica calling the
  # VIP and drawing itself is the port it came in on.
  local port
  for port in /sys/class/net/"$bridge"/brif/*; do echo 1 >"$port/hairpin_mode"; done
  ip_of "$1"
}

# The Service's iptables chains, rewritten in one iptables-restore transaction like kube-proxy:
# endpoint i of n is picked with probability 1/(n-i), so each of n gets 1/n of the connections.
declare -A sep_of=()
sep_seq=0
set_endpoints() { # set_endpoints IP... (the ready endpoints, in order)
  local rules n=$# i=0 ip sep keep=" $* "
  rules="*nat"$'\n'":$name-SVC - [0:0]"$'\n'
  for ip in "$@"; do
    if [[ -z ${sep_of[$ip]:-} ]]; then
      sep_seq=$((sep_seq + 1))
      sep_of[$ip]=$name-SEP$sep_seq
      rules+=":${sep_of[$ip]} - [0:0]"$'\n'
      rules+="-A ${sep_of[$ip]} -s $ip/32 -j MARK --set-xmark 0x4000/0x4000"$'\n'
      rules+="-A ${sep_of[$ip]} -p tcp -j DNAT --to-destination $ip:5000"$'\n'
    fi
  done
  for ip in "$@"; do
    if ((i < n - 1)); then
      rules+="-A $name-SVC -m statistic --mode random --probability $(awk -v k=$((n - i)) 'BEGIN {printf "%.10f", 1 / k}') -j ${sep_of[$ip]}"$'\n'
    else
      rules+="-A $name-SVC -j ${sep_of[$ip]}"$'\n'
    fi
    i=$((i + 1))
  done
  for ip in "${!sep_of[@]}"; do # endpoints that left: their chains go too
    if [[ $keep != *" $ip "* ]]; then
      rules+="-F ${sep_of[$ip]}"$'\n'"-X ${sep_of[$ip]}"$'\n'
      unset "sep_of[$ip]"
    fi
  done
  rules+="COMMIT"$'\n'
  iptables-restore --noflush <<<"$rules"
}

# forget_dead_endpoint IP: delete the half-open conntrack entries DNATed to a dead endpoint, as
# proposed for kube-proxy in kubernetes/kubernetes#101607. A connect to the dead replica times out
# and frees its source port; this one client IP opens hundreds of connections a second, so the
# kernel soon hands out that port again, and the new SYN matches the old SYN_SENT entry (kept for
# 120 s) and follows its DNAT to the dead replica instead of the Service's new rules. Only
# SYN_SENT entries go: established connections to a removed endpoint must be left to drain.
forget_dead_endpoint() {
  local out
  out=$(conntrack -D -p tcp --reply-src "$1" --state SYN_SENT 2>&1 >/dev/null || true)
  info "conntrack: ${out#*: } (half-open to $1)"
}

dnat_count() { # connections DNATed to IP so far
  iptables -t nat -L "${sep_of[$1]}" -n -v -x | awk '/DNAT/ {print $1}'
}

start_load() { # start_load FILE: requests through the VIP until $work/stop exists
  rm -f "$work/stop"
  "$python" scripts/vip_load.py run --url "http://$vip/" --out "$1" --until-file "$work/stop" \
    --workers 4 --pause 0.01 &
  load_pid=$!
}
stop_load() {
  touch "$work/stop"
  wait "$load_pid"
  load_pid=
}
load_summary() { "$python" scripts/vip_load.py summary "$@"; }

# --- 0. engine, base images, handlers ------------------------------------------------------------

scripts/docker-engine.sh start "$work/dockerd.pid"
scripts/need-command.sh conntrack conntrack
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  t0=$SECONDS
  scripts/docker-base-images.sh
  info "base images ready in $((SECONDS - t0))s"
fi

# --- 1. the image ------------------------------------------------------------------------------

if [[ ${SKIP_BUILD:-0} == 1 ]]; then
  info "SKIP_BUILD=1: reusing $image"
else
  t0=$SECONDS
  if DOCKER_BUILDKIT=0 docker build --force-rm --network "${BUILD_NETWORK:-host}" -t "$image" . \
    >"$work/build.log" 2>&1; then
    pass "image build: docker build . in $((SECONDS - t0))s"
  else
    tail -n 40 "$work/build.log"
    fail "image build: docker build . failed after $((SECONDS - t0))s"
  fi
fi
if ! docker image inspect "$image" >/dev/null 2>&1; then
  echo "container: $passed passed, $((failed + 1)) failed (no image $image)"
  exit 1
fi
size=$(docker image inspect -f '{{.Size}}' "$image")
info "image $image: $(numfmt --to=iec "$size") ($size bytes); base debian:bookworm-slim" \
  "$(numfmt --to=iec "$(docker image inspect -f '{{.Size}}' debian:bookworm-slim)")"
config=$(docker image inspect -f '{{.Config.User}} {{json .Config.ExposedPorts}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}' "$image")
if [[ $config == "65532:65532 "*5000/tcp*9090/tcp*wasmlet*serve*--config*/app/handlers/wasmlet.toml* ]]; then
  pass "image config: $config"
else
  fail "image config: $config"
fi

# Handlers for the replicas: the image's own hello.wasm, and the handler swapped in by (c).
cid=$(docker create --label "wasmlet-test=$id" "$image")
docker cp -q "$cid:/app/handlers/hello.wasm" "$work/hello.wasm" 2>/dev/null ||
  docker cp "$cid:/app/handlers/hello.wasm" "$work/hello.wasm"
docker rm -v "$cid" >/dev/null
v2=${V2_WASM:-$root/target/wasm32-wasip2/release/v2.wasm}
if [[ ! -f $v2 ]] && cargo metadata --no-deps --format-version 1 2>/dev/null | grep -q '"name":"test-programs"'; then
  cargo build --quiet --release --locked -p test-programs --target wasm32-wasip2 || true
fi
if [[ ! -f $v2 ]]; then
  # No v2 fixture yet: the same component with its greeting patched (same length, so the
  # component stays valid) is still a different handler with a different answer.
  "$python" - "$work/hello.wasm" "$work/v2.wasm" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
assert data.count(b"Hello World!") >= 1, "no greeting to patch"
open(sys.argv[2], "wb").write(data.replace(b"Hello World!", b"Hello Wasm2!"))
PY
  v2=$work/v2.wasm
  info "no v2 fixture (target/wasm32-wasip2/release/v2.wasm): swapping in a patched hello.wasm"
fi

# The visit counter (guest/counter/): the file-store check in 2 and (f).
counter_wasm=${COUNTER_WASM:-$root/target/wasm32-wasip2/release/hello_counter.wasm}
if [[ ! -f $counter_wasm ]]; then
  cargo build --quiet --release --locked -p hello-counter --target wasm32-wasip2 || true
fi
[[ -f $counter_wasm ]] || info "no counter component ($counter_wasm): the key-value checks fail"

docker network create --driver bridge --label "wasmlet-test=$id" \
  -o "com.docker.network.bridge.name=$bridge" "$name" >/dev/null
subnet=$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$name")
info "network $name ($subnet, bridge $bridge)"

# --- 2. one container ------------------------------------------------------------------------

t0=$(now_ns)
docker run -d --name "$name-single" --label "wasmlet-test=$id" --network "$name" \
  --read-only --tmpfs /var/cache/wasmlet:uid=65532,gid=65532,mode=0700 "$image" >/dev/null
single=$(ip_of "$name-single")
if wait_ready "$single" 30; then
  pass "single: /readyz 200 $((($(now_ns) - t0) / 1000000))ms after docker run (incl. container start)"
else
  fail "single: /readyz not 200 within 30s; logs:"$'\n'"$(docker logs "$name-single" 2>&1 | tail -n 20)"
fi
body=$(curl -s -m 2 "http://$single:5000/" || true)
if [[ $body == "Hello World!" ]]; then
  pass "single: GET / → Hello World!"
else
  fail "single: GET / → '$body'"
fi
pid=$(docker inspect -f '{{.State.Pid}}' "$name-single")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo "?")
# Even root cannot write to the root filesystem; the process itself runs as 65532.
rofs=$(docker exec -u 0 "$name-single" touch /probe 2>&1 || true)
if [[ $uid == 65532 && $rofs == *"Read-only file system"* ]]; then
  pass "single: runs as uid $uid on a read-only root filesystem"
else
  fail "single: uid $uid; writing to / as root: ${rofs:-succeeded}"
fi
codes=""
for p in healthz readyz metrics handlers; do codes+="/$p $(http_code "http://$single:9090/$p") "; done
metrics=$(curl -s -m 2 "http://$single:9090/metrics" || true)
handlers=$(curl -s -m 2 "http://$single:9090/handlers" || true)
if [[ $codes == "/healthz 200 /readyz 200 /metrics 200 /handlers 200 " ]] &&
  grep -q '^# TYPE' <<<"$metrics" && "$python" -c 'import json, sys; json.loads(sys.argv[1])' "$handlers" 2>/dev/null; then
  pass "single: admin port: $codes(Prometheus text, JSON)"
else
  fail "single: admin port: $codes; /handlers: ${handlers:0:200}"
fi
if [[ $(http_code "http://$single:5000/metrics") != 200 ]] || [[ $(curl -s -m 2 "http://$single:5000/metrics") != *"# TYPE"* ]]; then
  pass "single: the admin endpoints are not on the public port"
else
  fail "single: /metrics is served on the public port 5000"
fi
logs=$(docker logs "$name-single" 2>&1)
if [[ -n $logs ]] && "$python" -c '
import json, sys
for line in sys.argv[1].splitlines():
    json.loads(line)' "$logs" 2>/dev/null; then
  pass "single: logs are JSON lines ($(wc -l <<<"$logs") so far)"
else
  fail "single: logs are not all JSON:"$'\n'"$(head -n 5 <<<"$logs")"
fi
cache=$(docker exec "$name-single" ls -A /var/cache/wasmlet 2>/dev/null | wc -l)
info "single: /var/cache/wasmlet (tmpfs) holds $cache entries"
# Forgetting the cache volume costs start-up time, not availability.
docker run -d --name "$name-nocache" --label "wasmlet-test=$id" --network "$name" --read-only "$image" >/dev/null
nocache=$(ip_of "$name-nocache")
if wait_ready "$nocache" 30 && [[ $(curl -s -m 2 "http://$nocache:5000/") == "Hello World!" ]]; then
  pass "single: without a writable cache folder it still serves Hello World!"
else
  fail "single: without a writable cache folder:"$'\n'"$(docker logs "$name-nocache" 2>&1 | tail -n 5)"
fi
docker rm -f -v "$name-nocache" >/dev/null
# The embedded `file` store in the image's data dir (WASMLET_DATA_DIR, inside the image's VOLUME):
# the counter on the implicit `default` store keeps its count across a restart of the container
# (same anonymous volume), and the host made the data folder private to itself.
printf '[[route]]\npath = "/..."\ncomponent = "counter.wasm"\nkey_value_stores = ["default"]\n' \
  >"$work/file-store.toml"
publish_files "$work/kv" "$work/file-store.toml:wasmlet.toml" "$counter_wasm:counter.wasm"
docker run -d --name "$name-kv" --label "wasmlet-test=$id" --network "$name" --read-only \
  --tmpfs /var/cache/wasmlet:uid=65532,gid=65532,mode=0700 -v "$work/kv:/app/handlers:ro" "$image" >/dev/null
kv=$(ip_of "$name-kv")
counts=""
if wait_ready "$kv" 30; then
  counts+="$(curl -s -m 2 "http://$kv:5000/count") | $(curl -s -m 2 "http://$kv:5000/count") | "
  docker restart -t 10 "$name-kv" >/dev/null
  kv=$(ip_of "$name-kv")
  wait_ready "$kv" 30 && counts+=$(curl -s -m 2 "http://$kv:5000/count")
fi
data_dir=$(docker exec "$name-kv" stat -c '%a %u' /var/lib/wasmlet/data 2>&1 || true)
if [[ $counts == *" 1 times. | "*" 2 times. | "*" 3 times." && $data_dir == "700 65532" ]]; then
  pass "single: the counter on the embedded file store keeps its count across docker restart: $counts; data dir /var/lib/wasmlet/data: mode $data_dir"
else
  fail "single: file store across a restart: '$counts'; data dir: $data_dir; logs:"$'\n'"$(docker logs "$name-kv" 2>&1 | tail -n 5)"
fi
docker rm -f -v "$name-kv" >/dev/null
t0=$SECONDS
docker stop -t 40 "$name-single" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$name-single")
if [[ $code == 0 ]] && ((SECONDS - t0 < 30)); then
  pass "single: SIGTERM → exit 0 after $((SECONDS - t0))s"
else
  fail "single: SIGTERM → exit $code after $((SECONDS - t0))s; logs:"$'\n'"$(docker logs "$name-single" 2>&1 | tail -n 5)"
fi

# --- 3. three replicas behind a virtual IP -------------------------------------------------------

publish_hello() { publish "$work/r$1" "$work/hello.wasm"; }
start_replicas vip r publish_hello
# A test-only address (RFC 2544 benchmarking range), routed onto the test bridge.
while :; do
  vip=198.18.$((RANDOM % 250)).$((RANDOM % 250 + 1))
  [[ -z $(ip route show "$vip/32") ]] && break
done
ip route add "$vip/32" dev "$bridge"
iptables -t nat -N "$name-SVC"
iptables -t nat -I OUTPUT 1 -d "$vip/32" -p tcp --dport 80 -j "$name-SVC"
iptables -t nat -I PREROUTING 1 -d "$vip/32" -p tcp --dport 80 -j "$name-SVC"
iptables -t nat -I POSTROUTING 1 -o "$bridge" -m mark --mark 0x4000/0x4000 -j MASQUERADE
set_endpoints "${ips[@]}"
info "Service VIP $vip:80 → ${ips[*]} :5000"

# (a) spread
"$python" scripts/vip_load.py run --url "http://$vip/" --out "$work/a.csv" --duration 4 --workers 4 --pause 0.01
spread=""
all_served=1
for ip in "${ips[@]}"; do
  n=$(dnat_count "$ip")
  spread+="$ip:$n "
  ((n > 0)) || all_served=0
done
if s=$(load_summary "$work/a.csv" --expect-body "Hello World!") && ((all_served)); then
  pass "vip (a): all requests through the VIP succeed, every replica served some: $s; connections per replica: $spread"
else
  fail "vip (a): $s; connections per replica: $spread"
fi

# A client inside a replica calling the VIP may be sent to itself: that works only with the
# bridge ports in hairpin mode and the MASQUERADE rule for marked (self-addressed) connections,
# as with kube-proxy; without either, every connection that draws itself fails.
pid1=$(docker inspect -f '{{.State.Pid}}' "$name-r1")
before=$(dnat_count "${ips[0]}")
bad=0
for _ in $(seq 30); do
  [[ $(nsenter -t "$pid1" -n curl -s -m 2 "http://$vip/") == "Hello World!" ]] || bad=$((bad + 1))
done
self=$(($(dnat_count "${ips[0]}") - before))
if ((bad == 0 && self > 0)); then
  pass "vip hairpin: 30/30 requests from inside replica 1 through the VIP succeed ($self drew replica 1 itself)"
else
  fail "vip hairpin: $bad of 30 failed ($self drew replica 1 itself)"
fi

# (b) kill a replica under load; remove its endpoint the way the endpoints controller would
start_load "$work/b.csv"
sleep 1.5
docker kill "$name-r3" >/dev/null
sleep 1 # readiness probe period: the endpoint is still listed
set_endpoints "${ips[0]}" "${ips[1]}"
t_removed=$(now_ns)
forget_dead_endpoint "${ips[2]}"
sleep 3
stop_load
before=$(load_summary "$work/b.csv" --until "$t_removed" || true)
if after=$(load_summary "$work/b.csv" --since "$t_removed" --expect-body "Hello World!"); then
  pass "vip (b): replica 3 killed under load; after its endpoint was removed: $after"
else
  fail "vip (b): after the endpoint was removed: $after"
  # Where the failed connections went: their conntrack entries, by the client's source port.
  ports=$(sed -n 's/.*failed_local_ports=//p' <<<"$after")
  for p in ${ports//,/ }; do
    info "port $p: $(conntrack -L -p tcp --sport "$p" 2>/dev/null | grep "dst=$vip " || echo 'no conntrack entry')"
  done
fi
info "vip (b): requests started before the removal (the dead endpoint still listed): $before"
# The ReplicaSet's replacement pod: back to 3 endpoints once it is ready.
docker rm -f -v "$name-r3" >/dev/null
publish "$work/r3" "$work/hello.wasm"
ips[2]=$(run_replica "$name-r3" "$work/r3")
wait_ready "${ips[2]}" 30 || fail "vip (b): replacement replica not ready"
set_endpoints "${ips[@]}"

# (c) a new handler written into every replica's ConfigMap-style folder
body2=""
publish "$work/probe" "$v2"
probe_ip=$(run_replica "$name-probe" "$work/probe")
if wait_ready "$probe_ip" 30; then
  body2=$(curl -s -m 2 "http://$probe_ip:5000/" || true)
fi
docker rm -f -v "$name-probe" >/dev/null
if [[ -z $body2 || $body2 == "Hello World!" ]]; then
  fail "vip (c): the new handler ($(basename "$v2")) answers '$body2' on its own"
else
  publish_v2() { publish "$work/r$1" "$v2"; }
  swap_under_load "$work/c.csv" r publish_v2
  if ((${#pending[@]} == 0)) && [[ $restarted == no ]] && load_summary "$work/c.csv" >/dev/null &&
    tail_s=$(load_summary "$work/c.csv" --since "$t_all" --expect-body "$body2"); then
    pass "vip (c): every replica answers '$body2' ${swap_ms}ms after the first swap, no restart; during: $during; after: $tail_s"
  else
    fail "vip (c): still old: ${pending[*]:-none}; restarted: $restarted; during: $during; after: ${tail_s:-}"
  fi
fi

# (d) a rolling update (maxSurge 1, maxUnavailable 0): each new replica mounts a new "ConfigMap"
# (back to hello.wasm); an old one leaves the endpoints, gets preStop time, then SIGTERM.
start_load "$work/d.csv"
sleep 1
exits=""
for i in 1 2 3; do
  publish "$work/n$i" "$work/hello.wasm"
  new_ip=$(run_replica "$name-n$i" "$work/n$i")
  wait_ready "$new_ip" 30 || fail "vip (d): new replica $i not ready"
  old_ip=${ips[0]}
  ips=("${ips[@]:1}" "$new_ip")
  set_endpoints "${ips[@]}"
  sleep 1 # preStop: endpoint removal reaches every node before the drain starts
  docker stop -t 40 "$name-r$i" >/dev/null
  exits+="$(docker inspect -f '{{.State.ExitCode}}' "$name-r$i") "
done
sleep 1
stop_load
if d=$(load_summary "$work/d.csv") && [[ $exits == "0 0 0 " ]]; then
  pass "vip (d): rolling replacement of all 3 replicas: $d; old replicas exited: $exits"
else
  fail "vip (d): $d; old replicas exited: $exits"
fi

# (e) handlers from a registry, deployed as k8s/oci/ does: a registry on the test network's
# gateway (the host's end of the bridge) with htpasswd basic auth, credentials mounted the way the
# optional `wasmlet-registry` Secret is, wasmlet.toml holding only pinned oci:// references.
scripts/need-command.sh docker-registry docker-registry
gateway=$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "$name")
reg_port=$("$python" -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$gateway")
registry=$gateway:$reg_port
mkdir -p "$work/registry" "$work/docker"
# bcrypt (the only kind distribution takes) of e2e-pa55-never-shown, as `htpasswd -B` writes it.
echo 'robot:$2b$05$wasmletE2eSaltValue01uQMD0uUuN/nX/QBSeKjeUIDwqwGB8x8q' >"$work/htpasswd"
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\nauth:\n  htpasswd:\n    realm: wasmlet-ctest\n    path: %s\n' \
  "$work/registry" "$registry" "$work/htpasswd" >"$work/registry.yml"
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$registry" "$(printf 'robot:e2e-pa55-never-shown' | base64 -w0)" \
  >"$work/docker/config.json"
cp "$v2" "$work/v2.wasm"
chmod 0755 "$work/docker"
chmod 0444 "$work/docker/config.json" "$work/hello.wasm" "$work/v2.wasm"
for _ in $(seq 100); do
  [[ $(http_code "http://$registry/v2/") == 401 ]] && break
  sleep 0.1
done
credentials=(-e DOCKER_CONFIG=/var/run/secrets/wasmlet-registry -v "$work/docker:/var/run/secrets/wasmlet-registry:ro")
push() { # push FILE TAG → the manifest digest, pushed by the image's own wasmlet
  docker run --rm --label "wasmlet-test=$id" --network "$name" "${credentials[@]}" \
    -v "$work:/w:ro" "$image" push "/w/$1" "oci://$registry/hello:$2" --insecure-registry "$registry"
}
oci_manifest() { # oci_manifest DIGEST FILE
  printf '[[route]]\npath = "/..."\ncomponent = "oci://%s/hello@%s"\n' "$registry" "$1" >"$2"
}
d1=$(push hello.wasm v1 2>"$work/push.err" || true)
d2=$(push v2.wasm v2 2>>"$work/push.err" || true)
if [[ $d1 != sha256:* || $d2 != sha256:* || -z $body2 ]]; then
  fail "vip (e): wasmlet push to the registry on $registry failed: $(tail -n 3 "$work/push.err")"
else
  oci_manifest "$d1" "$work/oci-v1.toml"
  oci_manifest "$d2" "$work/oci-v2.toml"
  replica_args=(-e "WASMLET_INSECURE_REGISTRIES=$registry" "${credentials[@]}")
  publish_oci_v1() { publish_files "$work/o$1" "$work/oci-v1.toml:wasmlet.toml"; }
  start_replicas "vip (e)" o publish_oci_v1
  set_endpoints "${ips[@]}"
  for i in 1 2 3; do docker rm -f -v "$name-n$i" >/dev/null; done
  publish_oci_v2() { publish_files "$work/o$1" "$work/oci-v2.toml:wasmlet.toml"; }
  swap_under_load "$work/e.csv" o publish_oci_v2
  leaked=$(docker logs "$name-o1" 2>&1 | grep -c 'e2e-pa55-never-shown' || true)
  resolved=$(curl -s -m 2 "http://${ips[0]}:9090/handlers" | grep -c "$d2" || true)
  if ((${#pending[@]} == 0 && leaked == 0 && resolved > 0)) && [[ $restarted == no ]] &&
    load_summary "$work/e.csv" >/dev/null; then
    pass "vip (e): from a registry with basic auth, one digest edited: every replica answers '$body2' ${swap_ms}ms after the first swap, no restart; during: $during"
  else
    fail "vip (e): still old: ${pending[*]:-none}; restarted: $restarted; secret in logs: $leaked; /handlers shows $d2: $resolved; during: $during"
  fi
fi

# (f) one visit count shared by the replicas in Redis, deployed as k8s/redis/ does: Debian's
# redis-server on the test network's gateway with a password, the replicas' `default` store
# pointing at it (k8s/redis/wasmlet.toml with the URL changed), the password a file mounted
# read-only as the Secret is (k8s/redis/password.yaml). 2,000 increments through the VIP while a
# replica is killed and replaced: INCRBY is atomic across replicas, so the count must end at 2,000
# less the requests that failed, each successful answer showing its own N.
t_f=$SECONDS
scripts/need-command.sh redis-server redis-server
scripts/need-command.sh redis-cli redis-tools
gateway=${gateway:-$(docker network inspect -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' "$name")}
redis_port=$("$python" -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$gateway")
redis_password=e2e-redis-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
mkdir -p "$work/redis" "$work/redis-secret"
printf '%s' "$redis_password" >"$work/redis-secret/password"
# The Secret's defaultMode 0440 with fsGroup 65532: the host's group may read it, nobody else.
chown 0:65532 "$work/redis-secret/password"
chmod 0440 "$work/redis-secret/password"
chmod 0755 "$work/redis-secret"
redis-server --bind "$gateway" --port "$redis_port" --requirepass "$redis_password" \
  --save '' --appendonly no --dir "$work/redis" >"$work/redis.log" 2>&1 &
redis_pid=$!
rcli() { REDISCLI_AUTH=$redis_password redis-cli --no-auth-warning -h "$gateway" -p "$redis_port" "$@"; }
for _ in $(seq 100); do
  [[ $(rcli PING 2>/dev/null) == PONG ]] && break
  sleep 0.1
done
warm=skip
sed "s|redis://hello-world-redis:6379/0|redis://$gateway:$redis_port/0|" k8s/redis/wasmlet.toml >"$work/redis.toml"
if [[ $(rcli PING 2>/dev/null) != PONG ]] || ! grep -q "redis://$gateway:$redis_port/0" "$work/redis.toml" ||
  [[ ! -f $counter_wasm ]]; then
  fail "vip (f): no Redis on $gateway:$redis_port, no URL to change in k8s/redis/wasmlet.toml, or no $counter_wasm:"$'\n'"$(tail -n 5 "$work/redis.log")"
else
  publish_counter() { publish_files "$work/c$1" "$work/redis.toml:wasmlet.toml" "$counter_wasm:counter.wasm"; }
  replica_args=(-v "$work/redis-secret:/etc/wasmlet/redis:ro")
  start_replicas "vip (f)" c publish_counter
  set_endpoints "${ips[@]}"
  for old in "$name"-o1 "$name"-o2 "$name"-o3 "$name"-n1 "$name"-n2 "$name"-n3; do
    docker rm -f -v "$old" >/dev/null 2>&1 || true
  done
  # Each replica once (its first operation connects to Redis), then the count the run starts from.
  warm=
  for ip in "${ips[@]}"; do warm+="$(http_code "http://$ip:5000/count") "; done
  initial=$(rcli GET hits)
fi
if [[ $warm == skip ]]; then
  : # failed above
elif [[ $warm != "200 200 200 " ]]; then
  fail "vip (f): the replicas' first GET /count answered ${warm:-nothing }, not 200 200 200"
else
  "$python" scripts/vip_load.py run --url "http://$vip/count" --out "$work/f.csv" --requests 2000 \
    --rate 250 --workers 32 &
  load_pid=$!
  for _ in $(seq 100); do # a quarter of the requests made: kill one replica
    (($(wc -l 2>/dev/null <"$work/f.csv" || echo 0) >= 500)) && break
    sleep 0.05
  done
  docker kill "$name-c2" >/dev/null || true
  leaked=$(docker logs "$name-c2" 2>&1 | grep -c -F "$redis_password" || true)
  sleep 1 # readiness probe period: the endpoint is still listed
  set_endpoints "${ips[0]}" "${ips[2]}"
  t_removed=$(now_ns)
  forget_dead_endpoint "${ips[1]}"
  docker rm -f -v "$name-c2" >/dev/null
  publish_counter 4
  new_ip=$(run_replica "$name-c4" "$work/c4")
  wait_ready "$new_ip" 30 || fail "vip (f): replacement replica not ready"
  ips=("${ips[0]}" "${ips[2]}" "$new_ip")
  set_endpoints "${ips[@]}"
  t_replaced=$(now_ns)
  wait "$load_pid"
  load_pid=
  final=$(rcli GET hits)
  arithmetic=$("$python" scripts/vip_load.py counter "$work/f.csv" --initial "${initial:-0}" --final "${final:-0}" 2>&1) &&
    counted=1 || counted=0
  while read -r line; do info "vip (f): $line"; done <<<"$arithmetic"
  info "vip (f): requests started before the dead endpoint was removed: $(load_summary "$work/f.csv" --until "$t_removed" || true)"
  info "vip (f): started after the removal: $(load_summary "$work/f.csv" --since "$t_removed" || true)"
  info "vip (f): started after the replacement joined: $(load_summary "$work/f.csv" --since "$t_replaced" || true)"
  new_served=$(dnat_count "$new_ip")
  for c in c1 c3 c4; do
    leaked=$((leaked + $(docker logs "$name-$c" 2>&1 | grep -c -F "$redis_password" || true)))
  done
  for p in handlers metrics; do
    leaked=$((leaked + $(curl -s -m 2 "http://${ips[0]}:9090/$p" | grep -c -F "$redis_password" || true)))
  done
  failed_n=$(grep -o -m 1 ' failed=[0-9]*' <<<"$arithmetic" | cut -d= -f2)
  unanswered=$(sed -n 's/.*increments with no answer = .* = \(-\{0,1\}[0-9]*\) .*/\1/p' <<<"$arithmetic")
  note="exactly 2000 - $failed_n failed"
  ((${unanswered:-0} > 0)) && note="2000 - $failed_n failed + $unanswered failed request(s) whose increment was made before their replica died"
  if ((counted && leaked == 0 && new_served > 0)); then
    pass "vip (f): 3 replicas on one Redis, 2,000 increments through the VIP while a replica was killed and replaced: counter +$((final - ${initial:-0})) = $note; every answered N distinct, none lost or doubled; the replacement served $new_served; password in no log, /handlers or /metrics; $((SECONDS - t_f))s"
  else
    fail "vip (f): arithmetic ok: $counted; password seen: $leaked time(s); replacement served: $new_served"
  fi
fi

echo
echo "image: $image $(numfmt --to=iec "$size"); total time $(($(date +%s) - started))s"
printf '%s\n' "${summary[@]}"
echo "container: $passed passed, $failed failed"
((failed == 0))
