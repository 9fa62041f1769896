"""The deploy/ recipes: what can be checked without a Docker engine or a cluster.

Every file parses; the systemd unit, Dockerfile, compose file and Kubernetes
manifests name the right ports, paths and hardening; and every config they
mount passes `edgeproxy check-config`. Cross-file facts (the --config path and
where the file is mounted, the cache dir and its volume, the uid, the token's
variable) are checked against each other so the recipes cannot drift apart.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from edgeproxy.admin import AdminSetupError, check_bind
from edgeproxy.cli import main
from edgeproxy.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "edgeproxy.service"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "kubernetes"

CACHE_DIR = "/var/cache/edgeproxy"
PUBLIC_PORT = 8080
ADMIN_PORT = 9090
TOKEN_ENV = "EDGEPROXY_ADMIN_TOKEN"


# -- small readers ------------------------------------------------------------


def read_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """systemd unit sections as ordered (key, value) lists: keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"continuation lines are not expected: {raw!r}"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"not a key=value line in a section: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(section: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in section if k == key]


def read_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        instruction, _, args = (buf + line).partition(" ")
        out.append((instruction.upper(), args.strip()))
        buf = ""
    assert not buf, "dangling continuation at the end of the Dockerfile"
    return out


def docker_args(args: str) -> list[str]:
    """An exec-form (JSON) or shell-form argument list."""
    return list(json.loads(args)) if args.startswith("[") else shlex.split(args)


