# klaxon — build, run the demo, test, benchmark.
GO      ?= go
BIN     := bin/klaxon
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Debian packages the tests use as real parts (not mocks).
# apt-get waits this long (seconds) for another apt/dpkg process's lock,
# as on a machine still installing packages at boot.
APT_LOCK_TIMEOUT ?= 300
TEST_PKGS := xz-utils nats-server libevtx-utils prometheus-alertmanager prometheus chromium systemd systemd-journal-remote \
	wine wine64 gcc-mingw-w64-x86-64-win32
# make test-windows keeps the Wine bridges, the wine prefix and the test
# binaries here, outside the repository, between runs.
WINE_CACHE ?= $(HOME)/.cache/klaxon-wine
# Fuzz budgets are execution counts, not durations: a duration races the
# coordinator's deadline (golang/go#75804, fixed in Go 1.27) and fails at the
# boundary on a loaded machine with "context deadline exceeded". Minimising a
# new input is bounded by a count too (its default is 60s, without progress output).
FUZZ_FRAME ?= 40000x
FUZZ_XML ?= 30000x
FUZZ_LINE ?= 300000x

.PHONY: all build run test deps fmt vet race windows test-windows rules-lint rules-test fuzz bench stress soak dist clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/klaxon

# The real pipeline on the embedded NATS, tailing the bundled demo inputs;
# incidents print on stdout. Ctrl-C stops it.
run: build
	rm -rf data/demo
	$(BIN) demo --out data/demo/logs
	$(BIN) run --config deploy/demo/klaxon.yaml

# Everything CI checks. Installs the test dependencies it lacks.
test: deps fmt vet windows test-windows race rules-lint rules-test fuzz

deps:
	@missing=""; for p in $(TEST_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get -o DPkg::Lock::Timeout=$(APT_LOCK_TIMEOUT) update -q && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get -o DPkg::Lock::Timeout=$(APT_LOCK_TIMEOUT) install -y -q $$missing; \
	fi
	$(GO) mod download

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

windows:
	GOOS=windows GOARCH=amd64 $(GO) vet ./...
	GOOS=windows GOARCH=amd64 $(GO) build ./...

# The Windows build's tests under Debian's Wine (.ci/wine/test-windows):
# every package with tests, its test binary run from the package's
# directory; fails when one fails. What Wine cannot do skips there
# (internal/winetest). The first run builds the bridges Wine 8 needs for
# Go 1.26 and a wine prefix into $(WINE_CACHE) (a few minutes).
test-windows: deps
	GO="$(GO)" KLAXON_WINE_CACHE="$(WINE_CACHE)" .ci/wine/test-windows

race:
	KLAXON_REQUIRE_EXTERNAL=1 $(GO) test -race -timeout 12m ./...

rules-lint: build
	$(BIN) rules lint rules.d

rules-test: build
	$(BIN) rules test rules.d

# The timing-sensitive tests (real servers, processes killed and restarted,
# clocks that run) many times under -race: run it after touching delivery,
# the durable correlator, leases, the sources' checkpoints or a test of
# theirs, and beside `make bench` to see them under load.
STRESS_COUNT ?= 5
STRESS_TESTS := ^(TestRunOnExternalNATS|TestExpiredSilenceAcrossRestart|TestScaleOutFailover|TestEndToEnd.*|TestKillDuringCaptureReplay|TestLiveNomadAgent|TestOrderKeptAcrossACrash|TestDispatcherResumesDurably|TestDispatcherFetchBacksOff|TestSilenceEndToEnd|TestExternalPublisherSurvivesRestart|TestFencedWriter.*|TestCrashBetweenWrites|TestSoak|TestPublisherKeep|TestDistribution|TestIncidentAwait.*|TestLeaseHeldDuringRestore|TestCutWhileTheCorrelatorGoesOn|TestAckNotHeldByTidying|TestOverlappingCuts|TestReadWhileCommitted|TestRuleEditKeepsUnchangedRules)$$

stress:
	KLAXON_REQUIRE_EXTERNAL=1 $(GO) test -race -count=$(STRESS_COUNT) -timeout 90m -run '$(STRESS_TESTS)' ./...

# The soak (cmd/klaxon TestSoak): SOAK_NODES simulated nodes, each playing
# the real crash-loop capture SOAK_LOOPS times (30 minutes apart in event
# time), at SOAK_RATE lines/s through klaxon ingest (edge filter) and klaxon
# correlate on a 3-node cluster of Debian's nats-server (R3); the correlator
# SIGKILLed SOAK_KILLS times, one NATS node killed and restarted; incidents
# must equal an undisturbed replay and memory stay flat. make test runs a
# short version (100 nodes, 2 loops, 8,000 lines/s).
SOAK_NODES ?= 10000
SOAK_RATE ?= 40000
SOAK_LOOPS ?= 2
SOAK_KILLS ?= 5

soak: deps
	KLAXON_REQUIRE_EXTERNAL=1 KLAXON_SOAK_NODES=$(SOAK_NODES) KLAXON_SOAK_RATE=$(SOAK_RATE) KLAXON_SOAK_KILLS=$(SOAK_KILLS) KLAXON_SOAK_LOOPS=$(SOAK_LOOPS) \
	  $(GO) test -count=1 -run '^TestSoak$$' -v -timeout 90m ./cmd/klaxon/

# Each parser of outside input is fuzzed for a short time.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzFrame$$' -fuzztime $(FUZZ_FRAME) -fuzzminimizetime 5000x -timeout 5m ./ingest/nomadevents/
	$(GO) test -run '^$$' -fuzz '^FuzzReadXML$$' -fuzztime $(FUZZ_XML) -fuzzminimizetime 5000x -timeout 5m ./ingest/winevt/
	$(GO) test -run '^$$' -fuzz '^FuzzReadEVTX$$' -fuzztime $(or $(FUZZ_EVTX),20000x) -fuzzminimizetime 5000x -timeout 5m ./ingest/winevt/
	$(GO) test -run '^$$' -fuzz '^FuzzParseLine$$' -fuzztime $(FUZZ_LINE) -fuzzminimizetime 5000x -timeout 5m ./ingest/nomadlog/

# The benchmarks of the README; BenchmarkLiveSustained alone runs 2 × 10
# minutes (KLAXON_LIVE_SUSTAIN=1m shortens it).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -timeout 90m ./ingest/nomadlog/ ./ingest/nomadevents/ ./ingest/winevt/ ./rules/ ./correlate/ ./cmd/internal/replay/ ./cmd/internal/app/

# Release archives the Nomad jobs download (deploy/nomad: artifact_url/
# klaxon_<os>_<arch>.zip with the binary and rules.d/).
DIST_TARGETS := linux/amd64 linux/arm64 windows/amd64

dist:
	rm -rf dist
	@set -e; for t in $(DIST_TARGETS); do \
	  os=$${t%/*}; arch=$${t#*/}; ext=""; [ "$$os" = windows ] && ext=.exe; \
	  stage=dist/stage/klaxon_$${os}_$${arch}; mkdir -p $$stage; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -ldflags "$(LDFLAGS)" -o $$stage/klaxon$$ext ./cmd/klaxon; \
	  cp -r rules.d $$stage/rules.d; \
	  $(GO) run ./cmd/internal/zipdir dist/klaxon_$${os}_$${arch}.zip $$stage; \
	  echo "dist/klaxon_$${os}_$${arch}.zip"; \
	done
	rm -rf dist/stage

clean:
	rm -rf bin data dist
