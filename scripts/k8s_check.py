#!/usr/bin/env python3
"""Consistency checks over the rendered Kubernetes manifests (`kubectl kustomize k8s/`).

Schema validation (kubernetes-validate) says each object is well formed; this says the objects
agree with each other and with the image:

  - the Deployment runs 3 replicas, and its selector, the Service's and the PDB's match the pod
    template's labels;
  - the Service is a LoadBalancer on port 80 whose targetPort names a containerPort (5000);
  - the probes hit the admin port, which exists and is not the public one;
  - the ports agree with the listen addresses (env in the Deployment, ENV in the Dockerfile);
  - terminationGracePeriodSeconds > preStop sleep + the host's drain timeout
    (WASMLET_DRAIN_TIMEOUT, default 25s);
  - the handler ConfigMap exists and is mounted as a whole folder (no subPath: those never see
    updates) over the image's handler folder; the cache folder is a writable emptyDir;
  - the key-value data dir (WASMLET_DATA_DIR, in the Deployment or the Dockerfile) is a folder
    inside a mounted emptyDir or PersistentVolumeClaim, not its mount point (which others may
    write to, so the host would refuse it), since the root filesystem is read-only;
  - the handlers' memory budget (WASMLET_MAX_TOTAL_MEMORY) is set and under the memory limit;
  - the cache's cap (WASMLET_CACHE_MAX_SIZE, default 192MiB) is on, and under the cache emptyDir's
    sizeLimit by at least what one new handler writes before the host prunes;
  - the securityContext is restrictive, requests and limits are set, the rollout never drops
    below 3 ready replicas, and the PDB leaves room for a drain;
  - a NetworkPolicy selects the pods: the public port open to all, the admin port only to pods
    labelled as the metrics scraper, no other port, no rule open to every port; every namespace
    selector picks namespaces by name (`kubernetes.io/metadata.name`), never `{}`;
  - an egress NetworkPolicy selects the pods: DNS allowed, and every rule names its destinations
    and ports (no allow-all rule, no 0.0.0.0/0 or ::/0, no namespace selector without a name);
  - the admin POSTs need a token (WASMLET_ADMIN_TOKEN_FILE) read from a mounted Secret that is
    not optional;
  - every component the handler ConfigMap's wasmlet.toml names (a canary's included) is in it;
  - with a `type = "redis"` key-value store in wasmlet.toml (k8s/redis/): its URL names a Service
    and port that render here; the Redis Deployment's image is pinned (exact version or digest),
    runs non-root on a read-only root filesystem with requests and limits, and gets its
    `--requirepass` from a Secret (never a literal); wasmlet's `password = { file }` is a key of
    the same Secret, mounted and not optional; a NetworkPolicy admits only wasmlet's pods to Redis,
    on its port, and wasmlet's egress policy allows exactly that;
  - the Service's appProtocol says what the port speaks: clear text (`kubernetes.io/h2c`) or
    TLS (`https`);
  - with TLS on the public port (WASMLET_TLS_CERT and WASMLET_TLS_KEY, k8s/tls/): the Service
    listens on 443; both files are keys of one Secret that is not optional, mounted read-only as
    a folder (a subPath mount never sees a renewed certificate);
  - with a HorizontalPodAutoscaler (k8s/autoscaling/): autoscaling/v2 on this Deployment,
    minReplicas 3 and the Deployment without `replicas` (or `kubectl apply` would reset it), a CPU
    utilization target under 100% of a CPU request that is set, a PDB that still allows a drain at
    minReplicas, and scale-down that removes no more pods at a time than the PDB lets go.

    k8s_check.py RENDERED.yaml [--dockerfile Dockerfile]     run the checks
    k8s_check.py --self-test RENDERED.yaml                   prove that each check can fail
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import tomllib
from dataclasses import dataclass, field

import yaml

NAME = "hello-world"
REPLICAS = 3
SERVICE_PORT = 80
TLS_SERVICE_PORT = 443
# What a Service port's appProtocol may say for what the public port speaks (absent is fine).
APP_PROTOCOLS = {False: ("http", "kubernetes.io/h2c"), True: ("https",)}
HTTP_PORT = 5000
HANDLERS_DIR = "/app/handlers"
DEFAULT_DRAIN_TIMEOUT_S = 25.0  # the host's documented default for --drain-timeout
DEFAULT_CACHE_DIR = "/var/cache/wasmlet/components"
DEFAULT_CACHE_MAX_SIZE = "192MiB"  # the host's documented default for --cache-max-size
# What one new handler may write under --cache-dir before the host prunes back to its cap: a
# Python hello pulled from a registry is an 18.9 MB layer and 35.8 MB compiled.
HANDLER_CACHE_BYTES = 55_000_000
SCRAPER_LABEL = ("wasmlet.dev/metrics-scraper", "true")  # documented in k8s/base/networkpolicy.yaml
# Set by the API server on every namespace, to its name: a selector on it cannot be matched by a
# namespace someone labels to get in.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
ALL_ADDRESSES = ("0.0.0.0/0", "::/0")

DURATION_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """Seconds in a humantime duration such as `25s`, `1m 30s`, `500ms`."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * DURATION_UNITS[u] for n, u in parts)


def parse_size(text: str) -> int:
    """Bytes in a wasmlet size (`384MiB`, `1G`, `1024`) or a Kubernetes quantity (`512Mi`)."""
    m = re.fullmatch(r"(\d+)\s*([KMG]?)(i?B?)", text.strip(), re.I)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> None:
        (self.passes if ok else self.failures).append(f"{name}: {detail}")


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [
        d
        for d in docs
        if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)
    ]


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels, or a Service's plain map) selects `labels`."""
    is_label_selector = "matchLabels" in selector or "matchExpressions" in selector
    match = selector.get("matchLabels", {}) if is_label_selector else selector
    if not match and not selector.get("matchExpressions"):
        return False  # an empty selector selects everything: never what we mean
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and expr["key"] not in labels:
            return False
        if op == "DoesNotExist" and expr["key"] in labels:
            return False
    return True


def port_of(addr: str) -> int:
    return int(addr.rsplit(":", 1)[1])


def resolve_port(ref, ports: list[dict]) -> dict | None:
    """The containerPort a Service targetPort or probe port (name or number) refers to."""
    for p in ports:
        if (isinstance(ref, str) and p.get("name") == ref) or ref == p["containerPort"]:
            return p
    return None


