# Two commands do everything on a fresh Linux machine (Python 3.11, Java 17):
#   make run    create .venv if missing, then run the whole study on config/config.yaml
#   make test   create .venv if missing, then run the test suite
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
CONFIG ?= config/config.yaml
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1

.PHONY: run test env dry-run pull clean-venv

$(BIN)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

env: $(BIN)/.installed

# The report is rebuilt only when a table, figure or report caption is newer than it: a no-op
# `make run` then costs Snakemake's DAG check alone (~2-3 s; the report takes ~3 s more).
run: env
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)
	@report=results/$$($(BIN)/python -c "import yaml; print(yaml.safe_load(open('$(CONFIG)'))['study'])")/report.html; \
	if [ ! -f $$report ] || [ -n "$$(find $$(dirname $$report)/tables $$(dirname $$report)/figures report -newer $$report -print -quit)" ]; then \
		$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --report $$report; \
	else echo "report up to date: $$report"; fi

test: env
	$(BIN)/python -m pytest -q

# Restore results from the DVC remote, then mark them up to date in Snakemake's DAG order
# (a checkout gives files new, arbitrary modification times; the content is verified by DVC).
pull: env
	$(BIN)/dvc pull
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --touch --quiet

dry-run: env
	$(BIN)/snakemake -n --configfile $(CONFIG)

clean-venv:
	rm -rf $(VENV)
