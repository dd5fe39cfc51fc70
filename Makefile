# Set-up and entry points. `make run` and `make test` work from a fresh clone on Debian as root.
SHELL := /bin/bash
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
BUILD_PACKAGES := cmake make g++ pkg-config libgtest-dev libhwloc-dev python3 python3-venv \
  ocl-icd-opencl-dev opencl-c-headers pocl-opencl-icd libopenblas-dev liblapacke-dev libcli11-dev openmpi-bin libopenmpi-dev
BENCH_PACKAGES := libstarpu-dev libtbb-dev
DOCS_PACKAGES := doxygen
# The device drivers stay out of the sanitizer builds: their vendor libraries are not instrumented.
SANITIZER_FLAGS := -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHETFLOW_WERROR=ON -DHETFLOW_BUILD_BENCH=OFF -DHETFLOW_BUILD_EXAMPLES=OFF \
  -DHETFLOW_WITH_CUDA=OFF -DHETFLOW_WITH_OPENCL=OFF

PYTHON_BUILD_DEPS := scikit-build-core nanobind cloudpickle numpy pytest matplotlib joblib dask mypy threadpoolctl pyopencl mpi4py
DOCS_PYTHON_DEPS := sphinx breathe myst-parser furo
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: all deps build python run test test-unit test-python test-types test-tsan test-asan stress bench bench-deps bench-python install clean format stubs

all: build

deps:
	@scripts/install-deps.sh $(BUILD_PACKAGES)
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check $(PYTHON_BUILD_DEPS)

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DHETFLOW_WERROR=ON $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j$(JOBS)

# The Python package, installed (editable) into .venv; rebuilds incrementally under build/python.
python: deps
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation \
		--config-settings=cmake.define.HETFLOW_WERROR=ON -e .

run: build python
	./$(BUILD)/examples/cpp/tiled_gemm
	./$(BUILD)/examples/cpp/cholesky --check
	[ ! -x $(BUILD)/examples/cpp/mpi_cholesky ] || OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none mpirun --timeout 300 -np 4 ./$(BUILD)/examples/cpp/mpi_cholesky --n 1024 --tile 128 --check
	HETFLOW_OPENCL_DEVICES=all ./$(BUILD)/examples/cpp/cholesky --opencl --sched dmdas --repeat 3 --check
	$(PY) examples/python/tour.py
	$(PY) examples/python/tiled_gemm.py --n 1024 --tile 256 --opencl --repeat 3 --check
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none mpirun --timeout 300 -np 4 $(PY) examples/python/mpi_cholesky.py --n 1024 --tile 128 --check

test: test-unit test-python test-types test-tsan test-asan

test-unit: build
	ctest --test-dir $(BUILD) -j$(JOBS) --output-on-failure

# The OpenCL codelet tests run on PoCL's CPU device, and the MPI ones under Open MPI's mpirun,
# which `make deps` installs: they must not skip.
test-python: python
	HETFLOW_TEST_REQUIRE_OPENCL=1 HETFLOW_TEST_REQUIRE_MPI=1 $(PY) -m pytest -q tests/python

# The type check of the Python package (settings in pyproject.toml), against the extension's
# checked-in stubs.
test-types: deps
	$(PY) -m mypy

# Regenerates the extension's stubs (python/hetflow/_hetflow.pyi) after its bindings change.
stubs: python
	$(PY) -m nanobind.stubgen -m hetflow._hetflow -o python/hetflow/_hetflow.pyi

# The concurrency tests again, under ThreadSanitizer and under AddressSanitizer + UBSan.
test-tsan: deps
	cmake -S . -B $(BUILD)-tsan $(SANITIZER_FLAGS) -DHETFLOW_SANITIZE=thread
	cmake --build $(BUILD)-tsan -j$(JOBS)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest --test-dir $(BUILD)-tsan -L concurrency -j$(JOBS) --output-on-failure

