"""The Helm chart (helm/tollway) through a real helm binary (.tools/helm, `make tools`):
`helm lint` and `helm template` for the default values and the production example, the
rendered objects checked field by field, the refusals (replicas without Redis and the like),
and the rendered gateway.yaml run by a real gateway, on a real Redis started with the bundled
subchart's own arguments."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from tests.conftest import Stack, free_port

from tollway.config import load_config_text

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "tollway"
PRODUCTION = CHART / "values-production.yaml"
HELM = ROOT / ".tools" / "helm"
RELEASE, NAMESPACE = "tw", "gateways"
FULLNAME = f"{RELEASE}-tollway"
CONFIG_PATH = "/etc/tollway/gateway.yaml"
# Every ${VAR} the rendered config names without a default must reach the pod's env.
REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    if not os.access(HELM, os.X_OK):
        pytest.fail(f"{HELM} is missing: `make tools` (scripts/install-helm.sh) installs it")
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/tollway-helm/cache",
           "HELM_CONFIG_HOME": "/tmp/tollway-helm/config",
           "HELM_DATA_HOME": "/tmp/tollway-helm/data"}
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT)


def render(*args: str) -> list[dict[str, Any]]:
    r = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def refused(*args: str) -> str:
    r = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert r.returncode != 0, "helm template should have failed"
    return r.stderr


def one(docs: list[dict[str, Any]], kind: str, name: str = FULLNAME) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def container(deploy: dict[str, Any], name: str = "tollway") -> dict[str, Any]:
    return next(c for c in deploy["spec"]["template"]["spec"]["containers"]
                if c["name"] == name)


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def gateway_yaml(docs: list[dict[str, Any]]) -> str:
    return str(one(docs, "ConfigMap")["data"]["gateway.yaml"])


@pytest.fixture(scope="module")
def default() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render("-f", str(PRODUCTION))


# --- helm lint -----------------------------------------------------------------------------------

@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["default", "production"])
def test_helm_lint_passes(values: Path | None) -> None:
    r = helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in r.stdout
    assert "[ERROR]" not in r.stdout and "[WARNING]" not in r.stdout


def test_chart_deploys_this_version_of_tollway() -> None:
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version
    assert chart["apiVersion"] == "v2"
    assert [d["name"] for d in chart["dependencies"]] == ["redis"]
    assert chart["dependencies"][0]["condition"] == "redis.enabled"
    assert (CHART / "charts" / "redis" / "Chart.yaml").is_file()  # bundled: no repository


# --- default values ------------------------------------------------------------------------

def test_default_renders_a_single_pod_gateway(default: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in default)
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "PodDisruptionBudget", "Service",
                     "Service", "ServiceAccount"]  # the public one and the admin one
    assert one(default, "Deployment")["spec"]["replicas"] == 1
    pdb = one(default, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1  # never blocks a drain of the only pod
    assert not any(d["metadata"]["name"].endswith("-redis") for d in default)


def test_deployment_probes_security_and_resources(default: list[dict[str, Any]]) -> None:
    deploy = one(default, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    c = container(deploy)
    assert c["ports"] == [{"name": "http", "containerPort": 4100, "protocol": "TCP"},
                          {"name": "admin", "containerPort": 4101, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False
    assert set(c["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in c["resources"]["limits"]
    # Graceful drain: the grace period covers the preStop pause and the drain timeout.
    drain = yaml.safe_load(gateway_yaml(default))["server"]["drain_timeout_s"]
    pause = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] >= drain + pause
    # A read-only root: writable scratch space is mounted.
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert {"/tmp", "/var/lib/tollway"} <= set(mounts)


def test_config_is_mounted_at_the_documented_path(default: list[dict[str, Any]]) -> None:
    deploy = one(default, "Deployment")
    c = container(deploy)
    assert c["image"] == "tollway:0.1.0"
    assert c["args"] == ["serve", "-c", CONFIG_PATH]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert mount == {"name": "config", "mountPath": "/etc/tollway", "readOnly": True}
    assert "subPath" not in mount  # a directory mount: ConfigMap edits reach the file
    volume = next(v for v in deploy["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "config")
    assert volume["configMap"]["name"] == FULLNAME
    assert "gateway.yaml" in one(default, "ConfigMap")["data"]
    # The pods roll when the rendered config changes.
    checksum = deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    other = one(render("--set", "gateway.server.log_level=debug"), "Deployment")
    assert other["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != checksum


def test_service_selects_the_pods_on_4100(default: list[dict[str, Any]]) -> None:
    svc = one(default, "Service")
    deploy = one(default, "Deployment")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 4100, "targetPort": "http",
                                     "protocol": "TCP"}]
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert one(default, "ServiceAccount")["metadata"]["name"] == \
        deploy["spec"]["template"]["spec"]["serviceAccountName"]


def test_admin_listener_has_its_own_cluster_ip_service(default: list[dict[str, Any]]) -> None:
    admin = one(default, "Service", f"{FULLNAME}-admin")
    assert admin["spec"]["type"] == "ClusterIP"
    assert admin["spec"]["ports"] == [{"name": "admin", "port": 4101, "targetPort": "admin",
                                       "protocol": "TCP"}]
    pod_labels = one(default, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert admin["spec"]["selector"].items() <= pod_labels.items()
    # the public Service never reaches the admin port, whatever its type
    public = one(render("--set", "service.type=LoadBalancer"), "Service")
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"]
    assert one(render("--set", "service.type=LoadBalancer"), "Service",
               f"{FULLNAME}-admin")["spec"]["type"] == "ClusterIP"
    server = yaml.safe_load(gateway_yaml(default))["server"]
    assert server["admin"] == {"enabled": True, "host": "0.0.0.0", "port": 4101}
    assert server["metrics_on_main"] is False
    assert "adminPort must differ" in refused("--set", "adminPort=4100")


def test_default_config_is_valid_and_in_memory(default: list[dict[str, Any]]) -> None:
    text = gateway_yaml(default)
    cfg = load_config_text(text, "configmap:gateway.yaml", {})
    assert (cfg.server.host, cfg.server.port) == ("0.0.0.0", 4100)
    assert cfg.state.backend == "memory"
    assert cfg.retries.on == ["connect", "timeout", "429", "5xx"]  # `on` survived Helm's YAML
    assert not REQUIRED_VAR.findall(text)  # runs with no Secret at all
    env = env_of(container(one(default, "Deployment")))
    assert "TOLLWAY_REDIS_URL" not in env and "OPENAI_API_KEY" not in env


def test_default_config_serves_requests(default: list[dict[str, Any]],
                                        make_stack: Callable[..., Stack]) -> None:
    """The rendered gateway.yaml in a real gateway: ready, and (no provider key in the pod)
    the demo provider answers an OpenAI SDK call."""
    s = make_stack(config_text=gateway_yaml(default))
    assert httpx.get(s.url + "/readyz").json() == {"status": "ready", "state": "memory"}
    client = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-anything", max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
    assert "demo" in (answer.choices[0].message.content or "")
    # /metrics and the admin API on the admin listener only
    assert httpx.get(s.url + "/metrics").status_code == 404
    assert httpx.get(s.admin_url + "/metrics").status_code == 200
    assert httpx.get(s.url + "/admin/spend").status_code == 404


def test_dashboard_configmap_for_the_grafana_sidecar(default: list[dict[str, Any]]) -> None:
    cm = one(default, "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == NAMESPACE
    shipped = (ROOT / "deploy" / "grafana" / "tollway-dashboard.json").read_text()
    assert json.loads(cm["data"]["tollway-dashboard.json"]) == json.loads(shipped)
    off = render("--set", "grafanaDashboard.enabled=false")
    assert not any(d["metadata"]["name"] == f"{FULLNAME}-dashboard" for d in off)
    moved = render("--set", "grafanaDashboard.namespace=monitoring")
    assert one(moved, "ConfigMap", f"{FULLNAME}-dashboard")["metadata"]["namespace"] == \
        "monitoring"


# --- production example ----------------------------------------------------------------------

def test_production_objects(production: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in production)
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "Service", "Service", "ServiceAccount",
                     "ServiceMonitor"]
    deploy = one(production, "Deployment")
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert "replicas" not in deploy["spec"]  # the autoscaler owns it
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = one(production, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": FULLNAME}
    assert hpa["minReplicas"] >= 3 and hpa["maxReplicas"] > hpa["minReplicas"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    pdb = one(production, "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == selector
    assert 0 < pdb["minAvailable"] < hpa["minReplicas"]
    sm = one(production, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    # /metrics is scraped on the admin Service's port, and the public Service is not selected
    assert sm["spec"]["selector"]["matchLabels"].items() <= \
        one(production, "Service", f"{FULLNAME}-admin")["metadata"]["labels"].items()
    assert not sm["spec"]["selector"]["matchLabels"].items() <= \
        one(production, "Service")["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["endpoints"][0]["port"] == "admin"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spread = deploy["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"] == selector
    c = container(deploy)
    assert c["resources"]["requests"]["cpu"] == "1"
    assert not any(d["metadata"]["name"].endswith("-redis") for d in production)


def test_production_secrets_come_from_existing_secrets(
        production: list[dict[str, Any]]) -> None:
    env = env_of(container(one(production, "Deployment")))
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "TOLLWAY_ADMIN_KEY"):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "tollway-provider-keys", "key": var, "optional": False}
    assert env["TOLLWAY_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "tollway-redis", "key": "REDIS_URL"}
    assert not any(d["kind"] == "Secret" for d in production)  # the chart creates none
    text = gateway_yaml(production)
    assert "sk-" not in text  # keys by reference or by digest only


def test_production_config_shares_state_in_redis(production: list[dict[str, Any]]) -> None:
    text = gateway_yaml(production)
    env = env_of(container(one(production, "Deployment")))
    needed = set(REQUIRED_VAR.findall(text))
    assert needed == {"TOLLWAY_REDIS_URL"}
    assert needed <= set(env)
    values = {"TOLLWAY_REDIS_URL": "rediss://:pw@redis.example:6380/0",
              "OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "TOLLWAY_ADMIN_KEY": "x"}
    cfg = load_config_text(text, "configmap:gateway.yaml", values)
    assert cfg.state.backend == "redis"
    assert cfg.state.redis.url == values["TOLLWAY_REDIS_URL"]
    assert cfg.identity.unknown_keys == "reject"
    assert not any(p.demo_if_no_key for p in cfg.providers.values())
    assert cfg.cache.exact.enabled


# --- the bundled Redis -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def with_redis() -> list[dict[str, Any]]:
    return render("--set", "replicaCount=2", "--set", "redis.enabled=true")


def test_bundled_redis_objects_and_url(with_redis: list[dict[str, Any]]) -> None:
    deploy = one(with_redis, "Deployment")
    assert deploy["spec"]["replicas"] == 2
    env = env_of(container(deploy))
    url = env["TOLLWAY_REDIS_URL"]["value"]
    svc = one(with_redis, "Service", f"{RELEASE}-redis")
    port = svc["spec"]["ports"][0]["port"]
    assert url == f"redis://:$(REDIS_PASSWORD)@{RELEASE}-redis:{port}/0"
    # the bundled Redis has a password, generated into a Secret both pods read
    secret = one(with_redis, "Secret", f"{RELEASE}-redis")
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert len(password) == 32 and password.isalnum()
    ref = {"name": f"{RELEASE}-redis", "key": "password"}
    names = [e["name"] for e in container(deploy)["env"]]
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref
    assert names.index("REDIS_PASSWORD") < names.index("TOLLWAY_REDIS_URL")  # $(...) order
    redis = one(with_redis, "Deployment", f"{RELEASE}-redis")
    assert redis["spec"]["replicas"] == 1
    assert svc["spec"]["selector"].items() <= \
        redis["spec"]["template"]["metadata"]["labels"].items()
    # tollway's Service must not select Redis, nor Redis's tollway.
    tollway_svc = one(with_redis, "Service")
    assert not tollway_svc["spec"]["selector"].items() <= \
        redis["spec"]["template"]["metadata"]["labels"].items()
    pod = redis["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container(redis, "redis")["securityContext"]["readOnlyRootFilesystem"] is True
    redis_env = env_of(container(redis, "redis"))
    assert redis_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == ref
    args = container(redis, "redis")["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    cfg = load_config_text(gateway_yaml(with_redis), "cm", {"TOLLWAY_REDIS_URL": url})
    assert cfg.state.backend == "redis" and cfg.state.redis.url == url
    persisted = render("--set", "redis.enabled=true", "--set", "redis.persistence.enabled=true")
    pvc = one(persisted, "PersistentVolumeClaim", f"{RELEASE}-redis")
    volume = one(persisted, "Deployment", f"{RELEASE}-redis")["spec"]["template"]["spec"][
        "volumes"][0]
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


@pytest.fixture
def chart_redis(with_redis: list[dict[str, Any]], tmp_path: Path) -> Iterator[str]:
    """A real redis-server started with the arguments the subchart gives its container (the
    port changed to a free one), as a URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; `make test` installs it")
    args = list(container(one(with_redis, "Deployment", f"{RELEASE}-redis"), "redis")["args"])
    assert args[0] == "redis-server"
    port = free_port()
    args[args.index("--port") + 1] = str(port)
    password = "chart-test-password-0123456789ab"
    args[args.index("--requirepass") + 1] = password  # what $(REDIS_PASSWORD) becomes
    proc = subprocess.Popen([binary, *args[1:], "--bind", "127.0.0.1", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5,
                         password=password)
    deadline = time.monotonic() + 10
    try:
        while True:  # until it answers PING (or has died): no fixed wait
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        try:
            redis.Redis(port=port, socket_timeout=0.5).ping()
            raise AssertionError("the chart's Redis answered without its password")
        except redis.AuthenticationError:
            pass
        yield f"redis://:{password}@127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def test_bundled_redis_config_serves_requests(with_redis: list[dict[str, Any]],
                                              chart_redis: str,
                                              make_stack: Callable[..., Stack]) -> None:
    """Two gateways on the chart's rendered config share the chart's Redis: what one meters
    the other sees."""
    text = gateway_yaml(with_redis).replace("${TOLLWAY_REDIS_URL}", chart_redis).replace(
        "${TOLLWAY_ADMIN_KEY:-}", "admin-secret")  # the Secret's key (the test stack's)
    text += "agents:\n  bot: {team: ops, keys: [sk-tw-bot]}\n"
    a, b = make_stack(config_text=text), make_stack(config_text=text)
    for s in (a, b):
        assert httpx.get(s.url + "/readyz").json() == {"status": "ready", "state": "redis"}
    client = openai.OpenAI(base_url=a.url + "/v1", api_key="sk-tw-bot", max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini",
                                   messages=[{"role": "user", "content": "hello"}])

    def spend_seen_by_b() -> float:
        rows = b.admin.get("/admin/spend", params={"by": "agent"}).json()["rows"]
        return sum(r.get("requests", 0) for r in rows if r["key"] == "bot")
    deadline = time.monotonic() + 10
    while spend_seen_by_b() < 1:  # spend is written just after the answer went out
        assert time.monotonic() < deadline, "the other replica never saw the request"
        time.sleep(0.01)


