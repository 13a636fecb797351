# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.curation/dagster

.PHONY: install ssl demo test ui prod-local lint docs clean bench-quality bench-calibration bench-rig bench-sessions bench-slides bench-scale bench-fleet

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster_home/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster_home/dagster.yaml $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(PY) -m curation_assets.demo

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile  # two workers, a test file each: the topology and browser tests mostly wait

ui: install $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

# docker/'s production shape without Docker: Postgres, the gRPC code server, the daemon and the
# webserver as plain processes on loopback (needs: apt-get install -y postgresql); Ctrl-C stops all.
prod-local: install
	$(PY) -m curation_assets.deploy.topology --base .curation/prod-local --port 3000

# The optional embedder_adaptation asset (CURATION_ADAPTATION=1). lightly without its dependencies: its
# metadata requires hydra-core (its CLI), whose omegaconf pins antlr4-python3-runtime 4.9, a runtime that
# cannot read dagster's asset-selection grammar; its losses, heads and transforms need only lightning-utilities (whose
# own requirements, packaging and typing_extensions, dagster already brings).
ssl: install
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps 'lightly==1.6.0' 'lightning-utilities==0.15.3'

docs: install
	$(VENV)/bin/mkdocs build --strict  # the site in .site/; reference pages generated from the code

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Benchmarks (not part of the test suite); the peers live in their own environment.
PEERS := bench/peers/.venv/bin/python
bench-quality: install
	bench/peers/setup.sh
	$(PY) bench/quality_data.py bench/.quality
	$(PEERS) bench/peers/run_peers.py bench/.quality/images bench/.quality/peers.json
	$(PY) bench/quality.py bench/.quality
	$(PY) bench/quality_data.py bench/.heldout --held-out
	$(PEERS) bench/peers/run_peers.py bench/.heldout/images bench/.heldout/peers.json
	$(PY) bench/quality.py bench/.heldout

# Margins of each rule's threshold on 1 000+ real pictures, a quarter held out (bench/calibration.py says how)
bench-calibration: install
	$(PY) bench/calibration.py

bench-rig: install
	$(PY) bench/rig_data.py bench/.rig/mixed
	$(PY) bench/rig_data.py bench/.rig/boards --boards
	$(PY) bench/rig_data.py bench/.rig/mixed-held-out --held-out
	$(PY) bench/rig_data.py bench/.rig/boards-held-out --held-out --boards
	$(PY) bench/rig.py bench/.rig/mixed bench/.rig/boards bench/.rig/mixed-held-out bench/.rig/boards-held-out

bench-sessions: install
	$(PY) bench/sessions.py
	$(PY) bench/sessions.py --held-out

bench-slides: install
	$(PY) bench/slides.py

bench-scale: install
	$(PY) bench/scale.py

# one new video against 10 k and 100 k stored frames (add 1000000 to --sizes on a machine with the memory)
bench-fleet: install
	$(PY) bench/fleet.py --sizes 10000,100000 --burst 10

clean:
	rm -rf .curation
