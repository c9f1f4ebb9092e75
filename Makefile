# The two commands a newcomer needs: `make demo` and `make test`.
# Both create the virtualenv under .venv on first use and are idempotent.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian packages the integration and interop tests drive for real.
DEB_PACKAGES := screen aria2 transmission-cli opentracker mktorrent bind9-host procps iproute2 wrk curl util-linux gawk tar \
                openssh-server openssh-client pssh redis-server prometheus chromium chromium-driver iptables nftables gcc libc6-dev python3-dev
DEB_COMMANDS := screen aria2c transmission-show opentracker mktorrent host pkill ip tc bridge wrk curl unshare taskset awk tar \
                sshd ssh ssh-keygen parallel-scp redis-server promtool chromium chromedriver iptables nft gcc python3-config

.PHONY: demo test unit lint venv sysdeps bench clean bytecode

$(STAMP): setup.py murder/tracker/_udpfast.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# compat mode: the default editable finder hides twisted/plugins from twistd.
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

venv: $(STAMP)

# PYTHONDONTWRITEBYTECODE may be set in the environment; then every process
# would recompile our sources at start (0.1 s each, times every peer).
bytecode: $(STAMP)
	@$(PY) -m compileall -q murder twisted contrib >/dev/null

# Install the Debian tools the tests use, only when one is missing (needs root).
sysdeps:
	@missing=""; for c in $(DEB_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages for:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PACKAGES) >/dev/null; \
	  else echo "not root: tests needing$$missing will be skipped"; fi; \
	fi

demo: bytecode
	$(PY) -m murder.demo

# pytest exits 5 when it collected no test; make treats any non-zero as failure,
# and we say so explicitly so an empty run can never look green.  sysdeps comes
# first: the compiler and Python headers it installs build the C fast paths
# when the venv is created.
test: sysdeps bytecode lint
	@$(PY) -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; fi; exit $$rc

unit: $(STAMP)
	$(PY) -m pytest tests/unit

# ruff.toml and mypy.ini say what is checked (mypy strict on the pure modules).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Randomized fault runs of whole swarms (issue 17); every run's seed is printed.
CHAOS_RUNS ?= 200
CHAOS_SEED ?= 1000
chaos: bytecode
	$(PY) bench/chaos.py --runs $(CHAOS_RUNS) --seed $(CHAOS_SEED) --peers 8..16 --jobs 2

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]' --config-settings editable_mode=compat
	$(PY) bench/tracker_announce.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