def dockerfile_env(path: str) -> dict[str, str]:
    """ENV key=value pairs of the Dockerfile's last stage (continuation lines joined)."""
    text = open(path, encoding="utf-8").read().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if re.match(r"(?i)^FROM\s", line):
            env = {}
        elif re.match(r"(?i)^ENV\s", line):
            env.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line))
    return env


def run_checks(docs: list[dict], dockerfile: str | None = None) -> Report:
    r = Report()
    deployments = find(docs, "Deployment", NAME)
    services = find(docs, "Service", NAME)
    pdbs = find(docs, "PodDisruptionBudget")
    r.check("objects", len(deployments) == 1 and len(services) == 1 and len(pdbs) == 1,
            f"{len(deployments)} Deployment, {len(services)} Service, {len(pdbs)} PDB named for {NAME}")
    if not deployments or not services:
        return r
    dep, svc = deployments[0], services[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    containers = [c for c in pod["containers"] if c["name"] == NAME]
    r.check("container", len(containers) == 1, f"container named {NAME}")
    if not containers:
        return r
    c = containers[0]
    ports = c.get("ports", [])
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    image_env = dockerfile_env(dockerfile) if dockerfile else {}

    hpas = find(docs, "HorizontalPodAutoscaler")
    if hpas:
        # The autoscaler owns the count; a `replicas` in the manifest would undo it on each apply.
        r.check("replicas", "replicas" not in spec and hpas[0]["spec"].get("minReplicas") == REPLICAS,
                f"replicas {spec.get('replicas')} left to the HPA, minReplicas {hpas[0]['spec'].get('minReplicas')}")
    else:
        r.check("replicas", spec.get("replicas") == REPLICAS, f"replicas = {spec.get('replicas')}")
    floor = hpas[0]["spec"].get("minReplicas", 1) if hpas else spec.get("replicas", 0)
    r.check("deployment-selector", selects(spec["selector"], labels),
            f"{spec['selector']} selects the pod template's labels {labels}")
    r.check("service-selector", selects(svc["spec"].get("selector", {}), labels),
            f"Service selector {svc['spec'].get('selector')} selects {labels}")
    for pdb in pdbs:
        r.check("pdb-selector", selects(pdb["spec"].get("selector", {}), labels),
                f"PDB selector {pdb['spec'].get('selector')} selects {labels}")
        min_avail = pdb["spec"].get("minAvailable")
        r.check("pdb-allows-drain",
                isinstance(min_avail, int) and 0 < min_avail < floor,
                f"minAvailable {min_avail} < replicas {floor}")

    # Ports: the Service → the public containerPort; probes → the admin one.
    r.check("service-type", svc["spec"].get("type") == "LoadBalancer", f"type {svc['spec'].get('type')}")
    svc_ports = svc["spec"].get("ports", [])
    tls = "WASMLET_TLS_CERT" in env or "WASMLET_TLS_KEY" in env
    service_port = TLS_SERVICE_PORT if tls else SERVICE_PORT
    web = [p for p in svc_ports if p.get("port") == service_port]
    r.check("service-port", len(web) == 1,
            f"Service ports {[p.get('port') for p in svc_ports]} include {service_port}"
            f" ({'TLS' if tls else 'clear text'})")
    http = None
    for p in web:
        http = resolve_port(p.get("targetPort", p.get("port")), ports)
        r.check("service-target-port", http is not None and http["containerPort"] == HTTP_PORT,
                f"targetPort {p.get('targetPort')!r} → containerPort "
                f"{http['containerPort'] if http else None} (want {HTTP_PORT})")
        proto = p.get("appProtocol")
        r.check("service-app-protocol", proto is None or proto in APP_PROTOCOLS[tls],
                f"appProtocol {proto!r} on a port speaking {'TLS' if tls else 'clear text'}"
                f" (one of {APP_PROTOCOLS[tls]} or none)")
    if tls:
        check_tls(r, env, mounts_of(c), volumes_of(pod))
    probe_ports = []
    for kind in ("readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        if not probe or "httpGet" not in probe:
            r.check(f"{kind}", False, "missing (or not an httpGet probe)")
            continue
        target = resolve_port(probe["httpGet"]["port"], ports)
        probe_ports.append(target)
        r.check(f"{kind}-port", target is not None and target is not http,
                f"{probe['httpGet']['path']} on port {probe['httpGet']['port']!r} → "
                f"{target['containerPort'] if target else 'no such containerPort'} (the admin port)")
    r.check("readiness-path", c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
            "readiness probes /readyz")
    r.check("liveness-path", c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
            "liveness probes /healthz")
    for var, want in (("WASMLET_LISTEN", http), ("WASMLET_ADMIN_LISTEN", probe_ports[0] if probe_ports else None)):
        for origin, source in (("Deployment env", env), ("Dockerfile ENV", image_env)):
            if source.get(var) is not None:
                ok = want is not None and port_of(source[var]) == want["containerPort"]
                r.check("listen-port", ok, f"{origin} {var}={source[var]} matches containerPort "
                        f"{want['containerPort'] if want else None}")

    # Shutdown: the grace period covers the preStop delay and the whole drain.
    drain_text = env.get("WASMLET_DRAIN_TIMEOUT") or image_env.get("WASMLET_DRAIN_TIMEOUT")
    drain = parse_duration(drain_text) if drain_text else DEFAULT_DRAIN_TIMEOUT_S
    pre_stop = c.get("lifecycle", {}).get("preStop", {})
    sleep_s = pre_stop.get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    r.check("prestop-sleep", 0 < sleep_s, f"preStop sleep {sleep_s}s")
    r.check("grace-period", grace > sleep_s + drain,
            f"terminationGracePeriodSeconds {grace} > preStop {sleep_s}s + drain {drain:g}s")

    # Handlers: a ConfigMap that exists, mounted whole over the image's handler folder.
    mounts, volumes = mounts_of(c), volumes_of(pod)
    hm = mounts.get(HANDLERS_DIR)
    hv = volumes.get(hm["name"]) if hm else None
    cm_name = hv.get("configMap", {}).get("name") if hv else None
    cms = find(docs, "ConfigMap", cm_name) if cm_name else []
    r.check("handlers-mount", hm is not None and cm_name is not None and "subPath" not in hm,
            f"{HANDLERS_DIR} mounts ConfigMap {cm_name} as a folder (no subPath)")
    r.check("handlers-configmap", len(cms) == 1, f"ConfigMap {cm_name} is in the rendered output")
    if cms:
        keys = set(cms[0].get("data", {})) | set(cms[0].get("binaryData", {}))
        # Every local component the manifest names, canaries included, is in the ConfigMap;
        # `oci://` ones are pulled (k8s/oci/) and must be pinned by digest, so that every
        # replica serves the same bytes.
        named = manifest_components(cms[0].get("data", {}).get("wasmlet.toml", ""))
        local = {c for c in named or [] if not c.startswith("oci://")}
        pulled = set(named or []) - local
        r.check("handlers-files", bool(named) and "wasmlet.toml" in keys,
                f"ConfigMap keys {sorted(keys)} hold a wasmlet.toml naming components")
        r.check("handlers-components", named is not None and local <= keys,
                f"wasmlet.toml's local components {sorted(local)} (canaries included) all in the ConfigMap")
        r.check("handlers-pinned", all(re.search(r"@sha256:[0-9a-f]{64}$", c) for c in pulled),
                f"oci:// components pinned by digest: {sorted(pulled) or 'none'}")
    cache_dir = env.get("WASMLET_CACHE_DIR") or image_env.get("WASMLET_CACHE_DIR") or DEFAULT_CACHE_DIR
    # The cache is a folder the host creates inside the emptyDir (or is its mount point).
    cm = next((m for path, m in mounts.items()
               if cache_dir == path or cache_dir.startswith(path.rstrip("/") + "/")), None)
    r.check("cache-volume", cm is not None and "emptyDir" in volumes.get(cm["name"], {}),
            f"{cache_dir} is in an emptyDir (writable under a read-only root)")
    # Past the emptyDir's sizeLimit kubelet evicts the pod; the host prunes its cache to
    # WASMLET_CACHE_MAX_SIZE after each write, so the cap needs one handler's room below it.
    size_limit_text = (volumes.get(cm["name"], {}).get("emptyDir") or {}).get("sizeLimit") if cm else None
    cap_text = env.get("WASMLET_CACHE_MAX_SIZE") or image_env.get("WASMLET_CACHE_MAX_SIZE") or DEFAULT_CACHE_MAX_SIZE
    size_limit = parse_size(size_limit_text) if size_limit_text else None
    cap = parse_size(cap_text)
    r.check("cache-cap", size_limit is not None and 0 < cap and cap + HANDLER_CACHE_BYTES <= size_limit,
            f"WASMLET_CACHE_MAX_SIZE {cap_text} leaves {HANDLER_CACHE_BYTES // 1_000_000} MB for one new handler"
            f" under the cache emptyDir's sizeLimit {size_limit_text}")

    # The key-value data dir: a folder the host creates (private) inside a writable volume.
    data_dir = env.get("WASMLET_DATA_DIR") or image_env.get("WASMLET_DATA_DIR")
    if data_dir:
        dm = next((m for path, m in mounts.items() if data_dir.startswith(path.rstrip("/") + "/")), None)
        kind = volumes.get(dm["name"], {}) if dm else {}
        r.check("data-volume",
                dm is not None and not dm.get("readOnly") and ("emptyDir" in kind or "persistentVolumeClaim" in kind),
                f"WASMLET_DATA_DIR {data_dir} is a folder inside a writable emptyDir or PersistentVolumeClaim"
                f" ({dm['mountPath'] if dm else 'not mounted'})")

    # Security and resources.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    merged = {**psc, **csc}
    r.check("non-root", merged.get("runAsNonRoot") is True and merged.get("runAsUser", 0) != 0,
            f"runAsNonRoot {merged.get('runAsNonRoot')}, runAsUser {merged.get('runAsUser')}")
    r.check("read-only-root", csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    r.check("no-privilege-escalation", csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    r.check("capabilities", csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    r.check("seccomp", seccomp == "RuntimeDefault", f"seccompProfile {seccomp}")
    res = c.get("resources", {})
    r.check("resources", all(k in res.get(s, {}) for s in ("requests", "limits") for k in ("cpu", "memory")),
            f"requests {res.get('requests')} limits {res.get('limits')}")
    limit_text = res.get("limits", {}).get("memory")
    budget_text = env.get("WASMLET_MAX_TOTAL_MEMORY")
    limit = parse_size(limit_text) if limit_text else None
    budget = parse_size(budget_text) if budget_text else None
    r.check("memory-budget", limit is not None and budget is not None and budget < limit,
            f"WASMLET_MAX_TOTAL_MEMORY {budget_text} is under the memory limit {limit_text}")

    # Rollout: never below REPLICAS ready pods; spread over nodes.
    ru = spec.get("strategy", {}).get("rollingUpdate", {})
    r.check("rollout", ru.get("maxUnavailable") == 0 and ru.get("maxSurge") == 1,
            f"maxUnavailable {ru.get('maxUnavailable')}, maxSurge {ru.get('maxSurge')}")
    spread = [t for t in pod.get("topologySpreadConstraints", [])
              if t.get("topologyKey") == "kubernetes.io/hostname" and selects(t.get("labelSelector", {}), labels)]
    r.check("spread", len(spread) == 1, "topologySpreadConstraints over kubernetes.io/hostname select the pods")
    ann = spec["template"]["metadata"].get("annotations", {})
    admin = probe_ports[0]["containerPort"] if probe_ports and probe_ports[0] else None
    r.check("prometheus", ann.get("prometheus.io/scrape") == "true"
            and ann.get("prometheus.io/port") == str(admin) and ann.get("prometheus.io/path") == "/metrics",
            f"scrape annotations point at :{ann.get('prometheus.io/port')}{ann.get('prometheus.io/path')}")

    check_network_policy(r, docs, labels, ports, http, probe_ports[0] if probe_ports else None)
    check_egress_policy(r, docs, labels)
    check_admin_token(r, c, env, mounts, volumes)
    if cms:
        check_redis(r, docs, cms[0].get("data", {}).get("wasmlet.toml", ""), labels, mounts, volumes)
    if hpas:
        pdb_min = pdbs[0]["spec"].get("minAvailable") if pdbs else None
        check_hpa(r, hpas, c, floor, pdb_min)
    return r


def manifest_components(text: str) -> list[str] | None:
    """The component files a wasmlet.toml names, canaries included; None if it does not parse."""
    try:
        routes = tomllib.loads(text).get("route", [])
    except tomllib.TOMLDecodeError:
        return None
    named = []
    for route in routes:
        named.append(route.get("component"))
        if isinstance(route.get("canary"), dict):
            named.append(route["canary"].get("component"))
    return [n for n in named if isinstance(n, str)]


def redis_stores(text: str) -> dict[str, dict]:
    """The `type = "redis"` key-value stores a wasmlet.toml declares, by name."""
    try:
        stores = tomllib.loads(text).get("key_value_store", {})
    except tomllib.TOMLDecodeError:
        return {}
    return {n: s for n, s in stores.items() if isinstance(s, dict) and s.get("type") == "redis"}


def check_redis(r: Report, docs: list[dict], toml: str, labels: dict, mounts: dict, volumes: dict) -> None:
    """A Redis store in the manifest: its Service, Deployment, Secret and NetworkPolicies agree."""
    stores = redis_stores(toml)
    if not stores:
        return
    for name, store in stores.items():
        m = re.fullmatch(r"rediss?://(?:[^@/]*@)?([a-z0-9.-]+):(\d+)(?:/\d+)?", store.get("url", ""))
        host, port = (m.group(1).split(".")[0], int(m.group(2))) if m else (None, None)
        svcs = find(docs, "Service", host) if host else []
        svc_ports = [p for s in svcs for p in s["spec"].get("ports", []) if p.get("port") == port]
        r.check("redis-service", len(svcs) == 1 and len(svc_ports) == 1,
                f"store {name}: url {store.get('url')!r} names Service {host} port {port} "
                f"({len(svcs)} Service, {len(svc_ports)} port)")
        if not svc_ports:
            continue
        pods = [d for d in find(docs, "Deployment")
                if selects(svcs[0]["spec"].get("selector", {}), d["spec"]["template"]["metadata"].get("labels", {}))]
        r.check("redis-deployment", len(pods) == 1, f"Service {host} selects {len(pods)} Deployment")
        if len(pods) != 1:
            continue
        dep = pods[0]
        pod = dep["spec"]["template"]["spec"]
        redis_labels = dep["spec"]["template"]["metadata"].get("labels", {})
        c = pod["containers"][0]
        target = resolve_port(svc_ports[0].get("targetPort", port), c.get("ports", []))
        r.check("redis-service", target is not None, f"Service {host} targetPort → containerPort "
                f"{target['containerPort'] if target else None}")
        image = c.get("image", "")
        r.check("redis-image", bool(re.search(r"(@sha256:[0-9a-f]{64}|:\d+\.\d+\.\d+[^:/@]*)$", image)),
                f"image {image} pinned to an exact version or digest")
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        merged = {**psc, **csc}
        res = c.get("resources", {})
        r.check("redis-security", merged.get("runAsNonRoot") is True and merged.get("runAsUser", 0) != 0
                and csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False
                and csc.get("capabilities", {}).get("drop") == ["ALL"]
                and (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
                and all(k in res.get(s, {}) for s in ("requests", "limits") for k in ("cpu", "memory")),
                f"Redis non-root ({merged.get('runAsUser')}), read-only root, no privileges, resources set")
        # --requirepass $(VAR), VAR from a Secret key: the only place the password lives.
        args = c.get("command", []) + c.get("args", [])
        value = args[args.index("--requirepass") + 1] if "--requirepass" in args[:-1] else None
        var = re.fullmatch(r"\$\((\w+)\)", value or "")
        ref = next((e.get("valueFrom", {}).get("secretKeyRef") for e in c.get("env", [])
                    if var and e["name"] == var.group(1)), None)
        r.check("redis-password", bool(ref), f"Redis --requirepass {value!r} from Secret "
                f"{(ref or {}).get('name')} key {(ref or {}).get('key')}")
        # wasmlet reads the same key of the same Secret from a mounted file.
        path = (store.get("password") or {}).get("file", "")
        folder, _, file = path.rpartition("/")
        mount = mounts.get(folder)
        secret = (volumes.get(mount["name"], {}).get("secret") if mount else None) or {}
        items = {i.get("path"): i.get("key") for i in secret.get("items", [])}
        key = items.get(file, file if not items else None)
        r.check("redis-password-file", bool(ref) and secret.get("secretName") == ref.get("name")
                and key == ref.get("key") and not secret.get("optional", False),
                f"password file {path!r} is key {key!r} of Secret {secret.get('secretName')} "
                f"(Redis uses {(ref or {}).get('name')}/{(ref or {}).get('key')}), not optional")
        # Ingress to Redis: only wasmlet's pods, only the Redis port.
        policies = [p for p in find(docs, "NetworkPolicy") if selects(p["spec"].get("podSelector", {}), redis_labels)
                    and "Ingress" in p["spec"].get("policyTypes", [])]
        loose = []
        for p in policies:
            for rule in p["spec"].get("ingress", []):
                peers, ports = rule.get("from", []), rule.get("ports", [])
                if not peers or any("ipBlock" in q or "namespaceSelector" in q
                                    or not selects(q.get("podSelector", {}), labels) for q in peers):
                    loose.append(f"from {peers or 'anywhere'}")
                if not ports or any(resolve_port(q.get("port"), c.get("ports", [])) is not target for q in ports):
                    loose.append(f"ports {ports or 'all'}")
        r.check("redis-ingress", bool(policies) and not loose,
                f"{len(policies)} NetworkPolicy admits only wasmlet's pods to Redis: {loose or 'ok'}")
        # Egress from wasmlet: a rule to the Redis pods on the Redis port.
        egress = [rule for p in find(docs, "NetworkPolicy") if selects(p["spec"].get("podSelector", {}), labels)
                  and "Egress" in p["spec"].get("policyTypes", []) for rule in p["spec"].get("egress", [])]
        to_redis = [rule for rule in egress
                    if any(selects(q.get("podSelector", {}), redis_labels) and "namespaceSelector" not in q
                           for q in rule.get("to", []))
                    and any(q.get("port") in (target["containerPort"], target.get("name")) for q in rule.get("ports", []))]
        r.check("redis-egress", bool(to_redis), f"wasmlet's egress allows the Redis pods on port "
                f"{target['containerPort'] if target else None}: {len(to_redis)} rule")


def check_hpa(r: Report, hpas: list[dict], c: dict, floor: int, pdb_min) -> None:
    hpa = hpas[0]
    spec = hpa["spec"]
    ref = spec.get("scaleTargetRef", {})
    r.check("hpa-target", len(hpas) == 1 and hpa.get("apiVersion") == "autoscaling/v2"
            and ref.get("kind") == "Deployment" and ref.get("name") == NAME,
            f"one autoscaling/v2 HPA on Deployment {ref.get('name')}")
    r.check("hpa-range", spec.get("maxReplicas", 0) > floor == REPLICAS,
            f"minReplicas {floor} (want {REPLICAS}) < maxReplicas {spec.get('maxReplicas')}")
    cpu = [m["resource"]["target"] for m in spec.get("metrics", [])
           if m.get("type") == "Resource" and m.get("resource", {}).get("name") == "cpu"]
    target = cpu[0].get("averageUtilization") if cpu and cpu[0].get("type") == "Utilization" else None
    r.check("hpa-cpu", isinstance(target, int) and 0 < target < 100,
            f"CPU utilization target {target}% (0 < target < 100)")
    r.check("hpa-cpu-request", "cpu" in c.get("resources", {}).get("requests", {}),
            "the container requests CPU (utilization is relative to it)")
    # Scale-down is a voluntary disruption too: no more pods at a time than the PDB lets go.
    down = spec.get("behavior", {}).get("scaleDown", {})
    steps = [p.get("value") for p in down.get("policies", []) if p.get("type") == "Pods"]
    others = [p for p in down.get("policies", []) if p.get("type") != "Pods"]
    room = floor - pdb_min if isinstance(pdb_min, int) else 0
    r.check("hpa-scale-down", bool(steps) and not others and max(steps) <= room
            and down.get("selectPolicy", "Max") != "Disabled",
            f"scale-down removes at most {max(steps) if steps else None} pod(s) at a time, "
            f"PDB allows {room} (only Pods policies)")


def check_network_policy(r: Report, docs: list[dict], labels: dict, ports: list[dict],
                         http: dict | None, admin: dict | None) -> None:
    """The NetworkPolicy admits the public port from anywhere and the admin port from the
    scraper only. (Kubelet probes come from the node, which most CNIs do not filter.)"""
    policies = [p for p in find(docs, "NetworkPolicy") if selects(p["spec"].get("podSelector", {}), labels)
                and "Ingress" in p["spec"].get("policyTypes", [])]
    r.check("network-policy", len(policies) == 1,
            f"{len(policies)} NetworkPolicy with Ingress rules selects the pods {labels}")
    if len(policies) != 1:
        return
    rules = policies[0]["spec"].get("ingress", [])
    unnamed = [peer for rule in rules for peer in rule.get("from", []) if not names_namespace(peer)]
    r.check("network-policy-namespace", not unnamed,
            f"ingress peers pick namespaces by {NAMESPACE_NAME_LABEL}: {unnamed or 'ok'}")
    public, scraper, other = [], [], []
    for rule in rules:
        targets = [resolve_port(p.get("port"), ports) for p in rule.get("ports", [])]
        peers = rule.get("from", [])
        # No `ports`: every port; no `from`: every source.
        if not rule.get("ports") or None in targets:
            other.append(f"rule on ports {rule.get('ports')} (all ports, or one the pod lacks)")
            continue
        only_scraper = bool(peers) and all(
            p.get("podSelector", {}).get("matchLabels", {}).get(SCRAPER_LABEL[0]) == SCRAPER_LABEL[1]
            and "ipBlock" not in p for p in peers)
        for t in targets:
            if t is http and not peers:
                public.append(t)
            elif t is admin and only_scraper:
                scraper.append(t)
            else:
                other.append(f"port {t['containerPort']} from {peers or 'anywhere'}")
    r.check("network-policy-public", len(public) == 1,
            f"the public port {http['containerPort'] if http else None} is open to all "
            f"({len(public)} rule)")
    r.check("network-policy-admin", len(scraper) == 1 and not other,
            f"the admin port {admin['containerPort'] if admin else None} only from pods labelled "
            f"{SCRAPER_LABEL[0]}={SCRAPER_LABEL[1]}; nothing else admitted: {other or 'ok'}")


def names_namespace(peer: dict) -> bool:
    """Whether a NetworkPolicy peer's namespaces are picked by name: no namespaceSelector (the
    policy's own namespace), or one that matches `kubernetes.io/metadata.name`. `{}` (every
    namespace) or a selector on labels anyone with rights on a namespace can set do not."""
    if "namespaceSelector" not in peer:
        return True
    ns = peer["namespaceSelector"] or {}
    if ns.get("matchLabels", {}).get(NAMESPACE_NAME_LABEL):
        return True
    return any(e.get("key") == NAMESPACE_NAME_LABEL and e.get("operator") == "In" and e.get("values")
               for e in ns.get("matchExpressions", []))


def check_egress_policy(r: Report, docs: list[dict], labels: dict) -> None:
    """An egress NetworkPolicy selects the pods and allows DNS and named destinations only."""
    policies = [p for p in find(docs, "NetworkPolicy") if selects(p["spec"].get("podSelector", {}), labels)
                and "Egress" in p["spec"].get("policyTypes", [])]
    r.check("network-policy-egress", bool(policies),
            f"{len(policies)} NetworkPolicy with Egress rules selects the pods {labels}")
    if not policies:
        return
    rules = [rule for p in policies for rule in p["spec"].get("egress", [])]
    loose = []
    for rule in rules:
        peers = rule.get("to", [])
        # No `to`: every destination; no `ports`: every port.
        if not peers or not rule.get("ports"):
            loose.append(f"rule to {peers or 'anywhere'} on ports {rule.get('ports') or 'all'}")
        for peer in peers:
            cidr = peer.get("ipBlock", {}).get("cidr")
            if cidr in ALL_ADDRESSES or (cidr and cidr.endswith("/0")):
                loose.append(f"ipBlock {cidr}")
            if not names_namespace(peer):
                loose.append(f"namespaceSelector {peer.get('namespaceSelector')} without a name")
            if peer.get("namespaceSelector") is not None and not peer.get("podSelector", {}).get("matchLabels") \
                    and not peer.get("podSelector", {}).get("matchExpressions"):
                loose.append(f"every pod of namespace {peer['namespaceSelector']}")
    r.check("network-policy-egress", not loose, f"no allow-all egress: {loose or 'ok'}")
    dns = any(p.get("port") == 53 and p.get("protocol", "TCP") == "UDP"
              for rule in rules for p in rule.get("ports", []))
    r.check("network-policy-dns", dns, "egress allows DNS (port 53/UDP)")


def mounts_of(c: dict) -> dict:
    return {m["mountPath"]: m for m in c.get("volumeMounts", [])}


def volumes_of(pod: dict) -> dict:
    return {v["name"]: v for v in pod.get("volumes", [])}


def check_tls(r: Report, env: dict, mounts: dict, volumes: dict) -> None:
    """WASMLET_TLS_CERT and WASMLET_TLS_KEY are two keys of one Secret, mounted as a folder."""
    secrets = []
    for var in ("WASMLET_TLS_CERT", "WASMLET_TLS_KEY"):
        folder, _, name = (env.get(var) or "").rpartition("/")
        mount = mounts.get(folder)
        secret = volumes.get(mount["name"], {}).get("secret") if mount else None
        items = (secret or {}).get("items")
        ok = (secret is not None and not secret.get("optional", False) and "subPath" not in mount
              and mount.get("readOnly") is True
              and (items is None or any(i.get("path") == name for i in items)))
        r.check("tls-files", ok, f"{var} {env.get(var)} is {name!r} of Secret "
                f"{(secret or {}).get('secretName')} mounted read-only as a folder at {folder or None}")
        secrets.append((secret or {}).get("secretName"))
    r.check("tls-files", secrets[0] is not None and secrets[0] == secrets[1],
            f"certificate and key from one Secret: {secrets}")


def check_admin_token(r: Report, c: dict, env: dict, mounts: dict, volumes: dict) -> None:
    """WASMLET_ADMIN_TOKEN_FILE names a file in a mounted Secret that is not optional."""
    path = env.get("WASMLET_ADMIN_TOKEN_FILE")
    folder, _, name = (path or "").rpartition("/")
    mount = mounts.get(folder)
    secret = volumes.get(mount["name"], {}).get("secret") if mount else None
    items = (secret or {}).get("items")
    in_secret = secret is not None and (items is None or any(i.get("path") == name for i in items))
    r.check("admin-token", bool(path) and in_secret and not secret.get("optional", False)
            and "subPath" not in mount,
            f"WASMLET_ADMIN_TOKEN_FILE {path} is {name!r} of Secret "
            f"{(secret or {}).get('secretName')} mounted at {folder or None} (not optional)")


# Each mutation breaks one thing; the check named with it must then fail.
def _dep(docs):
    return find(docs, "Deployment", NAME)[0]


def _ctr(docs):
    return _dep(docs)["spec"]["template"]["spec"]["containers"][0]


def _svc(docs):
    return find(docs, "Service", NAME)[0]


def _netpol(docs):
    return find(docs, "NetworkPolicy", NAME)[0]["spec"]


EGRESS_POLICY = f"{NAME}-egress"


def _egress(docs):
    return find(docs, "NetworkPolicy", EGRESS_POLICY)[0]["spec"]["egress"]


MUTATIONS = [
    ("template label differs from the selector", "deployment-selector",
     lambda d: _dep(d)["spec"]["template"]["metadata"]["labels"].update(app="hello")),
    ("Service selects another app", "service-selector",
     lambda d: _svc(d)["spec"]["selector"].update(app="other")),
    ("PDB selects another app", "pdb-selector",
     lambda d: find(d, "PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"].update(app="x")),
    ("2 replicas", "replicas", lambda d: _dep(d)["spec"].update(replicas=2)),
    ("Service on port 8080", "service-port", lambda d: _svc(d)["spec"]["ports"][0].update(port=8080)),
    ("Service targetPort names no containerPort", "service-target-port",
     lambda d: _svc(d)["spec"]["ports"][0].update(targetPort="web")),
    ("Service targetPort is a wrong number", "service-target-port",
     lambda d: _svc(d)["spec"]["ports"][0].update(targetPort=8080)),
    ("readiness probe on a missing port name", "readinessProbe-port",
     lambda d: _ctr(d)["readinessProbe"]["httpGet"].update(port="metrics")),
    ("liveness probe on the public port", "livenessProbe-port",
     lambda d: _ctr(d)["livenessProbe"]["httpGet"].update(port="http")),
    ("grace period shorter than drain + preStop", "grace-period",
     lambda d: _dep(d)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=30)),
    ("grace period left at the default 30s", "grace-period",
     lambda d: _dep(d)["spec"]["template"]["spec"].pop("terminationGracePeriodSeconds")),
    ("drain timeout raised to 1m", "grace-period",
     lambda d: [e.update(value="1m") for e in _ctr(d)["env"] if e["name"] == "WASMLET_DRAIN_TIMEOUT"]),
    ("admin listen port differs from containerPort", "listen-port",
     lambda d: [e.update(value="0.0.0.0:9091") for e in _ctr(d)["env"] if e["name"] == "WASMLET_ADMIN_LISTEN"]),
    ("handlers mounted with subPath", "handlers-mount",
     lambda d: [m.update(subPath="wasmlet.toml") for m in _ctr(d)["volumeMounts"] if m["mountPath"] == HANDLERS_DIR]),
    ("ConfigMap name not rewritten to the generated one", "handlers-configmap",
     lambda d: [v["configMap"].update(name="nope") for v in _dep(d)["spec"]["template"]["spec"]["volumes"]
                if "configMap" in v]),
    ("writable root filesystem", "read-only-root",
     lambda d: _ctr(d)["securityContext"].update(readOnlyRootFilesystem=False)),
    ("runs as root", "non-root",
     lambda d: [x.update(runAsUser=0) for x in (_ctr(d)["securityContext"],
                                                 _dep(d)["spec"]["template"]["spec"]["securityContext"])]),
    ("handler ConfigMap without the component it names", "handlers-components",
     lambda d: find(d, "ConfigMap")[0].pop("binaryData", None)),
    ("a handler from a registry by tag, not digest", "handlers-pinned",
     lambda d: find(d, "ConfigMap")[0]["data"].update(
         {"wasmlet.toml": '[[route]]\npath = "/..."\ncomponent = "oci://r.example/h:latest"\n'})),
    ("no memory limit", "resources", lambda d: _ctr(d)["resources"]["limits"].pop("memory")),
    ("handlers' memory budget above the memory limit", "memory-budget",
     lambda d: [e.update(value="600MiB") for e in _ctr(d)["env"] if e["name"] == "WASMLET_MAX_TOTAL_MEMORY"]),
    ("no memory budget for handlers", "memory-budget",
     lambda d: _ctr(d).update(env=[e for e in _ctr(d)["env"] if e["name"] != "WASMLET_MAX_TOTAL_MEMORY"])),
    ("cache cap at the cache emptyDir's sizeLimit", "cache-cap",
     lambda d: [e.update(value="256MiB") for e in _ctr(d)["env"] if e["name"] == "WASMLET_CACHE_MAX_SIZE"]),
    ("cache cap turned off", "cache-cap",
     lambda d: [e.update(value="0") for e in _ctr(d)["env"] if e["name"] == "WASMLET_CACHE_MAX_SIZE"]),
    ("cache emptyDir without a sizeLimit", "cache-cap",
     lambda d: [v["emptyDir"].pop("sizeLimit", None) for v in _dep(d)["spec"]["template"]["spec"]["volumes"]
                if "emptyDir" in v]),
    ("key-value data dir not on a volume", "data-volume",
     lambda d: _ctr(d).update(volumeMounts=[m for m in _ctr(d)["volumeMounts"] if m["mountPath"] != "/var/lib/wasmlet"])),
    ("key-value data dir at the emptyDir's mount point", "data-volume",
     lambda d: [e.update(value="/var/lib/wasmlet") for e in _ctr(d)["env"] if e["name"] == "WASMLET_DATA_DIR"]),
    ("rollout may drop a replica", "rollout",
     lambda d: _dep(d)["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1)),
    ("PDB blocks every drain", "pdb-allows-drain",
     lambda d: find(d, "PodDisruptionBudget")[0]["spec"].update(minAvailable=3)),
    ("NetworkPolicy selects another app", "network-policy",
     lambda d: _netpol(d)["podSelector"]["matchLabels"].update(app="other")),
    ("NetworkPolicy without Ingress", "network-policy",
     lambda d: _netpol(d).update(policyTypes=["Egress"])),
    ("public rule names a port the pod lacks", "network-policy-public",
     lambda d: _netpol(d)["ingress"][0]["ports"][0].update(port="web")),
    ("admin port open to everyone", "network-policy-admin",
     lambda d: _netpol(d)["ingress"][1].pop("from")),
    ("admin port open to any pod", "network-policy-admin",
     lambda d: _netpol(d)["ingress"][1]["from"][0]["podSelector"].update(matchLabels={})),
    ("a rule admitting every port", "network-policy-admin",
     lambda d: _netpol(d)["ingress"].append({"from": [{"namespaceSelector": {}}]})),
    ("admin port from labelled pods in any namespace", "network-policy-namespace",
     lambda d: _netpol(d)["ingress"][1]["from"][0].update(namespaceSelector={})),
    ("admin port from namespaces by a label anyone may set", "network-policy-namespace",
     lambda d: _netpol(d)["ingress"][1]["from"][0].update(
         namespaceSelector={"matchLabels": {"team": "monitoring"}})),
    ("no egress policy", "network-policy-egress",
     lambda d: d.remove(find(d, "NetworkPolicy", EGRESS_POLICY)[0])),
    ("an egress rule to anywhere", "network-policy-egress",
     lambda d: _egress(d).append({"ports": [{"port": 443, "protocol": "TCP"}]})),
    ("an egress rule on every port", "network-policy-egress",
     lambda d: _egress(d).append({"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]})),
    ("egress to 0.0.0.0/0", "network-policy-egress",
     lambda d: _egress(d).append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                                  "ports": [{"port": 443, "protocol": "TCP"}]})),
    ("egress allowing everything", "network-policy-egress", lambda d: _egress(d).append({})),
    ("DNS to any namespace", "network-policy-egress",
     lambda d: _egress(d)[0]["to"][0].update(namespaceSelector={})),
    ("no DNS", "network-policy-dns",
     lambda d: [p.update(port=5353) for p in _egress(d)[0]["ports"]]),
    ("no admin token", "admin-token",
     lambda d: _ctr(d).update(env=[e for e in _ctr(d)["env"] if e["name"] != "WASMLET_ADMIN_TOKEN_FILE"])),
    ("the admin token's Secret optional", "admin-token",
     lambda d: [v["secret"].update(optional=True) for v in _dep(d)["spec"]["template"]["spec"]["volumes"]
                if v.get("secret", {}).get("secretName") == "hello-world-admin-token"]),
    ("the admin token's Secret not mounted", "admin-token",
     lambda d: _ctr(d).update(volumeMounts=[m for m in _ctr(d)["volumeMounts"]
                                            if m["mountPath"] != "/var/run/secrets/wasmlet-admin"])),
    ("the admin token file names no key of the Secret", "admin-token",
     lambda d: [e.update(value="/var/run/secrets/wasmlet-admin/tokn") for e in _ctr(d)["env"]
                if e["name"] == "WASMLET_ADMIN_TOKEN_FILE"]),
]


def _hpa(docs):
    return find(docs, "HorizontalPodAutoscaler")[0]["spec"]


def _handlers_toml(docs, text):
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    cm["data"]["wasmlet.toml"] = text


# Applied only to manifests with a HorizontalPodAutoscaler (k8s/autoscaling/).
HPA_MUTATIONS = [
    ("HPA on another Deployment", "hpa-target", lambda d: _hpa(d)["scaleTargetRef"].update(name="other")),
    ("HPA with minReplicas 2", "hpa-range", lambda d: _hpa(d).update(minReplicas=2)),
    ("HPA with maxReplicas 3", "hpa-range", lambda d: _hpa(d).update(maxReplicas=3)),
    ("Deployment keeps replicas next to the HPA", "replicas", lambda d: _dep(d)["spec"].update(replicas=3)),
    ("CPU target of 100%", "hpa-cpu",
     lambda d: _hpa(d)["metrics"][0]["resource"]["target"].update(averageUtilization=100)),
    ("no CPU request", "hpa-cpu-request", lambda d: _ctr(d)["resources"]["requests"].pop("cpu")),
    ("scale-down 2 pods at a time", "hpa-scale-down",
     lambda d: _hpa(d)["behavior"]["scaleDown"]["policies"][0].update(value=2)),
    ("scale-down by percent", "hpa-scale-down",
     lambda d: _hpa(d)["behavior"]["scaleDown"]["policies"].append(
         {"type": "Percent", "value": 50, "periodSeconds": 60})),
    ("PDB minAvailable 3 with minReplicas 3", "pdb-allows-drain",
     lambda d: find(d, "PodDisruptionBudget")[0]["spec"].update(minAvailable=3)),
]

def _redis(docs):
    return find(docs, "Deployment", "hello-world-redis")[0]["spec"]["template"]["spec"]


def _redis_policy(docs):
    return find(docs, "NetworkPolicy", "hello-world-redis")[0]["spec"]


# Applied only to manifests with a Redis Deployment (k8s/redis/).
REDIS_MUTATIONS = [
    ("Redis image by a floating tag", "redis-image",
     lambda d: _redis(d)["containers"][0].update(image="redis:7-alpine")),
    ("Redis image :latest", "redis-image", lambda d: _redis(d)["containers"][0].update(image="redis")),
    ("Redis as root", "redis-security",
     lambda d: [x.update(runAsUser=0) for x in (_redis(d)["securityContext"], _redis(d)["containers"][0]["securityContext"])]),
    ("Redis with a writable root filesystem", "redis-security",
     lambda d: _redis(d)["containers"][0]["securityContext"].update(readOnlyRootFilesystem=False)),
    ("Redis password as a literal", "redis-password",
     lambda d: _redis(d)["containers"][0].update(args=["redis-server", "--requirepass", "hunter2"])),
    ("wasmlet's password file from another Secret", "redis-password-file",
     lambda d: [v["secret"].update(secretName="other") for v in _dep(d)["spec"]["template"]["spec"]["volumes"]
                if v.get("secret", {}).get("secretName") == "hello-world-redis"]),
    ("wasmlet's password Secret optional", "redis-password-file",
     lambda d: [v["secret"].update(optional=True) for v in _dep(d)["spec"]["template"]["spec"]["volumes"]
                if v.get("secret", {}).get("secretName") == "hello-world-redis"]),
    ("Redis open to every pod", "redis-ingress",
     lambda d: _redis_policy(d)["ingress"][0]["from"][0].update(podSelector={})),
    ("Redis open to everyone", "redis-ingress", lambda d: _redis_policy(d)["ingress"][0].pop("from")),
    ("Redis open on every port", "redis-ingress", lambda d: _redis_policy(d)["ingress"][0].pop("ports")),
    ("no Redis ingress policy", "redis-ingress",
     lambda d: d.remove(find(d, "NetworkPolicy", "hello-world-redis")[0])),
    ("wasmlet may not reach Redis", "redis-egress",
     lambda d: find(d, "NetworkPolicy", EGRESS_POLICY)[0]["spec"].update(
         egress=[e for e in _egress(d) if not any("app" in q.get("podSelector", {}).get("matchLabels", {})
                                                  for q in e.get("to", []))])),
    ("store URL names no Service", "redis-service",
     lambda d: _handlers_toml(d, _handlers_text(d).replace("hello-world-redis:6379", "redis:6379"))),
]


def _tls_mount(docs):
    return next(m for m in _ctr(docs)["volumeMounts"] if m["name"] == "tls")


def _set_env(docs, name, value):
    for e in _ctr(docs)["env"]:
        if e["name"] == name:
            e["value"] = value


# Applied only to manifests serving TLS (k8s/tls/).
TLS_MUTATIONS = [
    ("TLS behind Service port 80", "service-port", lambda d: _svc(d)["spec"]["ports"][0].update(port=80)),
    ("h2c named on a TLS port", "service-app-protocol",
     lambda d: _svc(d)["spec"]["ports"][0].update(appProtocol="kubernetes.io/h2c")),
    ("the certificate mounted with subPath", "tls-files",
     lambda d: _tls_mount(d).update(subPath="tls.crt")),
    ("the TLS Secret optional", "tls-files",
     lambda d: [v["secret"].update(optional=True) for v in _dep(d)["spec"]["template"]["spec"]["volumes"]
                if v["name"] == "tls"]),
    ("the key outside the Secret", "tls-files", lambda d: _set_env(d, "WASMLET_TLS_KEY", "/tmp/tls.key")),
    ("TLS without a key", "tls-files",
     lambda d: _ctr(d).update(env=[e for e in _ctr(d)["env"] if e["name"] != "WASMLET_TLS_KEY"])),
]

# Applied only to manifests serving clear text.
CLEAR_MUTATIONS = [
    ("https named on a clear-text port", "service-app-protocol",
     lambda d: _svc(d)["spec"]["ports"][0].update(appProtocol="https")),
]


def _handlers_text(docs):
    return next(d for d in docs if d["kind"] == "ConfigMap")["data"]["wasmlet.toml"]


MANIFEST_MUTATIONS = [
    ("wasmlet.toml names a canary the ConfigMap lacks", "handlers-components",
     lambda d: _handlers_toml(d, '[[route]]\npath = "/..."\ncomponent = "hello.wasm"\n'
                                 'canary = { component = "missing.wasm", weight = 5 }\n')),
]


def self_test(docs: list[dict]) -> int:
    baseline = run_checks(copy.deepcopy(docs))
    if baseline.failures:
        print("self-test: the unmutated manifests already fail:", *baseline.failures, sep="\n  ")
        return 1
    bad = 0
    mutations = MUTATIONS + MANIFEST_MUTATIONS
    if find(docs, "Deployment", "hello-world-redis"):
        mutations = mutations + REDIS_MUTATIONS
    tls = any(e["name"] == "WASMLET_TLS_CERT" for e in _ctr(docs).get("env", []))
    mutations = mutations + (TLS_MUTATIONS if tls else CLEAR_MUTATIONS)
    if find(docs, "HorizontalPodAutoscaler"):
        # Without `replicas` the base's replica mutation has nothing to change.
        mutations = [m for m in mutations if m[1] != "replicas"] + HPA_MUTATIONS
    for what, check, mutate in mutations:
        mutated = copy.deepcopy(docs)
        mutate(mutated)
        failed = {f.split(":", 1)[0] for f in run_checks(mutated).failures}
        ok = check in failed
        bad += not ok
        print(f"{'PASS' if ok else 'FAIL'} negative: {what} → {check} fails"
              + ("" if ok else f" (failed instead: {sorted(failed) or 'nothing'})"))
    print(f"self-test: {len(mutations) - bad} passed, {bad} failed")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rendered", help="output of `kubectl kustomize k8s/`")
    ap.add_argument("--dockerfile", help="also check the Dockerfile's ENV listen ports")
    ap.add_argument("--self-test", action="store_true", help="mutate the manifests; every check must catch its mutation")
    args = ap.parse_args()
    with open(args.rendered, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    if args.self_test:
        return self_test(docs)
    report = run_checks(docs, args.dockerfile)
    for p in report.passes:
        print(f"ok   {p}")
    for f in report.failures:
        print(f"FAIL {f}")
    print(f"k8s-check: {len(report.passes)} passed, {len(report.failures)} failed")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
