# dmulog: the two commands that matter are `make demo` and `make test`.
# Both install what they need first (Debian packages, a virtualenv, buf).

VENV ?= .venv
PY := $(VENV)/bin/python
BUF := .cache/buf/node_modules/.bin/buf
PYTEST_ARGS ?=
CRASH_ROUNDS ?= 2
FAILOVER_ROUNDS ?= 10
FUZZ_INPUTS ?= 1000000
MODEL_EXAMPLES ?= 100000

.PHONY: all deps proto check-proto lint check unit integration kernel faults fuzz model test demo bench bench-codec bench-scale bench-guest bench-upgrade crash clean

all: test

deps:
	@scripts/install-deps.sh

## Regenerate the Python code of the proto contract (dmulog/v1/).
proto: deps
	$(PY) scripts/gen_proto.py

## Fail when the generated code is stale.
check-proto: proto
	@git diff --exit-code --stat -- dmulog/v1 || { echo "dmulog/v1 is stale: run 'make proto' and commit"; exit 1; }

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	@if [ -x $(BUF) ]; then $(BUF) lint && echo "buf lint: ok"; else echo "buf not installed; skipping buf lint"; fi
	@# The contract only grows: against the last commit (in CI, main's previous one; here, what is committed),
	@# and against the last release tag (v*), what clients in the field were built from.
	@if [ -x $(BUF) ] && git rev-parse -q --verify HEAD >/dev/null; then \
	  against=$$(git rev-parse -q --verify HEAD~1 >/dev/null && git diff --quiet HEAD -- proto && echo HEAD~1 || echo HEAD); \
	  $(BUF) breaking --against ".git#ref=$$against" && echo "buf breaking (against $$against): ok"; \
	  release=$$(git describe --tags --abbrev=0 --match 'v*' 2>/dev/null || true); \
	  if [ -n "$$release" ]; then \
	    $(BUF) breaking --against ".git#tag=$$release" && echo "buf breaking (against release $$release): ok"; \
	  else echo "buf breaking: no release tag (v*) yet; only against $$against"; fi; fi

unit: deps
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: deps
	$(PY) -m pytest tests/integration -m "not faults" $(PYTEST_ARGS)

kernel: deps
	$(PY) -m pytest tests/kernel -m kernel $(PYTEST_ARGS)

## Redis failing under load: Sentinel failovers (SIGKILL, SIGSTOP of the primary), FAILOVER_ROUNDS
## of each, with the acknowledged-marks check after every one.
faults: deps
	DMULOG_FAILOVER_ROUNDS=$(FAILOVER_ROUNDS) $(PY) -m pytest tests -m faults -s $(PYTEST_ARGS)

## Every door fuzzed with FUZZ_INPUTS inputs each (make check runs a few thousand from the same seed):
## kernel datagrams through the codec and the bridge's accept path, and every field of every gRPC request.
fuzz: deps
	DMULOG_FUZZ_INPUTS=$(FUZZ_INPUTS) $(PY) -m pytest tests/fuzz $(PYTEST_ARGS)

## The reference model against the real logsvc and Redis for MODEL_EXAMPLES random runs (make check: a few hundred).
model: deps
	DMULOG_MODEL_EXAMPLES=$(MODEL_EXAMPLES) $(PY) -m pytest tests/model -s $(PYTEST_ARGS)

## The edit loop (under 3 minutes): lint, proto freshness, and every test that needs no
## kernel, breaks no Redis and is not a load test (unit, integration against real Redis and gRPC,
## the harness's own checks).
check: deps check-proto lint
	$(PY) -m pytest tests -m "not kernel and not faults and not load" $(PYTEST_ARGS)

## Everything: `make check`, the load tests and `make faults`, then the real kernel: conformance,
## mirrors, several nodes and crash safety (CRASH_ROUNDS node-crash rounds; every other crash
## scenario runs once). The slowest tests are listed at the end, to show where the time goes.
test: check
	DMULOG_FAILOVER_ROUNDS=$(FAILOVER_ROUNDS) $(PY) -m pytest tests -m "load or faults" -s $(PYTEST_ARGS)
	DMULOG_CRASH_ROUNDS=$(CRASH_ROUNDS) $(PY) -m pytest tests -m kernel --durations=30 $(PYTEST_ARGS)

## Crash safety on the real kernel alone; more rounds: make crash CRASH_ROUNDS=30
## (every other scenario runs a third as many), or python -m tests.kernel.crash.results.
crash: deps
	DMULOG_CRASH_ROUNDS=$(CRASH_ROUNDS) $(PY) -m pytest tests/kernel/crash $(PYTEST_ARGS)

## Boot a real kernel, build a mirror on the full stack, write, show `dmulog status`.
demo: deps
	$(PY) -m harness.demo

## Per-request latency against its floors, and throughput with 1, 8, 64 mirrors (ratios).
bench: deps
	$(PY) -m bench

## 10,000 logs, and one log of 16 Mi regions: request latency must not grow with either.
bench-scale: deps
	$(PY) -m bench.scale

## Write throughput of a real mirror with each log: core, responder, dmulog in guest / on host (ratios).
bench-guest: deps
	$(PY) -m bench.guest

## The I/O pause of a rolling upgrade (bridge, logsvc) on a real mirror under writes (docs/restarts.md).
bench-upgrade: deps
	$(PY) -m bench.upgrade

## The netlink codec against pyroute2's connector marshal.
bench-codec: deps
	$(PY) -m bench.netlink_codec

clean:
	rm -rf .pytest_cache .ruff_cache build *.egg-info