# --- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--set", "replicaCount=2"],
    ["--set", "autoscaling.enabled=true"],
    ["--set", "autoscaling.enabled=true", "--set", "autoscaling.minReplicas=1",
     "--set", "replicaCount=1"],
], ids=["replicas", "autoscaling", "autoscaling-from-one"])
def test_more_than_one_pod_needs_redis(args: list[str]) -> None:
    err = refused(*args)
    assert "need Redis for shared state" in err
    assert "redis.enabled=true" in err and "externalRedis.url" in err


@pytest.mark.parametrize("args", [
    ["--set", "redis.enabled=true"],
    ["--set", "externalRedis.url=redis://redis.internal:6379/0"],
    ["--set", "externalRedis.existingSecret=redis-url"],
    ["--set", "gateway.state.backend=redis",
     "--set", "gateway.state.redis.url=redis://mine:6379/0"],
], ids=["bundled", "external-url", "external-secret", "own-config"])
def test_more_than_one_pod_with_redis_renders(args: list[str]) -> None:
    docs = render("--set", "replicaCount=3", *args)
    deploy = one(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    cfg = load_config_text(gateway_yaml(docs), "cm", {"TOLLWAY_REDIS_URL": "redis://r:1/0"})
    assert cfg.state.backend == "redis"
    if args[1].startswith("externalRedis.url"):
        env = env_of(container(deploy))
        assert env["TOLLWAY_REDIS_URL"]["value"] == "redis://redis.internal:6379/0"


def test_other_refusals(tmp_path: Path) -> None:
    assert "choose one Redis" in refused(
        "--set", "redis.enabled=true", "--set", "externalRedis.url=redis://x:6379/0")
    assert "minReplicas is above" in refused(
        "--set", "redis.enabled=true", "--set", "autoscaling.enabled=true",
        "--set", "autoscaling.minReplicas=5", "--set", "autoscaling.maxReplicas=3")
    bare_on = tmp_path / "on.yaml"
    bare_on.write_text("gateway:\n  retries:\n    on: [connect]\n")  # YAML 1.1: on is true
    assert 'quote it: "on"' in refused("-f", str(bare_on))
    # values.schema.json
    assert "replicaCount" in refused("--set", "replicaCount=0")
    assert "externalRedis/url" in refused("--set", "externalRedis.url=http://redis:6379")
    assert "grafana_dashboard" in refused("--set", "grafanaDashboard.labels.grafana_dashboard=1")


def test_the_chart_copy_of_the_dashboard_is_the_repos() -> None:
    shipped = ROOT / "deploy" / "grafana" / "tollway-dashboard.json"
    chart_copy = CHART / "dashboards" / "tollway-dashboard.json"
    assert hashlib.sha256(chart_copy.read_bytes()).hexdigest() == \
        hashlib.sha256(shipped.read_bytes()).hexdigest(), \
        "copy deploy/grafana/tollway-dashboard.json to helm/tollway/dashboards/"


# --- exposure, network policies, alerts ---------------------------------------------------------

def test_ingress_and_httproute_reach_the_public_port_only() -> None:
    docs = render("--set", "ingress.enabled=true", "--set", "ingress.className=nginx",
                  "--set", "httpRoute.enabled=true", "--set", "httpRoute.parentRefs[0].name=gw",
                  "--set", "httpRoute.hostnames[0]=tollway.example.com")
    ingress = one(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    backends = [p["backend"]["service"] for r in ingress["spec"]["rules"]
                for p in r["http"]["paths"]]
    assert backends == [{"name": FULLNAME, "port": {"name": "http"}}]
    route = one(docs, "HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"name": "gw"}]
    refs = [b for r in route["spec"]["rules"] for b in r["backendRefs"]]
    assert refs == [{"name": FULLNAME, "port": one(docs, "Service")["spec"]["ports"][0]["port"]}]
    admin = one(docs, "Service", f"{FULLNAME}-admin")
    assert admin["spec"]["type"] == "ClusterIP"
    public_ports = {p["targetPort"] for p in one(docs, "Service")["spec"]["ports"]}
    assert public_ports == {"http"}  # the admin listener is never behind the public Service
    assert not any(d["kind"] in ("Ingress", "HTTPRoute") for d in render())  # off by default
    assert "parentRefs" in refused("--set", "httpRoute.enabled=true")


def test_network_policies_fence_the_admin_port_and_redis() -> None:
    docs = render("--set", "networkPolicy.enabled=true", "--set", "redis.enabled=true",
                  "--set", "networkPolicy.adminFrom[0].namespaceSelector.matchLabels.team=obs")
    policy = one(docs, "NetworkPolicy")
    rules = policy["spec"]["ingress"]
    http = next(r for r in rules if r["ports"][0]["port"] == "http")
    admin = next(r for r in rules if r["ports"][0]["port"] == "admin")
    assert "from" not in http  # the public port: anyone
    assert admin["from"] == [{"namespaceSelector": {"matchLabels": {"team": "obs"}}}]
    closed = one(render("--set", "networkPolicy.enabled=true"), "NetworkPolicy")
    assert [r["ports"][0]["port"] for r in closed["spec"]["ingress"]] == ["http"]  # admin: none
    redis = one(docs, "NetworkPolicy", f"{RELEASE}-redis")
    (only,) = redis["spec"]["ingress"]
    assert only["from"][0]["podSelector"]["matchLabels"] == \
        policy["spec"]["podSelector"]["matchLabels"]


def promtool(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed; `make test` installs it (Debian: prometheus)")
    return subprocess.run([binary, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)


def test_alert_rules_pass_promtool_and_ship_in_the_chart(tmp_path: Path) -> None:
    plain = ROOT / "deploy" / "prometheus" / "tollway-alerts.yaml"
    assert (CHART / "alerts" / "tollway-alerts.yaml").read_text() == plain.read_text()
    checked = promtool(plain)
    assert checked.returncode == 0 and "SUCCESS: 6 rules found" in checked.stdout, \
        checked.stdout + checked.stderr
    rule = one(render("--set", "prometheusRule.enabled=true",
                      "--set", "prometheusRule.labels.release=kps"), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    assert promtool(rendered).returncode == 0
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {"TollwayBudgetNearlyExhausted", "TollwayLoopsHalted", "TollwayBreakerOpen",
                      "TollwaySharedStateErrors", "TollwayFailureRatioHigh",
                      "TollwayOverheadP99High"}
    assert not any(d["kind"] == "PrometheusRule" for d in render())
