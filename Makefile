# tierline — `make help` lists the targets. Everything runs from .venv, created on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)/devtools
export GX_ANALYTICS_ENABLED := False
export DBT_SEND_ANONYMOUS_USAGE_STATS := false

CUSTOMERS ?= 5000
CRM ?= zoho
DAYS ?= 3
SCALE ?= 100000

# Variables a user passes (make run AS_OF=...) reach the CLI through the environment, never pasted
# into a recipe: `$(value X)` keeps make from expanding a `$(...)` inside them, `export` hands the
# literal text to the recipe's environment, and recipes read them as "$$X", which the shell
# substitutes without interpreting. A new user variable is added to this list, and used as "$$X".
USER_VARIABLES := LANDING AS_OF SPEC CUSTOMERS DAYS SCALE DRY_RUN CRM FROM TO FORCE PORT OUT CUSTOMER REASON
$(foreach v,$(USER_VARIABLES),$(if $(filter undefined,$(origin $(v))),,$(eval override $(v) := $$(value $(v)))))
export $(USER_VARIABLES)

.DEFAULT_GOAL := help
.PHONY: help venv demo test run backfill preflight lint bench bench-crm simulate holdout warehouse-url stop clean crm-sync crm-retry dashboard airflow dag-graph forget

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP) ## create .venv from the pinned requirements-dev.txt (the runtime requirements.txt plus tools)

demo: $(STAMP) ## generate sample extracts, run the whole DAG for each date, print where results are (CRM=fxiaoke: sync to the 纷享销客 emulator)
	$(BIN)/python -m tierline.cli demo --customers "$$CUSTOMERS" --days "$$DAYS" --crm "$$CRM"

test: $(STAMP) ## run the whole test suite (real PostgreSQL, dbt, GX, Airflow)
	$(BIN)/pytest -q

run: $(STAMP) ## run the DAG for one date: make run LANDING=<dir> AS_OF=<YYYY-MM-DD>
	@test -n "$$LANDING" -a -n "$$AS_OF" || { echo "usage: make run LANDING=<dir> AS_OF=<YYYY-MM-DD>"; exit 2; }
	$(BIN)/python -m tierline.cli run --landing "$$LANDING" --as-of "$$AS_OF"

backfill: $(STAMP) ## run every date folder in a range, oldest first: make backfill LANDING=<dir> FROM=<date> TO=<date> [FORCE=1]
	@test -n "$$LANDING" -a -n "$$FROM" -a -n "$$TO" || { echo "usage: make backfill LANDING=<dir> FROM=<YYYY-MM-DD> TO=<YYYY-MM-DD> [FORCE=1]"; exit 2; }
	$(BIN)/python -m tierline.cli backfill --landing "$$LANDING" --from "$$FROM" --to "$$TO" $(if $(filter 1 yes true,$(FORCE)),--force)

preflight: $(STAMP) ## check config, warehouse, landing and date folder in seconds: make preflight [LANDING=<dir>] [AS_OF=<date>]
	$(BIN)/python -m tierline.cli preflight $(if $(LANDING),--landing "$$LANDING") $(if $(AS_OF),--as-of "$$AS_OF")

lint: $(STAMP) ## ruff (with AIR3) and sqlfluff on the dbt models
	$(BIN)/ruff check dags plugins devtools tests bench
	$(BIN)/python -m tierline_dev.lint

bench: $(STAMP) ## full refresh + incremental days at SCALE customers (default 100000) vs floor and peers, BTYD fit on 1M; bench/results/
	$(BIN)/python bench/bench_btyd.py
	$(BIN)/python bench/bench_pipeline.py --customers "$$SCALE"

bench-crm: $(STAMP) ## CRM connector and sync throughput, Zoho and 纷享销客, each under its documented rate limit
	$(BIN)/python bench/bench_crm.py
	$(BIN)/python bench/bench_crm_sync.py --provider zoho
	$(BIN)/python bench/bench_crm_sync.py --provider fxiaoke

simulate: $(STAMP) ## what-if of a tier specification, nothing published: make simulate SPEC=<file>
	@test -n "$$SPEC" || { echo "usage: make simulate SPEC=<tier_spec.yml>"; exit 2; }
	$(BIN)/python -m tierline.simulate --spec "$$SPEC"

holdout: $(STAMP) ## CDNOW holdout report (predicted vs actual repeat purchases): reports/cdnow/
	$(BIN)/python -m tierline_dev.holdout --transactions tests/data/cdnow/CDNOW_sample.txt --out reports/cdnow

crm-sync: $(STAMP) ## push changed tiers to the CRM (DRY_RUN=1: only write the plan to a file)
	$(BIN)/python -m tierline.cli crm-sync $(if $(filter 1 yes true,$(DRY_RUN)),--dry-run)

crm-retry: $(STAMP) ## replay the records the CRM refused (crm_sync.dead_letters)
	$(BIN)/python -m tierline.cli crm-retry

dashboard: $(STAMP) ## the BI dashboard (Apache Superset) on the published tables, after `make demo`: prints URL + login (TIERLINE_DASHBOARD_PORT, default 8088)
	$(BIN)/python -m tierline_dev.dashboard

airflow: $(STAMP) ## the Airflow UI on the local runs and warehouse (api-server, scheduler, dag-processor); prints URL and login [PORT=8080]
	$(BIN)/python -m tierline.cli airflow --port "$${PORT:-8080}"

dag-graph: $(STAMP) ## the DAG's graph via `airflow dags show` [OUT=customer_tiering.dot; .svg/.png need graphviz's dot]
	$(BIN)/python -m tierline.cli dag-graph --out "$${OUT:-customer_tiering.dot}"

forget: $(STAMP) ## erase one person everywhere (PIPL Art. 47, GDPR Art. 17): make forget CUSTOMER=<id> REASON=<why>
	@test -n "$$CUSTOMER" -a -n "$$REASON" || { echo "usage: make forget CUSTOMER=<customer id> REASON=<why>"; exit 2; }
	$(BIN)/python -m tierline.cli forget --customer-id "$$CUSTOMER" --reason "$$REASON"

warehouse-url: $(STAMP) ## print the warehouse URL (starts the embedded PostgreSQL if needed)
	@$(BIN)/python -m tierline.cli warehouse-url

stop: ## stop the embedded PostgreSQL
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m tierline.cli stop; fi

clean: stop ## remove local state (.tierline: embedded database, landing area, runs, Airflow metadata)
	rm -rf .tierline dbt_project/target dbt_project/logs
