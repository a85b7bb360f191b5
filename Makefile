# One command to set up and run the toy, one to set up and run the tests.
#   make toy    # venv + the whole toy DAG, offline on CPU (results/toy/)
#   make report # results/toy/report.html (after make toy)
#   make test   # venv + the test suite
#   make rehearsal  # the paper config on CPU against a local real-format mirror (results/rehearsal/)
#   make toy-presafety  # L-PPO from the pre-safety toy: does ASR fall by half? (toy/presafety.yaml)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.icet-installed

.PHONY: toy toy-presafety test setup clean-toy report rehearsal clean-rehearsal

setup: $(STAMP)

# The CPU torch wheel first (an unpinned torch pulls a multi-GB CUDA build), then icet.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

toy: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --profile toy

toy-presafety: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --profile toy learning --configfile toy/toy.yaml toy/presafety.yaml

# The paper config, reduced in sizes only, on this CPU against a local mirror of every repo
# and URL it names, in the real layouts (docs/rehearsal.md); ends with `icet verify`.
rehearsal: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m icet.mirror rehearse --workdir .

# The HTML report of the finished toy run: every table and figure with its caption.
report: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/snakemake --profile toy --report results/toy/report.html

# As root, the Debian packages the SLURM test needs are installed first (system-packages.txt);
# anyone else without them is told how, and that test is skipped (it fails in CI).
test: $(STAMP)
	@scripts/install-system-packages || [ "$$(id -u)" -ne 0 ]
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n 2 --dist loadgroup -q
	scripts/test-kernel-paths $(BIN)/python

clean-toy:
	rm -rf results/toy logs/toy resources/toy

clean-rehearsal:
	rm -rf results/rehearsal logs/rehearsal resources/rehearsal .rehearsal-urls-rehearsal.yaml