test-asan: deps
	cmake -S . -B $(BUILD)-asan $(SANITIZER_FLAGS) "-DHETFLOW_SANITIZE=address;undefined"
	cmake --build $(BUILD)-asan -j$(JOBS)
	ASAN_OPTIONS="detect_leaks=1" UBSAN_OPTIONS="print_stacktrace=1" ctest --test-dir $(BUILD)-asan -L concurrency -j$(JOBS) --output-on-failure

# Long randomized checks, not part of `make test`: the oracle over numpy views with a million
# tasks (it prints the tasks checked, mismatches and failures injected), worker processes killed
# at random over FAULT_ROUNDS rounds, then the C++ stress suite (STRESS_SCALE multiplies its sizes).
ORACLE_TASKS ?= 1000000
FAULT_ROUNDS ?= 100
STRESS_SCALE ?= 1
stress: build python
	HETFLOW_ORACLE_TASKS=$(ORACLE_TASKS) $(PY) -m pytest -q -s tests/python/test_oracle.py -k random_programs
	HETFLOW_FAULT_ROUNDS=$(FAULT_ROUNDS) $(PY) -m pytest -q -s tests/python/test_fault_injection.py
	HETFLOW_TEST_SCALE=$(STRESS_SCALE) ctest --test-dir $(BUILD) -R '^stress\.' -j$(JOBS) --output-on-failure

# The competitors' packages come first, so that the build finds them and makes their programs.
bench-deps: deps
	@scripts/install-deps.sh $(BENCH_PACKAGES)

bench: bench-deps build bench-python
	HETFLOW_BENCH=./$(BUILD)/bench/hetflow-bench bash bench/overhead/compare.sh
	./$(BUILD)/bench/hetflow-bench sched-sim --tiles 16
	./$(BUILD)/bench/hetflow-bench sched-sim --tiles 32
	./$(BUILD)/bench/hetflow-bench sched-sim --tiles 16 --machine bench/sched_sim/k40.json --precision single
	./$(BUILD)/bench/hetflow-bench sched-sim --tiles 32 --machine bench/sched_sim/k40.json --precision single
	./$(BUILD)/bench/hetflow-bench sched-sim --tiles 16 --machine bench/sched_sim/gh200.json
	./$(BUILD)/bench/hetflow-bench sched-sim --tiles 32 --machine bench/sched_sim/gh200.json
	./$(BUILD)/bench/hetflow-bench sched-sim --tiles 64 --machine bench/sched_sim/k40.json --precision single --nodes 16
	BUILD=$(BUILD) bash bench/taskbench/metg.sh stencil_1d
	HETFLOW_BUILD=$(BUILD) bash bench/cholesky/fidelity.sh

bench-python: python
	$(PY) -m pip install -q --disable-pip-version-check joblib
	$(PY) -m hetflow.bench overhead
	$(PY) -m hetflow.bench scaling

# The documentation site, not part of `make test`: the guides (docs/*.md) and the API reference
# of the C++ headers (Doxygen XML through breathe, docs/Doxyfile) and of the Python package
# (autodoc, without building the extension), in $(BUILD)/docs/html. Warnings are shown; they do
# not fail the build.
.PHONY: docs
DOCS_OUT := $(abspath $(BUILD))/docs
docs: deps
	@scripts/install-deps.sh $(DOCS_PACKAGES)
	@$(PY) -m pip install -q --disable-pip-version-check $(DOCS_PYTHON_DEPS)
	@mkdir -p $(DOCS_OUT)
	HETFLOW_DOCS_BUILD=$(DOCS_OUT) doxygen docs/Doxyfile
	HETFLOW_DOXYGEN_XML=$(DOCS_OUT)/doxygen/xml $(PY) -m sphinx -q -b html -d $(DOCS_OUT)/doctrees docs $(DOCS_OUT)/html
	@echo "documentation: $(DOCS_OUT)/html/index.html"

install: build
	cmake --install $(BUILD) $(if $(PREFIX),--prefix $(PREFIX))

format:
	clang-format -i $$(git ls-files '*.cpp' '*.hpp' '*.c')

clean:
	rm -rf $(BUILD) $(BUILD)-tsan $(BUILD)-asan
