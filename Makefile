# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs
# the project first; the install is skipped while pyproject.toml is unchanged.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS ?= cpu,test,demo

.PHONY: install test demo bench clean

install: $(STAMP)

# pip compiles nothing to bytecode (--no-compile): it compiled every installed module, one file after
# another, 60 s of a 107 s install here, where the tests import a small share of them. Python compiles
# a module as it is first imported and keeps the bytecode: PYTHONDONTWRITEBYTECODE (set on this machine
# and its CI) is emptied for every target here, as with it no bytecode is kept, and each process the
# tests, the demo and the benchmarks start (Ray workers, pool workers, `mfr` commands) compiled every
# module it imports again: Ray's, pandas' and the rest about 4 CPU-s, the project's 0.2.
export PYTHONDONTWRITEBYTECODE =

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -e '.[$(EXTRAS)]'
	touch $(STAMP)

# Two test processes (pytest-xdist), each test file kept in one: on 2 cores a serial run leaves a third
# of the CPU idle while jobs start processes and wait on Ray. TEST_WORKERS=0 runs them in this process.
# Files go out in collection order, which tests/conftest.py sorts: the shared detections' unit, then
# the files that use the in-process Ray, then the rest, each part slowest first (SLOWEST_FILES).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

demo: $(STAMP)
	$(BIN)/mfr demo --out out/demo

# Benchmarks are not tests: they print tables for the README. REFERENCE_PYTHON is an interpreter
# that has TensorFlow and mtcnn (see tools/mtcnn_reference.py); without it the reference column is skipped.
bench: $(STAMP)
	$(BIN)/python bench/bench_detect.py $(if $(REFERENCE_PYTHON),--reference-python $(REFERENCE_PYTHON))
	$(BIN)/python bench/bench_masks.py
	$(BIN)/python bench/bench_mask_speed.py
	$(BIN)/python bench/bench_embed.py
	$(BIN)/python bench/bench_scoring.py
	$(BIN)/python bench/bench_reducer.py
	$(BIN)/python bench/bench_masked_detection.py
	$(BIN)/python bench/bench_masked_crops_modes.py
	$(BIN)/python bench/bench_evaluate_models.py
	$(BIN)/python bench/bench_turned_faces.py
	$(BIN)/python bench/bench_worn_masks.py
	$(BIN)/python bench/bench_interval_coverage.py
	$(BIN)/python bench/bench_face_policy.py
	$(BIN)/python bench/bench_cut_faces.py
	$(BIN)/python bench/bench_redetected_recognition.py
	$(BIN)/python bench/bench_jobs.py
	$(BIN)/python bench/bench_pipeline.py

clean:
	rm -rf $(VENV) out .pytest_cache
