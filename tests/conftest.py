"""Shared fixtures: where the real face data lives, and one detector per test session."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jobs.local_cluster import RayNodes, free_port  # noqa: F401  (tests import free_port from here)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATA = Path(os.environ.get("MFR_SHARED_DATA", ROOT.parent / "shared" / "data"))

# The files that look at the shared photos' detections (`detected`, `shared_faces_68`: MTCNN over the
# 55 photos is about 12 CPU-s, made once per test process) go to one test process, as one unit of
# `make test`'s work: split between the two, each made them again.
SHARED_DETECTIONS = frozenset({"test_align.py", "test_augment.py", "test_eyes.py", "test_face_policy.py",
                               "test_facetype.py", "test_finder.py", "test_landmarks.py", "test_masked_detection.py",
                               "test_masks.py", "test_matching_jobs.py", "test_recog_models.py"})

# The units of work that take longest, longest first (`--durations=0`, summed per file, on this 2-core
# machine). `make test` hands whole files (and SHARED_DETECTIONS as one) to its two workers in
# collection order (`--dist loadfile --no-loadscope-reorder`), so these go out first (those using the
# in-process Ray before the others: pytest_collection_modifyitems) and the short files fill in after:
# the two workers then end together. xdist's own order (files with more tests first) left the
# multi-node cluster's file of 3 tests (about 75 s) to the end, the other worker idle.
# A file not listed keeps its place after these; a list out of date costs time, never a test.
SLOWEST_FILES = ("test_data_safety.py", "test_evaluate.py", "test_jobs_augment.py", "test_faults.py",
                 "test_local_executor.py", "test_cli.py", "test_jobs_cluster.py", "test_jobs_pipeline.py",
                 "test_masked_crops.py", "test_secrets.py", "test_reduce.py", "test_hostile.py", "test_inputs.py")


RAY_FILES: set[Path] = set()
"""The files with a test that uses the test process's in-process Ray (`ray_runtime`), found at collection."""


def pytest_collection_modifyitems(items):
    """The shared detections' unit first (about 300 s), its files that use the in-process Ray last in
    it; then the files that use that Ray, then the rest, each part slowest first: a test process stops
    its Ray when it goes on to a file that does not use it (pytest_runtest_teardown), so it starts it
    about once."""
    RAY_FILES.update(item.path for item in items if "ray_runtime" in item.fixturenames)
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}

    def order(item):
        if item.path.name in SHARED_DETECTIONS:
            return 0, item.path in RAY_FILES, 0
        return 1, item.path not in RAY_FILES, rank.get(item.path.name, len(rank))

    items.sort(key=order)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with SHARED_DETECTIONS' files as one unit; any other mode is xdist's own."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduler(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "shared detections" if Path(scope).name in SHARED_DETECTIONS else scope

    return Scheduler(config, log)


def require_shared(*parts: str) -> Path:
    """A path inside ../shared/data; missing data fails under CI=true and skips elsewhere."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = (f"real face data not found at {path}: tests read ../shared/data in place "
                   "(set MFR_SHARED_DATA to point elsewhere)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def detector():
    from maskgen.detect import MTCNN

    return MTCNN()


def read_rgb(path: Path) -> np.ndarray:
    from maskgen.decode import decode_image

    return decode_image(path.read_bytes())


@pytest.fixture(scope="session")
def face_photos(shared_data) -> list[Path]:
    paths = sorted((shared_data / "faces").rglob("*.jpg"))
    assert len(paths) >= 50, f"expected the 55 photos of shared/data/faces, found {len(paths)}"
    return paths


@pytest.fixture(scope="session")
def predictor():
    from maskgen.landmarks import LandmarkPredictor

    return LandmarkPredictor()


@pytest.fixture(scope="session")
def detected(detector):
    """`detected(path)` -> (image, MTCNN faces) of a photo, decoded and detected once per session:
    several modules look at the same shared photos, and detection is most of what they cost."""
    seen: dict = {}

    def get(path: Path):
        if path not in seen:
            image = read_rgb(path)
            seen[path] = (image, detector.detect(image))
        return seen[path]

    return get


@pytest.fixture(scope="session")
def shared_faces_68(detected, predictor, face_photos):
    """(path, image, faces, landmarks68) for every photo of shared/data/faces with a face."""
    out = []
    for path in face_photos:
        image, faces = detected(path)
        if faces:
            lm = predictor.predict(image, np.array([f.box for f in faces]))
            out.append((path, image, faces, lm))
    return out


def seed_rows():
    """The seed's landmark CSV rows: (image name, face type, (68, 2) landmarks)."""
    from maskgen.seed import read_landmark_csv

    return read_landmark_csv(require_shared("seed", "landmark", "test.csv"))


def photo_folder(root: Path, photos, broken: bool = False) -> Path:
    """`root/<person>/<photo>` copies of `photos` (a job's input folder); with `broken`, also a corrupt
    file and an empty one under `root/broken/`."""
    for path in photos:
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / path.parent.name / path.name)
    if broken:
        (root / "broken").mkdir(parents=True, exist_ok=True)
        (root / "broken" / "random bytes.jpg").write_bytes(b"\x13\x37" * 500)
        (root / "broken" / "empty.jpg").write_bytes(b"")
    return root


