"""What the Kubernetes schemas cannot check about k8s/: the rollout's timing, pinned images,
the pods' security settings, and the manifests' agreement with each other and with the code.

Usage: invariants.py DIR   (run by tests/k8s/validate.sh with target/venv-k8s's Python, which
has PyYAML). Prints every broken rule and exits 1, or prints a summary and exits 0.
"""

import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
# After the drain the server waits up to 5 s for the closed connections
# (gateway/src/server.rs), then leaves the registry and flushes its notes: 5 s more at least.
AFTER_DRAIN_SECONDS = 10

errors = []
checked = 0


def check(ok, what):
    global checked
    checked += 1
    if not ok:
        errors.append(what)
    return ok


def load(directory):
    docs = []
    files = sorted(
        p for p in Path(directory).iterdir() if p.suffix in (".yaml", ".yml", ".json")
    )
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs.append((path.name, doc))
    return docs


def name(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


def duration_seconds(text):
    """A humantime duration as the gateway reads it ("15s", "1m 30s", "500ms")."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*([a-z]+)", text)
    if not parts or re.sub(r"[\d\sa-z]", "", text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * units[u] for n, u in parts)


def cpu_cores(quantity):
    q = str(quantity)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def pod_spec(doc):
    return doc["spec"]["template"]["spec"]


def containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def image_is_pinned(image):
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    return ":" in last and last.rsplit(":", 1)[1] not in ("latest", "")


def exec_strings(container):
    """Every string of the container's command, args and exec probes and hooks."""
    out = list(container.get("command", [])) + list(container.get("args", []))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        out += container.get(probe, {}).get("exec", {}).get("command", [])
    for hook in container.get("lifecycle", {}).values():
        out += hook.get("exec", {}).get("command", [])
    return out


def check_workload(doc, configmaps):
    spec = pod_spec(doc)
    pod_sc = spec.get("securityContext", {})
    for c in containers(spec):
        where = f"{name(doc)} container {c['name']}"
        sc = c.get("securityContext", {})
        check(image_is_pinned(c["image"]), f"{where}: image {c['image']} is not pinned to a tag")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        check(non_root is True, f"{where}: runAsNonRoot is not true")
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        check(uid is None or uid != 0, f"{where}: runs as uid 0")
        check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation is not false")
        check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem is not true")
        check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}: capabilities do not drop ALL")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        check(seccomp.get("type") == "RuntimeDefault", f"{where}: seccompProfile is not RuntimeDefault")
        res = c.get("resources", {})
        check("requests" in res and "memory" in res.get("limits", {}),
              f"{where}: needs resource requests and a memory limit")
        # A script the container runs from a ConfigMap it mounts must be in that ConfigMap.
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for m in c.get("volumeMounts", []):
            cm = volumes.get(m["name"], {}).get("configMap")
            if not cm or "subPath" in m:
                continue
            for s in exec_strings(c):
                if s.startswith(m["mountPath"] + "/"):
                    key = s[len(m["mountPath"]) + 1:]
                    check(key in configmaps.get(cm["name"], {}),
                          f"{where}: runs {s}, which ConfigMap {cm['name']} does not hold")


def check_scripts(configmaps):
    """Every script a ConfigMap carries parses, with the shell its first line names."""
    for cm, data in configmaps.items():
        for key, text in data.items():
            if not key.endswith(".sh"):
                continue
            shell = "bash" if "bash" in text.split("\n", 1)[0] else "sh"
            with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
                f.write(text)
            try:
                r = subprocess.run([shell, "-n", f.name], capture_output=True, text=True)
            finally:
                os.unlink(f.name)
            check(r.returncode == 0, f"ConfigMap/{cm} {key}: {shell} -n: {r.stderr.strip()}")