def k8s_docs() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def k8s_one(kind: str) -> dict[str, Any]:
    found = [d for d in k8s_docs() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def k8s_container() -> dict[str, Any]:
    containers = k8s_one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of a containerPort."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    assert port in named, f"no container port named {port!r}"
    return int(named[port])


def config_flag(argv: list[str]) -> str:
    """The FILE of `serve --config FILE` in an argument list."""
    assert "serve" in argv, argv
    i = argv.index("--config")
    return argv[i + 1]


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def configmap_yaml() -> str:
    text: str = k8s_one("ConfigMap")["data"]["edge.yaml"]
    return text


def check_config(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Config:
    """Run `edgeproxy check-config` on the text exactly as shipped; exit 0 or fail."""
    path = tmp_path / "edge.yaml"
    path.write_text(text)
    rc = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert rc == 0, f"check-config rejected the shipped config:\n{err}"
    assert f"{path}: OK" in out
    return load_config(str(path))


# -- every file parses ----------------------------------------------------------

EXPECTED_FILES = [
    "systemd/edgeproxy.service",
    "systemd/edge.yaml",
    "container/Dockerfile",
    "container/Dockerfile.dockerignore",
    "container/edge.yaml",
    "compose.yaml",
    "compose/edge.yaml",
    "kubernetes/configmap.yaml",
    "kubernetes/deployment.yaml",
    "kubernetes/service.yaml",
    "kubernetes/kustomization.yaml",
]


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_recipe_file_exists(name: str) -> None:
    assert (DEPLOY / name).is_file()


@pytest.mark.parametrize(
    "path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_every_yaml_file_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


# -- the shipped configs pass check-config ---------------------------------------

# (id, the YAML text as mounted, admin host): in containers the admin listener binds
# every interface so probes reach it, which the admin allows only with a token.
SHIPPED_CONFIGS: list[tuple[str, Callable[[], str], str]] = [
    ("systemd", lambda: (DEPLOY / "systemd" / "edge.yaml").read_text(), "127.0.0.1"),
    ("container", lambda: (DEPLOY / "container" / "edge.yaml").read_text(), "0.0.0.0"),
    ("compose", lambda: (DEPLOY / "compose" / "edge.yaml").read_text(), "0.0.0.0"),
    ("kubernetes-configmap", configmap_yaml, "0.0.0.0"),
]


@pytest.mark.parametrize(
    ("text", "admin_host"),
    [pytest.param(get, host, id=name) for name, get, host in SHIPPED_CONFIGS],
)
def test_shipped_config_passes_check_config(
    text: Callable[[], str],
    admin_host: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = check_config(text(), tmp_path, capsys)
    assert cfg.listen.port == PUBLIC_PORT
    assert cfg.admin.listen.host == admin_host
    assert cfg.admin.listen.port == ADMIN_PORT
    assert cfg.admin.token_env == TOKEN_ENV
    assert cfg.admin.token_file is None  # the token comes from the environment
    assert cfg.cache.directory == CACHE_DIR
    assert cfg.origin is not None
    assert cfg.routes and all(r.origin in cfg.origins for r in cfg.routes)


@pytest.mark.parametrize(
    "text",
    [pytest.param(get, id=name) for name, get, host in SHIPPED_CONFIGS if host != "127.0.0.1"],
)
def test_container_configs_need_the_token_they_are_given(
    text: Callable[[], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Why every container recipe must deliver EDGEPROXY_ADMIN_TOKEN: without it the
    # admin refuses the non-loopback bind and the process never becomes healthy.
    cfg = check_config(text(), tmp_path, capsys)
    with pytest.raises(AdminSetupError):
        check_bind(cfg.admin, None)
    check_bind(cfg.admin, "a-token")


# -- systemd ----------------------------------------------------------------------


def test_systemd_unit_starts_and_reloads_edgeproxy() -> None:
    unit = read_unit(UNIT)
    service = unit["Service"]
    (start,) = unit_values(service, "ExecStart")
    argv = shlex.split(start)
    assert PurePosixPath(argv[0]).name == "edgeproxy" and argv[1] == "serve"
    config_path = config_flag(argv)
    # The config is validated before start, the very file serve reads.
    (pre,) = unit_values(service, "ExecStartPre")
    assert shlex.split(pre)[1:] == ["check-config", config_path]
    # `systemctl reload` = SIGHUP to the main process (config reload).
    (reload_,) = unit_values(service, "ExecReload")
    assert shlex.split(reload_)[-2:] == ["-HUP", "$MAINPID"]
    assert PurePosixPath(shlex.split(reload_)[0]).name == "kill"
    assert unit_values(service, "KillSignal") == ["SIGTERM"]  # drains, exits 0
    assert unit_values(unit["Install"], "WantedBy") == ["multi-user.target"]
    assert "network-online.target" in unit_values(unit["Unit"], "Wants")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("DynamicUser", "yes"),
        ("CacheDirectory", "edgeproxy"),  # -> /var/cache/edgeproxy, writable by the user
        ("CapabilityBoundingSet", ""),  # unprivileged ports need no capability
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallArchitectures", "native"),
    ],
)
def test_systemd_unit_hardening(key: str, value: str) -> None:
    assert unit_values(read_unit(UNIT)["Service"], key) == [value]


def test_systemd_cache_directory_is_the_configs_cache_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (name,) = unit_values(read_unit(UNIT)["Service"], "CacheDirectory")
    cfg = check_config((DEPLOY / "systemd" / "edge.yaml").read_text(), tmp_path, capsys)
    # ProtectSystem=strict leaves only CacheDirectory= writable.
    assert cfg.cache.directory == f"/var/cache/{name}" == CACHE_DIR


def _unit_with_local_binary(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's edgeproxy, so verify can check it."""
    binary = Path(sys.executable).parent / "edgeproxy"
    if not binary.exists():
        pytest.skip("no edgeproxy console script next to this interpreter")
    (start,) = unit_values(read_unit(UNIT)["Service"], "ExecStart")
    installed = shlex.split(start)[0]
    unit = tmp_path / "edgeproxy.service"
    unit.write_text(UNIT.read_text().replace(installed, str(binary)))
    return unit


def _systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("systemd-analyze is not installed")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _unit_with_local_binary(tmp_path)
    done = _systemd_analyze("verify", str(unit))
    assert done.returncode == 0, done.stderr
    assert "edgeproxy.service" not in done.stderr, done.stderr  # no warnings either


def test_systemd_analyze_security_exposure_is_low(tmp_path: Path) -> None:
    unit = _unit_with_local_binary(tmp_path)
    # Exposure is 0.0 (best) .. 10.0; below 2.0 systemd rates it "OK".
    done = _systemd_analyze("security", "--offline=true", "--threshold=20", str(unit))
    if "--offline" in done.stderr or "--threshold" in done.stderr:
        pytest.skip("systemd-analyze too old for offline security analysis")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr


# -- container image -----------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    return read_dockerfile(DOCKERFILE)


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (ins, _) in enumerate(steps) if ins == "FROM")
    return steps[last_from:]


def only(steps: list[tuple[str, str]], instruction: str) -> str:
    found = [args for ins, args in steps if ins == instruction]
    assert len(found) == 1, f"expected one {instruction}, found {found}"
    return found[0]


def image_argv() -> list[str]:
    steps = final_stage()
    return docker_args(only(steps, "ENTRYPOINT")) + docker_args(only(steps, "CMD"))


def image_uid() -> int:
    user = only(final_stage(), "USER").split(":")[0]
    assert user.isdigit(), "a numeric USER, so Kubernetes can check runAsNonRoot"
    return int(user)


def test_dockerfile_is_slim_python_311() -> None:
    froms = [args.split()[0] for ins, args in dockerfile() if ins == "FROM"]
    assert froms and all(f == "python:3.11-slim" for f in froms)


def test_dockerfile_runs_as_non_root() -> None:
    assert image_uid() != 0
    # The cache dir exists in the image, owned by that uid (a fresh volume inherits it).
    runs = " ".join(args for ins, args in final_stage() if ins == "RUN")
    assert f"-o {image_uid()}" in runs and CACHE_DIR in runs


def test_dockerfile_exposes_only_the_public_port() -> None:
    exposed = [p for ins, args in dockerfile() if ins == "EXPOSE" for p in args.split()]
    assert exposed == [str(PUBLIC_PORT)]  # 9090 stays unpublished, even with `-P`


def test_dockerfile_runs_edgeproxy_serve_with_the_baked_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = image_argv()
    assert argv[:2] == ["edgeproxy", "serve"]
    config_path = config_flag(argv)
    copies = [docker_args(args) for ins, args in final_stage() if ins == "COPY"]
    assert ["deploy/container/edge.yaml", config_path] in copies
    check_config((DEPLOY / "container" / "edge.yaml").read_text(), tmp_path, capsys)


def test_dockerfile_never_bakes_the_admin_token() -> None:
    for ins, args in dockerfile():
        if ins in ("ENV", "ARG"):
            assert TOKEN_ENV not in args


def test_dockerfile_copy_sources_exist_and_pass_the_dockerignore() -> None:
    # Build context = repo root; the Dockerfile's own .dockerignore excludes everything
    # else, so each COPY source must be re-included by a `!` pattern.
    ignore = (DEPLOY / "container" / "Dockerfile.dockerignore").read_text().splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore
    sources = [
        src
        for ins, args in dockerfile()
        if ins == "COPY" and not args.startswith("--from")
        for src in docker_args(args)[:-1]
    ]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert src.rstrip("/") in included, f"{src} is excluded from the build context"


def healthcheck_command() -> list[str]:
    args = only(final_stage(), "HEALTHCHECK")
    options, sep, command = args.partition("CMD ")
    assert sep and "--interval=" in options and "--timeout=" in options
    argv = docker_args(command)
    assert argv[:2] == ["python", "-c"]  # slim has no curl or wget
    return argv


def test_healthcheck_probes_healthz_on_the_admin_port() -> None:
    code = healthcheck_command()[2]
    assert f"http://127.0.0.1:{ADMIN_PORT}/healthz" in code
    compile(code, "<HEALTHCHECK>", "exec")


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server(request: pytest.FixtureRequest) -> Iterator[int]:
    handler = type("Handler", (_Health,), {"status": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval: shutdown() waits for the loop to notice.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(
    ("health_server", "healthy"),
    [pytest.param(200, True, id="200-healthy"), pytest.param(503, False, id="503-unhealthy")],
    indirect=["health_server"],
)
def test_healthcheck_exit_status_follows_healthz(health_server: int, healthy: bool) -> None:
    # The image's own command, pointed at a stand-in /healthz on a free port.
    code = healthcheck_command()[2].replace(f":{ADMIN_PORT}/", f":{health_server}/")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=30, check=False
    )
    assert (done.returncode == 0) is healthy, done.stderr


# -- compose -------------------------------------------------------------------------


def published_ports(service: dict[str, Any]) -> list[int]:
    """Container-side ports a service publishes on the host."""
    out: list[int] = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.append(int(p["target"]))
        else:
            out.append(int(str(p).split("/")[0].rsplit(":", 1)[-1]))
    return out


def test_compose_services() -> None:
    assert set(compose()["services"]) == {"origin", "edge", "redis"}


@pytest.mark.parametrize(
    ("service", "ports"),
    [("edge", [PUBLIC_PORT]), ("origin", []), ("redis", [])],
)
def test_compose_publishes_only_the_edge_public_port(service: str, ports: list[int]) -> None:
    assert published_ports(compose()["services"][service]) == ports
    assert "expose" not in compose()["services"][service]


def test_compose_edge_mounts_a_config_that_passes_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edge = compose()["services"]["edge"]
    config_path = PurePosixPath(config_flag(list(edge["command"])))
    mounts = [str(v).split(":") for v in edge["volumes"]]
    (host_dir,) = [m[0] for m in mounts if m[1] == str(config_path.parent)]
    shipped = (COMPOSE.parent / host_dir / config_path.name).resolve()
    assert shipped == (DEPLOY / "compose" / "edge.yaml")
    cfg = check_config(shipped.read_text(), tmp_path, capsys)
    # The cache lives on a named volume at the configured cache dir.
    (volume,) = [m[0] for m in mounts if m[1] == cfg.cache.directory]
    assert volume in compose()["volumes"]
    # The edge reaches the origin service by its compose name and port.
    assert cfg.origin is not None
    origin_argv = list(compose()["services"]["origin"]["command"])
    assert origin_argv[0] == "demo-origin"
    listen_port = origin_argv[origin_argv.index("--listen") + 1].rsplit(":", 1)[1]
    assert cfg.origin.url == f"http://origin:{listen_port}"


def test_compose_edge_token_comes_from_the_environment() -> None:
    token = compose()["services"]["edge"]["environment"][TOKEN_ENV]
    # `${VAR:?message}`: compose refuses to start without it; never a literal secret.
    assert token.startswith("${" + TOKEN_ENV + ":?")


def test_compose_builds_the_image_from_the_dockerfile() -> None:
    for name in ("edge", "origin"):
        service = compose()["services"][name]
        build = service["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        assert service["pull_policy"] == "build"  # never pulled from a registry


def test_compose_redis_is_ready_for_the_cluster_feature() -> None:
    redis = compose()["services"]["redis"]
    assert redis["image"].startswith("redis:")
    assert "redis-cli" in redis["healthcheck"]["test"]


# -- Kubernetes ----------------------------------------------------------------------


def test_k8s_deployment_ports() -> None:
    ports = {p["name"]: p["containerPort"] for p in k8s_container()["ports"]}
    assert ports == {"http": PUBLIC_PORT, "admin": ADMIN_PORT}


@pytest.mark.parametrize("probe", ["readinessProbe", "livenessProbe"])
def test_k8s_probes_hit_healthz_on_the_admin_port(probe: str) -> None:
    c = k8s_container()
    get = c[probe]["httpGet"]
    assert get["path"] == "/healthz"
    assert resolve_port(c, get["port"]) == ADMIN_PORT


def test_k8s_configmap_is_mounted_at_the_config_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c = k8s_container()
    pod = k8s_one("Deployment")["spec"]["template"]["spec"]
    config_path = PurePosixPath(config_flag(list(c["args"])))
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    assert "subPath" not in mount  # a subPath mount never sees ConfigMap updates
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    cm = k8s_one("ConfigMap")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    check_config(cm["data"][config_path.name], tmp_path, capsys)


def test_k8s_cache_volume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = k8s_container()
    pod = k8s_one("Deployment")["spec"]["template"]["spec"]
    cfg = check_config(configmap_yaml(), tmp_path, capsys)
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == cfg.cache.directory]
    assert not mount.get("readOnly", False)
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume
    # The pod's group owns the volume, so the image's non-root uid can write it.
    assert pod["securityContext"]["fsGroup"] == image_uid()


def test_k8s_admin_token_comes_from_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = check_config(configmap_yaml(), tmp_path, capsys)
    env = {e["name"]: e for e in k8s_container()["env"]}
    token = env[cfg.admin.token_env]
    assert "value" not in token
    ref = token["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    # No Secret with a real (or placeholder) token is shipped: the README creates it.
    assert not [d for d in k8s_docs() if d["kind"] == "Secret"]


def test_k8s_pod_runs_as_the_image_user() -> None:
    pod = k8s_one("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == image_uid()
    sc = k8s_container()["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The image's ENTRYPOINT is edgeproxy; the Deployment only sets its arguments.
    assert "command" not in k8s_container()
    assert k8s_container()["args"] == image_argv()[1:]


def test_k8s_service_exposes_only_the_public_port() -> None:
    svc = k8s_one("Service")
    c = k8s_container()
    targets = [resolve_port(c, p.get("targetPort", p["port"])) for p in svc["spec"]["ports"]]
    assert targets == [PUBLIC_PORT]
    assert [p["port"] for p in svc["spec"]["ports"]] == [PUBLIC_PORT]
    labels = k8s_one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()


def test_k8s_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == manifests


def test_k8s_kustomize_renders() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    # `kubectl kustomize` works offline: no cluster is contacted.
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(done.stdout) if d)
    assert kinds == ["ConfigMap", "Deployment", "Service"]