@pytest.fixture
def refused_port():
    """A loopback port where a connection is refused for the whole test: bound here, never listening.
    (A port found free and let go could be taken by the other test process meanwhile.)"""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def start_moto(exe) -> tuple[subprocess.Popen, int] | None:
    """moto_server on a free loopback port, once it listens there itself; None when it did not (the
    port found free was taken meanwhile: a connection would reach someone else's server)."""
    import psutil

    port = free_port()
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        try:
            return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                       for c in psutil.Process(proc.pid).net_connections("tcp"))
        except psutil.Error:
            return False

    deadline = time.time() + 30
    while time.time() < deadline and proc.poll() is None:
        if listening():
            return proc, port
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=10)
    return None


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on loopback for the whole session; AWS settings point at it."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        exe = shutil.which("moto_server")
    assert exe, "moto_server (from moto[server]) is needed for the S3 tests"
    started = next((s for s in (start_moto(exe) for _ in range(3)) if s), None)
    if started is None:
        pytest.fail("moto_server did not start (3 tries)")
    proc, port = started
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def bucket(s3_endpoint):
    import boto3

    name = f"mfr-test-{time.time_ns()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def ray_runtime(s3_endpoint):
    """The test process's in-process Ray, started by the first test that asks for it (a start costs
    this machine about 15 CPU-s with the first job's Ray Data actors), after the S3 settings exist
    (workers inherit the environment), and kept for the tests after it while they are in files that
    use it (RAY_FILES). Stopped between: an idle Ray's processes cost about 5.7 CPU-s a minute. One CPU:
    `make test` runs two test processes on this 2-core machine, each with a Ray of its own, and a Ray
    of 2 CPUs in each started two actors per pool for jobs of a few photos, each actor a second or two
    of one core to start. The pools here hold one actor; pools of several run in the Rays that CLI jobs
    start for themselves (tests/test_secrets.py, tests/test_cli.py) and on the multi-node cluster
    (tests/test_jobs_cluster.py)."""
    import ray

    from jobs.pool import own_ray_options

    if not ray.is_initialized():
        ray.init(num_cpus=1, log_to_driver=False, **own_ray_options(1))
        # Ray Data binds its log handler to sys.stderr on first use: do that now, not inside a test
        # whose captured stderr is closed afterwards (Ray would then log "I/O operation on closed file")
        ray.data.range(1).count()
    return ray


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """The in-process Ray is stopped when the next test is in a file that does not use it, or there
    is none (the test files that follow start Rays and clusters of their own, or none)."""
    if nextitem is None or nextitem.path not in RAY_FILES:
        stop_in_process_ray()


def pytest_sessionfinish(session):
    """A run stopped early (`-x`, `--maxfail`, Ctrl-C) has no last test to stop the Ray after."""
    stop_in_process_ray()


def stop_in_process_ray() -> None:
    """Where this process runs a Ray: `ray.shutdown()`, then the end of every process its raylet had
    started: now and then a pool actor outlived it, asleep with its models, its parent gone (twice in
    five runs of the suite)."""
    ray = sys.modules.get("ray")  # never imported here: nothing to stop
    if ray is None or not ray.is_initialized():
        return
    import psutil

    started = []
    for child in psutil.Process().children():
        try:
            if child.name() == "raylet":
                started += child.children(recursive=True)
        except psutil.Error:  # gone already
            pass
    ray.shutdown()
    for process in psutil.wait_procs(started, timeout=5)[1]:
        try:
            process.kill()
        except psutil.Error:
            pass


@pytest.fixture
def ray_nodes(s3_endpoint):
    """An empty multi-node cluster, stopped after the test; the S3 settings exist before it starts."""
    import secrets

    temp = Path("/tmp") / f"mfr-ray-{secrets.token_hex(3)}"  # short: Ray's socket paths live under it
    nodes = RayNodes(temp)
    try:
        yield nodes
    finally:
        nodes.stop()
        shutil.rmtree(temp, ignore_errors=True)


def nan_on_bright_model(path, threshold: float = 0.45):
    """A real ONNX model (arcface-112 spec, 128-d) whose vector is NaN where a crop's mean red, as the
    spec normalises it (-1 black, 1 white), is above `threshold`: fine on a blank crop and on the
    photos, NaN on a photo made much brighter, as a model overflowing on some faces is."""
    import onnx
    from onnx import TensorProto, helper

    from recog.spec import ModelSpec

    rng = np.random.default_rng(0)
    weights = [helper.make_tensor("w", TensorProto.FLOAT, [3, 128], rng.normal(size=384).astype(np.float32)),
               helper.make_tensor("c", TensorProto.FLOAT, [1], [threshold]),
               helper.make_tensor("red", TensorProto.FLOAT, [3, 1], [1.0, 0.0, 0.0])]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["v"]), helper.make_node("MatMul", ["f", "red"], ["r"]),
             helper.make_node("Sub", ["c", "r"], ["d"]), helper.make_node("Sqrt", ["d"], ["g"]),
             helper.make_node("Mul", ["v", "g"], ["y"])]
    graph = helper.make_graph(nodes, "nan-on-bright",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 112, 112])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 128])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    spec = {**ModelSpec.preset("arcface-112", name="nan-on-bright").to_dict(), "embedding_size": 128}
    path.with_suffix(".json").write_text(json.dumps(spec))
    return path


def two_faces_one_bright(path, faces):
    """A photo of two people side by side, the right one made much brighter: `nan_on_bright_model`
    embeds face 0 and gives NaN for face 1."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    left = cv2.imread(str(faces / "person_01/img4.jpg"))
    right = cv2.convertScaleAbs(cv2.imread(str(faces / "person_01/img5.jpg")), alpha=1.6, beta=120)
    height = max(left.shape[0], right.shape[0])
    cv2.imwrite(str(path), np.hstack([cv2.copyMakeBorder(x, 0, height - x.shape[0], 0, 0, cv2.BORDER_CONSTANT,
                                                         value=(128, 128, 128)) for x in (left, right)]))
    return path
