# Makefile — the README's commands. `make run` and `make test` install what is missing
# (scripts/setup.sh), build, and run; see README for the rest.
#   make run     build and serve examples/quickstart/ on :8080 (a Mock model; with OPENAI_API_KEY set,
#                also a real OpenAI target, generated into build/run-config/)
#   make test    unit + integration tests (+ an ASan/UBSan build when CI=true); one summary line
#   make bench   bench/run.sh (ratios against nginx proxy_pass)
#   make fuzz    scripts/fuzz.sh: the libFuzzer targets of tests/fuzz/ (clang), FUZZ_SECONDS each
#   make crds    regenerate deploy/crds/, the Helm chart's crds/ and docs/reference.md from the schema
#   make format  clang-format -i on src/ and tests/ C files;  make lint  cppcheck on src/
BUILD_DIR   ?= build
BUILD_TYPE  ?= RelWithDebInfo
JOBS        ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 600
RUN_CONFIG  := $(BUILD_DIR)/run-config
C_SOURCES    = $(shell find src tests -name '*.[ch]' -not -path '*/node_modules/*' 2>/dev/null)

.PHONY: all setup build run test bench fuzz format lint clean crds

all: build

setup:
	@scripts/setup.sh

build: setup
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)
	cmake --build $(BUILD_DIR) -j$(JOBS)

# Without OPENAI_API_KEY: serve the quickstart as it is (a Mock target, no provider key needed).
# With it: copy examples/quickstart/openai/gateway.yaml and write its Secret from the environment
# into build/run-config/ (mode 0600, never committed), and serve that instead.
run: build
	@if [ -n "$${OPENAI_API_KEY:-}" ]; then \
	  rm -rf $(RUN_CONFIG) && mkdir -p $(RUN_CONFIG) && chmod 700 $(RUN_CONFIG) && \
	  cp examples/quickstart/openai/gateway.yaml $(RUN_CONFIG)/gateway.yaml && \
	  ( umask 077; key_b64="$$(printf '%s' "$$OPENAI_API_KEY" | base64 -w0)"; \
	    sed "s|^  apiKey: .*|  apiKey: $$key_b64|" examples/quickstart/openai/secret.yaml > $(RUN_CONFIG)/secret.yaml ) && \
	  echo "make run: OPENAI_API_KEY is set: serving $(RUN_CONFIG)/ (Mock 'demo' + OpenAI 'gpt-4o-mini', 'gpt-4o')"; \
	  exec $(BUILD_DIR)/ctxgate serve -f $(RUN_CONFIG)/; \
	else \
	  echo "make run: serving examples/quickstart/ (Mock model 'demo', alias gpt-4o-mini; set OPENAI_API_KEY for a real one)"; \
	  exec $(BUILD_DIR)/ctxgate serve -f examples/quickstart/; \
	fi

test: setup
	@scripts/test.sh

bench: build
	@if [ -x bench/run.sh ]; then bench/run.sh; \
	elif [ -f bench/run.sh ]; then bash bench/run.sh; \
	else echo "make bench: bench/run.sh is not there yet" >&2; exit 1; fi

# every fuzz target over its corpus, then FUZZ_SECONDS of fresh mutation each (one at a time;
# FUZZ_JOBS=2 runs two at once); findings are kept under build-fuzz/findings/
fuzz: setup
	@scripts/fuzz.sh $(FUZZ_SECONDS)

# the generated files: deploy/crds/, the Helm chart's copy of them, docs/reference.md (tests fail
# when any of them drifts from the schema source)
crds: build
	$(BUILD_DIR)/ctxgate crds --out deploy/crds
	cp deploy/crds/*.yaml deploy/helm/ctxgate/crds/
	$(BUILD_DIR)/ctxgate schema-doc > docs/reference.md

format:
	clang-format -i $(C_SOURCES)

lint:
	cppcheck --enable=warning,performance,portability --std=c11 --quiet --error-exitcode=1 \
	  --inline-suppr -I src src

clean:
	rm -rf $(BUILD_DIR) build-asan build-fuzz
