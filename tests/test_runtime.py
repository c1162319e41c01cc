"""Sessions get the CPUs the process was given and the provider that exists."""

from __future__ import annotations

import os

import pytest

from maskgen import runtime


def test_threads_follow_ray_and_explicit_settings(monkeypatch):
    monkeypatch.delenv("MFR_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray sets for a 1-CPU actor
    assert runtime.available_cpus() == 1
    monkeypatch.setenv("MFR_NUM_THREADS", "3")
    assert runtime.available_cpus() == 3
    monkeypatch.delenv("MFR_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= runtime.available_cpus() <= len(os.sched_getaffinity(0))


def test_session_uses_the_thread_count(monkeypatch):
    from maskgen.mtcnn_graphs import build_bytes

    monkeypatch.setenv("MFR_NUM_THREADS", "1")
    session = runtime.create_session(build_bytes("rnet"), device="cpu")
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1


def test_providers():
    import onnxruntime as ort

    assert runtime.providers_for("cpu") == ["CPUExecutionProvider"]
    auto = runtime.providers_for("auto")
    assert auto[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert auto[0] == "CUDAExecutionProvider"
    else:
        assert auto == ["CPUExecutionProvider"]
        with pytest.raises(RuntimeError, match=r"\[gpu\] extra"):
            runtime.providers_for("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        runtime.providers_for("tpu")


def test_a_session_asked_for_cuda_that_runs_on_the_cpu_is_refused_or_named():
    """ONNX Runtime builds a CPU session, with one log line, when its CUDA provider cannot start (no
    driver, CUDA of another major version): asked for CUDA, that must fail in words, not run on one
    CPU thread; on `auto` it is a warning."""
    from maskgen.mtcnn_graphs import build_bytes

    on_cpu = runtime.create_session(build_bytes("rnet"), device="cpu", threads=1)
    with pytest.raises(RuntimeError, match=r"could not start it.*\[gpu\] extra.*loading them said: Failed to load"):
        runtime.check_cuda_session(on_cpu, "cuda", "Failed to load libcudnn.so.9")
    with pytest.warns(RuntimeWarning, match="would run on the CPU"):
        runtime.check_cuda_session(on_cpu, "auto")


def test_cache_dir_is_configurable(monkeypatch, tmp_path):
    monkeypatch.setenv("MFR_CACHE_DIR", str(tmp_path / "models"))
    assert runtime.cache_dir() == tmp_path / "models" and (tmp_path / "models").is_dir()
