#!/usr/bin/env bash
# Render the Kubernetes manifests and check them, without a cluster:
#   1. `kubectl kustomize` renders k8s/ (hashed ConfigMap → rolling update), k8s/in-place/
#      (fixed ConfigMap name → in-place hot swap), k8s/autoscaling/ (k8s/ + an HPA),
#      k8s/canary/ (a canary through the ConfigMap; a stand-in hello-v2.wasm if none is there)
#      k8s/oci/ (oci:// handlers, registry Secret), k8s/redis/ (the visit counter on a Redis
#      store; a stand-in counter.wasm if none is there) and k8s/tls/ (TLS from a Secret, port 443);
#   2. kubernetes-validate --strict validates both against the oldest and newest Kubernetes
#      releases it has schemas for, from 1.32 on (K8S_VERSIONS overrides);
#   3. scripts/k8s_check.py checks that the objects agree with each other and with the Dockerfile;
#   4. the two swap modes behave as documented: a new handler changes the base's ConfigMap name
#      (and so the pod template) but not the in-place overlay's;
#   5. negative tests: mutated manifests must fail steps 2 and 3.
# Prints one PASS/FAIL line per check and `k8s: N passed, M failed`; exits non-zero on failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

python=${PYTHON:-python3}
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "k8s-validate: installing kubernetes-validate from PyPI" >&2
  "$python" -m pip install --quiet --disable-pip-version-check kubernetes-validate >&2