def check_gateway(dep, docs):
    spec = pod_spec(dep)
    gw = next(c for c in spec["containers"] if "GATEWAY_LISTEN" in env_of(c))
    env = env_of(gw)
    where = f"{name(dep)}"

    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    check(gw["image"].endswith(f"/gateway:{version}"),
          f"{where}: image {gw['image']} is not the workspace's version {version}")

    # One runtime thread per CPU the pod may use.
    limits = gw.get("resources", {}).get("limits", {})
    workers = env.get("GATEWAY_WORKERS", {}).get("value")
    if check(workers is not None and "cpu" in limits, f"{where}: needs GATEWAY_WORKERS and a CPU limit"):
        check(float(workers) == cpu_cores(limits["cpu"]),
              f"{where}: GATEWAY_WORKERS={workers} but the CPU limit is {limits['cpu']}")

    # The shutdown fits in the grace period: preStop, then the drain, then leaving.
    pre_stop = gw.get("lifecycle", {}).get("preStop", {})
    sleep = pre_stop.get("sleep", {}).get("seconds")
    if sleep is None:
        cmd = pre_stop.get("exec", {}).get("command", [])
        sleep = int(cmd[1]) if len(cmd) == 2 and cmd[0].endswith("sleep") else None
    check(sleep is not None and sleep > 0, f"{where}: needs a preStop sleep")
    drain = duration_seconds(env.get("GATEWAY_DRAIN_WINDOW", {}).get("value", "5s"))
    grace = spec.get("terminationGracePeriodSeconds", 30)
    need = (sleep or 0) + drain + AFTER_DRAIN_SECONDS
    check(grace >= need and grace > (sleep or 0) + drain,
          f"{where}: terminationGracePeriodSeconds={grace} < preStop {sleep}s + drain {drain:g}s"
          f" + {AFTER_DRAIN_SECONDS}s after the drain")
    # The node's own deadline after SIGTERM: long enough for the drain, and reached before
    # the kubelet's SIGKILL.
    if "GATEWAY_SHUTDOWN_DEADLINE" in env:
        deadline = duration_seconds(env["GATEWAY_SHUTDOWN_DEADLINE"]["value"])
        check(deadline >= drain + 5,
              f"{where}: GATEWAY_SHUTDOWN_DEADLINE={deadline:g}s cuts the drain ({drain:g}s + 5s) short")
        check(grace >= (sleep or 0) + deadline + 5,
              f"{where}: terminationGracePeriodSeconds={grace} < preStop {sleep}s"
              f" + GATEWAY_SHUTDOWN_DEADLINE {deadline:g}s + 5s")

    check(gw.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
          f"{where}: the readiness probe must be /readyz (it fails while draining)")
    check(gw.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
          f"{where}: the liveness probe must be /healthz")
    check("startupProbe" in gw, f"{where}: needs a startup probe (a node waits for Redis first)")

    for secret in ("GATEWAY_JWT_SECRET", "GATEWAY_DATABASE_URL", "GATEWAY_SMTP_URL"):
        if secret in env:
            check("secretKeyRef" in env[secret].get("valueFrom", {}),
                  f"{where}: {secret} must come from a Secret")

    # Metrics: the listener, the port named metrics and the scrape annotation agree.
    listen = env.get("GATEWAY_METRICS_LISTEN", {}).get("value")
    if check(listen is not None, f"{where}: GATEWAY_METRICS_LISTEN is not set"):
        port = int(listen.rsplit(":", 1)[1])
        ports = {p.get("name"): p["containerPort"] for p in gw.get("ports", [])}
        check(ports.get("metrics") == port, f"{where}: no container port 'metrics' = {port}")
        ann = dep["spec"]["template"]["metadata"].get("annotations", {})
        check(ann.get("prometheus.io/port") == str(port), f"{where}: prometheus.io/port is not {port}")

    # The seed list names every pod of the Redis StatefulSet it points at.
    seeds = env.get("GATEWAY_REDIS_URL", {}).get("value", "")
    hosts = [re.sub(r"^rediss?://([^@/]*@)?", "", s.strip()).split(":")[0] for s in seeds.split(",") if s.strip()]
    for sts in (d for d in docs if d["kind"] == "StatefulSet"):
        prefix = sts["metadata"]["name"] + "-"
        mine = [h for h in hosts if h.startswith(prefix)]
        if not mine:
            continue
        want = [f"{prefix}{i}.{sts['spec']['serviceName']}" for i in range(sts["spec"].get("replicas", 1))]
        check(sorted(mine) == sorted(want),
              f"{where}: GATEWAY_REDIS_URL seeds {mine} are not the pods of {name(sts)}: {want}")

    # The autoscaler owns the replica count, scales down slowly, and its largest count of
    # pods fits PostgreSQL's connections.
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"
            and d["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]]
    if check(len(hpas) == 1, f"{where}: needs one HorizontalPodAutoscaler"):
        hpa = hpas[0]["spec"]
        check("replicas" not in dep["spec"], f"{where}: has replicas, which every apply would reset under the HPA")
        check(hpa.get("minReplicas", 1) >= 2, f"{name(hpas[0])}: minReplicas below 2")
        down = hpa.get("behavior", {}).get("scaleDown", {}).get("stabilizationWindowSeconds", 300)
        check(down >= 300, f"{name(hpas[0])}: scale-down stabilisation under 300 s churns sockets")
        pool = re.search(r"max_connections\((\d+)\)", (ROOT / "gateway/src/archive/postgres.rs").read_text())
        for pg in (d for d in docs if d["kind"] == "StatefulSet"):
            for c in pod_spec(pg)["containers"]:
                m = re.search(r"max_connections=(\d+)", " ".join(c.get("args", [])))
                if m and pool:
                    check(hpa["maxReplicas"] * int(pool.group(1)) < int(m.group(1)),
                          f"{name(hpas[0])}: maxReplicas {hpa['maxReplicas']} × {pool.group(1)} archive "
                          f"connections reach {name(pg)}'s max_connections={m.group(1)}")
    check(any(d["kind"] == "PodDisruptionBudget"
              and labels_match(d["spec"]["selector"].get("matchLabels"), dep["spec"]["template"]["metadata"]["labels"])
              for d in docs), f"{where}: no PodDisruptionBudget selects it")


def main(directory):
    docs_with_files = load(directory)
    docs = [d for _, d in docs_with_files]
    if not check(docs, f"{directory}: no manifests"):
        return report()
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    workloads = [d for d in docs if d["kind"] in WORKLOADS]
    pod_labels = [d["spec"]["template"]["metadata"].get("labels", {}) for d in workloads]

    for w in workloads:
        check_workload(w, configmaps)
    check_scripts(configmaps)

    gateways = [d for d in workloads if d["kind"] == "Deployment"
                and any("GATEWAY_LISTEN" in env_of(c) for c in pod_spec(d)["containers"])]
    if check(gateways, "no gateway Deployment (a container with GATEWAY_LISTEN)"):
        for g in gateways:
            check_gateway(g, docs)

    # Redis keeps what it acknowledged and never evicts the gateway's keys.
    for cm, data in configmaps.items():
        conf = data.get("redis.conf")
        if conf is not None:
            lines = {tuple(l.split()[:2]) for l in conf.splitlines() if l.strip() and not l.startswith("#")}
            check(("appendonly", "yes") in lines, f"ConfigMap/{cm}: redis.conf needs appendonly yes")
            check(("maxmemory-policy", "noeviction") in lines,
                  f"ConfigMap/{cm}: redis.conf needs maxmemory-policy noeviction")

    # Every selector selects something.
    for d in docs:
        sel = None
        if d["kind"] == "Service":
            sel = d["spec"].get("selector")
        elif d["kind"] in ("PodDisruptionBudget", "NetworkPolicy"):
            key = "selector" if d["kind"] == "PodDisruptionBudget" else "podSelector"
            sel = d["spec"][key].get("matchLabels")
        if sel:
            check(any(labels_match(sel, l) for l in pod_labels), f"{name(d)}: its selector {sel} matches no pod")
    return report()


def report():
    for e in errors:
        print(f"FAIL {e}")
    if errors:
        print(f"k8s invariants: {len(errors)} of {checked} checks failed")
        return 1
    print(f"k8s invariants: {checked} checks passed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ROOT / "k8s"))
    except (KeyError, TypeError, ValueError, StopIteration, AttributeError) as e:
        # A manifest of an unexpected shape (the schema check says which).
        print(f"FAIL the invariants could not be checked: {type(e).__name__}: {e}")
        sys.exit(1)
