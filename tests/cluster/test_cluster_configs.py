"""The cluster files in cluster/: they parse, Ray and KubeRay would accept their shape, they
say how to use them, they start the real job, and no secret is written in them."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from ray_jobs.config import load_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
LAUNCHER_CONFIGS = ("aws.yaml", "gcp.yaml")
ENTRY_MODULE = "ray_jobs.build_dataset"

#: Literal secrets that must never be committed: OpenAI keys, AWS access keys, private keys.
SECRET_PATTERNS = (
    re.compile(r"sk-[A-Za-z0-9_-]{16,}"),
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)(api[_-]?key|secret|password|token)\s*[=:]\s*['\"]?[A-Za-z0-9+/_-]{20,}"),
)
#: Keys and variable names that hold secrets.
SECRET_KEY = re.compile(r"(?i)^(\w*_)?(api_?key|password|secret|secret_access_key|token|auth_token)$")
SECRET_VAR = re.compile(r"(?i)\b(\w*(KEY|TOKEN|SECRET|PASSWORD)\w*)=([^\s;]*)")


def load_yaml_docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d is not None]


def inline_secrets(node: Any, path: str = ""):
    """Places in a parsed YAML document where a secret is given as a literal value: a
    secret-named key with a string value, a Kubernetes env entry with ``value`` instead of
    ``valueFrom``, or a shell assignment of a literal to a secret-named variable."""
    if isinstance(node, dict):
        if isinstance(node.get("name"), str) and "value" in node and SECRET_VAR.search(f"{node['name']}="):
            yield f"{path}: env {node['name']} has a literal value"
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(value, str) and "/" not in str(key) and SECRET_KEY.match(str(key)):
                yield f"{where}: literal value"
            yield from inline_secrets(value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from inline_secrets(value, f"{path}[{i}]")
    elif isinstance(node, str):
        for name, _, value in SECRET_VAR.findall(node):
            if value and not value.lstrip("\"'").startswith("$"):
                yield f"{path}: {name} is assigned a literal"


# --- every file ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*LAUNCHER_CONFIGS, "kuberay-rayjob.yaml", "Dockerfile"])
def test_file_says_how_to_use_it(name):
    text = (CLUSTER / name).read_text()
    head = "\n".join(text.splitlines()[:15])
    assert head.startswith("#"), f"{name} must open with a comment saying how to use it"
    assert "docs/cluster.md" in text or name == "Dockerfile"
    assert re.search(r"(ray up|kubectl apply|docker build)", head), name


@pytest.mark.parametrize("name", sorted(p.name for p in CLUSTER.iterdir() if p.is_file()))
def test_no_secret_is_written_inline(name):
    text = (CLUSTER / name).read_text()
    for pattern in SECRET_PATTERNS:
        match = pattern.search(text)
        assert match is None, f"{name}: looks like an inline secret: {match.group(0)[:12]}..."
    if name.endswith(".yaml"):
        for doc in load_yaml_docs(name):
            problems = list(inline_secrets(doc))
            assert not problems, f"{name}: {problems}; reference a secret instead"


def test_the_secret_check_catches_literals():
    assert list(inline_secrets({"env": [{"name": "OPENAI_API_KEY", "value": "x"}]}))
    assert list(inline_secrets({"llm": {"api_key": "abc"}}))
    assert list(inline_secrets({"cmd": ["export OPENAI_API_KEY=abc; ray start"]}))
    assert not list(inline_secrets({"cmd": ['export OPENAI_API_KEY="$(fetch)"; RAY_AUTH_MODE=token']}))


def test_docs_walk_through_a_first_cloud_run():
    text = (CLUSTER.parent / "docs" / "cluster.md").read_text()
    for name in (*LAUNCHER_CONFIGS, "kuberay-rayjob.yaml", "Dockerfile"):
        assert f"cluster/{name}" in text, name
    assert "ray job submit" in text and ENTRY_MODULE in text


# --- Ray cluster launcher (AWS, GCP) ---------------------------------------------------------

@pytest.fixture(params=LAUNCHER_CONFIGS)
def launcher_config(request) -> tuple[str, dict[str, Any]]:
    docs = load_yaml_docs(request.param)
    assert len(docs) == 1
    return request.param, docs[0]


def test_launcher_config_passes_rays_own_validation(launcher_config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    name, config = launcher_config
    prepared = prepare_config(config)  # fills in the provider's defaults, as `ray up` does
    validate_config(prepared)          # ray/autoscaler/ray-schema.json
    assert prepared["provider"]["type"] == name.split(".")[0]


def is_gpu_node_type(provider: str, node_type: dict[str, Any]) -> bool:
    node_config = node_type["node_config"]
    if node_type.get("resources", {}).get("GPU"):
        return True
    if provider == "aws":
        return re.match(r"(g\d|p\d)", node_config["InstanceType"]) is not None
    return bool(node_config.get("guestAccelerators"))


def test_launcher_config_has_the_cluster_shape(launcher_config):
    name, config = launcher_config
    provider = config["provider"]["type"]
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert not is_gpu_node_type(provider, head), "the head node must not have a GPU"
    assert head["resources"].get("CPU") == 0, "no pipeline work on the head: resources {CPU: 0}"
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    gpu = [v for v in workers.values() if is_gpu_node_type(provider, v)]
    cpu = [v for v in workers.values() if not is_gpu_node_type(provider, v)]
    assert gpu and cpu, "one CPU and one GPU worker group"
    for group in gpu + cpu:
        assert group["min_workers"] == 0 and group["max_workers"] > 0
    assert config["idle_timeout_minutes"] > 0
    if provider == "gcp":
        for group in gpu:
            assert {"onHostMaintenance": "TERMINATE"} in group["node_config"]["scheduling"]
    assert config["docker"]["image"]


def test_launcher_start_commands_read_the_key_from_the_secret_manager(launcher_config):
    name, config = launcher_config
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    text = " ".join(commands)
    assert text.count("fetch_secret.py") == 2 and "OPENAI_API_KEY" in text
    assert "RAY_AUTH_MODE=token" in text
    script = re.search(r"python (\S+/cluster/fetch_secret\.py)", text).group(1)
    assert script.startswith("/home/ray/sg4v/") and (CLUSTER / "fetch_secret.py").is_file()
    assert "--autoscaling-config" in " ".join(config["head_start_ray_commands"])


# --- KubeRay RayJob --------------------------------------------------------------------------

@pytest.fixture()
def rayjob_docs() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in load_yaml_docs("kuberay-rayjob.yaml")}


def ray_containers(cluster_spec: dict[str, Any]) -> list[dict[str, Any]]:
    pods = [cluster_spec["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster_spec["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["spec"]["containers"]]


def test_rayjob_runs_the_job_module_on_a_valid_config(rayjob_docs):
    job = rayjob_docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", ENTRY_MODULE]
    assert importlib.util.find_spec(ENTRY_MODULE) is not None
    config_path = Path(argv[3])
    mounts = {m["mountPath"]: m["name"] for c in ray_containers(job["spec"]["rayClusterSpec"])
              for m in c.get("volumeMounts", [])}
    assert str(config_path.parent) in mounts, "the job config must be mounted where the entrypoint reads it"
    config_map = rayjob_docs["ConfigMap"]
    job_config = yaml.safe_load(config_map["data"][config_path.name])
    load_config(job_config)  # the shipped example config is valid


def test_rayjob_cluster_autoscales_with_cpu_and_gpu_groups(rayjob_docs):
    spec = rayjob_docs["RayJob"]["spec"]
    cluster = spec["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert spec["shutdownAfterJobFinishes"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    head_limits = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_limits
    groups = cluster["workerGroupSpecs"]
    gpus = [g for g in groups if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpus and len(gpus) < len(groups)
    for group in groups:
        assert group["minReplicas"] == 0 < group["maxReplicas"]


def test_rayjob_takes_the_api_key_from_a_kubernetes_secret(rayjob_docs):
    cluster = rayjob_docs["RayJob"]["spec"]["rayClusterSpec"]
    for container in ray_containers(cluster):
        env = {e["name"]: e for e in container.get("env", [])}
        assert "secretKeyRef" in env["OPENAI_API_KEY"]["valueFrom"], container["name"]
        assert "value" not in env["OPENAI_API_KEY"]
    assert cluster["authOptions"]["mode"] == "token"


# --- the image -------------------------------------------------------------------------------

def dockerfile_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))


def test_dockerfile_builds_on_a_real_ray_image_of_the_same_version():
    text = (CLUSTER / "Dockerfile").read_text()
    args = dockerfile_args(text)
    base = re.search(r"^FROM (\S+)", text, flags=re.M).group(1)
    for arg, value in args.items():
        base = base.replace(f"${{{arg}}}", value)
    assert re.fullmatch(r"rayproject/ray:\d+\.\d+\.\d+-py3\d{1,2}-cu\d{3}", base), base
    rayjob = {d["kind"]: d for d in load_yaml_docs("kuberay-rayjob.yaml")}["RayJob"]
    assert rayjob["spec"]["rayClusterSpec"]["rayVersion"] == args["RAY_VERSION"]
    for package in ("operators", "ray_jobs", "cluster"):
        assert re.search(rf"^COPY .*\b{package}\b", text, flags=re.M), package
    assert "pip install" in text


def test_the_image_keeps_blocks_out_of_the_drivers_heap_as_a_local_run_does():
    """The cluster image sets the same inline-result limit as the private local Ray."""
    from ray_jobs.runner import INLINE_RESULT_BYTES, worker_env

    text = (CLUSTER / "Dockerfile").read_text()
    match = re.search(r"^ENV RAY_max_direct_call_object_size=(\d+)$", text, re.MULTILINE)
    assert match is not None and int(match.group(1)) == INLINE_RESULT_BYTES < 100 * 1024
    assert worker_env()["env_vars"]["RAY_max_direct_call_object_size"] == str(INLINE_RESULT_BYTES)