fi
if [[ -z ${K8S_VERSIONS:-} ]]; then
  # Every version with schemas, newest last; keep 1.32 (what this repo's kubectl is) and the newest.
  mapfile -t known < <("$python" -c '
import kubernetes_validate.utils as u
for v in sorted(u.all_versions(), key=lambda v: tuple(map(int, v.split(".")))): print(v)')
  newest=${known[-1]}
  oldest=$(printf '%s\n' "${known[@]}" | awk -F. '$1 > 1 || $2 >= 32' | head -n 1)
  K8S_VERSIONS="$oldest $newest"
fi

# The ConfigMap generator needs a handler next to k8s/handlers/wasmlet.toml.
[[ -f k8s/handlers/hello.wasm ]] || scripts/k8s-handlers.sh >&2

render() { # render NAME KUSTOMIZATION_DIR
  if kubectl kustomize "$2" >"$tmp/$1.yaml" 2>"$tmp/$1.err"; then
    pass "render $2 ($(grep -c '^kind:' "$tmp/$1.yaml") objects)"
  else
    fail "render $2: $(cat "$tmp/$1.err")"
    return 1
  fi
}

validate() { # validate FILE LABEL [expect-failure]
  local v out
  for v in $K8S_VERSIONS; do
    if out=$(kubernetes-validate --strict --quiet -k "$v" "$1" 2>&1); then
      if [[ ${3:-} == expect-failure ]]; then
        fail "kubernetes-validate --strict -k $v rejects $2 (it accepted it)"
      else
        pass "kubernetes-validate --strict -k $v $2"
      fi
    elif [[ ${3:-} == expect-failure ]]; then
      pass "kubernetes-validate --strict -k $v rejects $2: $(echo "$out" | grep -m1 -iE 'error|invalid|additional' || echo "$out" | head -n 1)"
    else
      fail "kubernetes-validate --strict -k $v $2:"$'\n'"$out"
    fi
  done
}

consistency() { # consistency FILE LABEL
  if "$python" scripts/k8s_check.py "$1" --dockerfile Dockerfile >"$tmp/check.out" 2>&1; then
    pass "consistency $2 ($(tail -n 1 "$tmp/check.out"))"
  else
    fail "consistency $2:"$'\n'"$(grep -v '^ok ' "$tmp/check.out")"
  fi
}

configmap_name() { "$python" -c '
import sys, yaml
print(*[d["metadata"]["name"] for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap"])' "$1"; }

deployment_of() { "$python" -c '
import json, sys, yaml
print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Deployment"], sort_keys=True))' "$1"; }

# The canary example renders from a copy, with a stand-in second version if none was put there.
cp -r k8s "$tmp/k8s-canary"
if [[ ! -f k8s/canary/hello-v2.wasm ]]; then
  cp k8s/handlers/hello.wasm "$tmp/k8s-canary/canary/hello-v2.wasm"
  printf 'v2' >>"$tmp/k8s-canary/canary/hello-v2.wasm"
fi

# The Redis example likewise, with a stand-in counter if none was put there.
if [[ ! -f k8s/redis/counter.wasm ]]; then
  cp k8s/handlers/hello.wasm "$tmp/k8s-canary/redis/counter.wasm"
  printf 'counter' >>"$tmp/k8s-canary/redis/counter.wasm"
fi

for pair in "base k8s" "in-place k8s/in-place" "autoscaling k8s/autoscaling" "canary $tmp/k8s-canary/canary" "oci k8s/oci" "redis $tmp/k8s-canary/redis" "tls k8s/tls"; do
  set -- $pair
  render "$1" "$2" || continue
  validate "$tmp/$1.yaml" "$2"
  consistency "$tmp/$1.yaml" "$2"
done

# The swap modes: render a copy of k8s/ with a different handler.
if [[ -f $tmp/base.yaml && -f $tmp/in-place.yaml ]]; then
  cp -r k8s "$tmp/k8s-v2"
  printf 'v2' >>"$tmp/k8s-v2/handlers/hello.wasm"
  kubectl kustomize "$tmp/k8s-v2" >"$tmp/base-v2.yaml"
  kubectl kustomize "$tmp/k8s-v2/in-place" >"$tmp/in-place-v2.yaml"
  b1=$(configmap_name "$tmp/base.yaml") b2=$(configmap_name "$tmp/base-v2.yaml")
  i1=$(configmap_name "$tmp/in-place.yaml") i2=$(configmap_name "$tmp/in-place-v2.yaml")
  if [[ $b1 == hello-world-handlers-* && $b1 != "$b2" ]] && grep -q "name: $b2" "$tmp/base-v2.yaml"; then
    pass "rolling-update mode: a new handler renames the ConfigMap ($b1 → $b2) and the pod template follows"
  else
    fail "rolling-update mode: ConfigMap name $b1 → $b2"
  fi
  if [[ $i1 == hello-world-handlers && $i1 == "$i2" ]] &&
    [[ "$(deployment_of "$tmp/in-place.yaml")" == "$(deployment_of "$tmp/in-place-v2.yaml")" ]]; then
    pass "in-place mode: a new handler keeps the ConfigMap name ($i1), the Deployment is unchanged"
  else
    fail "in-place mode: ConfigMap name $i1 → $i2, or the Deployment changed"
  fi

  # k8s/oci/: a swap is one digest edited in wasmlet.toml; the ConfigMap keeps its name and
  # the Deployment does not change, so every replica hot-swaps without a restart.
  if [[ -f $tmp/oci.yaml ]]; then
    sed -i 's/@sha256:0\{64\}/@sha256:'"$(printf '1%.0s' {1..64})"'/' "$tmp/k8s-v2/oci/wasmlet.toml"
    kubectl kustomize "$tmp/k8s-v2/oci" >"$tmp/oci-v2.yaml"
    o1=$(configmap_name "$tmp/oci.yaml") o2=$(configmap_name "$tmp/oci-v2.yaml")
    if [[ $o1 == hello-world-handlers && $o1 == "$o2" ]] && ! cmp -s "$tmp/oci.yaml" "$tmp/oci-v2.yaml" &&
      [[ "$(deployment_of "$tmp/oci.yaml")" == "$(deployment_of "$tmp/oci-v2.yaml")" ]]; then
      pass "oci mode: a new digest changes only the ConfigMap's wasmlet.toml ($o1), the Deployment is unchanged"
    else
      fail "oci mode: ConfigMap name $o1 → $o2, the digest edit did not show, or the Deployment changed"
    fi
  fi

  # Negative tests: the checks must be able to fail.
  "$python" - "$tmp/base.yaml" "$tmp/bad-schema.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] == "Deployment":
        d["spec"]["replica"] = 3  # a typo: unknown field, caught only by --strict
yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
PY
  validate "$tmp/bad-schema.yaml" "a Deployment with an unknown field (spec.replica)" expect-failure
  for name in base autoscaling redis tls; do
    [[ -f $tmp/$name.yaml ]] || continue
    if "$python" scripts/k8s_check.py --self-test "$tmp/$name.yaml" >"$tmp/self-test.out" 2>&1; then
      pass "consistency checker catches every mutation of $name ($(tail -n 1 "$tmp/self-test.out"))"
    else
      fail "consistency checker self-test on $name:"$'\n'"$(grep -v '^PASS' "$tmp/self-test.out")"
    fi
  done
fi

echo "k8s: $passed passed, $failed failed"
[[ $failed == 0 ]]
