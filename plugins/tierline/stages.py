"""The stages of a run, in order: the one definition the DAG, the run report and every caller read.

Each name is a task of the ``customer_tiering`` DAG, an entry of ``tierline.pipeline.STAGES`` (the
function that runs it) and the ``stage_<name>.json`` it leaves in the run folder. No imports: DAG
files read it when they are parsed.
"""

PREFLIGHT = "preflight"  # checks only, before the run exists (tierline.preflight)
RUN = ("land_extracts", "load_raw", "gate_raw", "dbt_staging", "gate_staging", "fit_clv", "dbt_marts",
       "gate_marts", "publish", "report", "apply_retention")
DAG_TASKS = (PREFLIGHT, *RUN)
THROUGH_PUBLISH = RUN[: RUN.index("publish") + 1]
LAST_GATE = [name for name in RUN if name.startswith("gate_")][-1]  # renders the run's GX Data Docs
