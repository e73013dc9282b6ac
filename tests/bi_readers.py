"""BI readers for the publish tests (issue 8, item 3): sessions of their own that query every
``_latest`` view in a loop, as a dashboard does, with ``lock_timeout = '2s'``, and a BI session
left idle inside a transaction that holds read locks on the views."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psycopg

from tierline.assets import SNAPSHOT_TABLES

# tables that hold rows for every published date (others, e.g. early_warning, may be empty)
NEVER_EMPTY = ("customer_value", "customer_tier", "customer_lifecycle", "kpi_daily", "clv_model_fit")


@dataclass
class ReaderLog:
    queries: int = 0
    errors: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    mixed: list[str] = field(default_factory=list)
    dates: set = field(default_factory=set)
    slowest: float = 0.0


class BiReaders:
    def __init__(self, url: str, sessions: int = 2, schema: str = "analytics"):
        self.url, self.sessions, self.schema = url, sessions, schema
        self.log = ReaderLog()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle: psycopg.Connection | None = None

    def _queries(self) -> list[tuple[str, str]]:
        s = self.schema
        every = ", ".join(f"(select array[min(as_of_date), max(as_of_date)] from {s}.{t}_latest)"
                          for t in SNAPSHOT_TABLES)
        queries = [(f"{t}_latest", f"select count(*), count(distinct as_of_date), min(as_of_date) from {s}.{t}_latest")
                   for t in SNAPSHOT_TABLES]
        queries.append(("join tier x value",
                        f"select count(*), count(distinct t.as_of_date) + count(distinct v.as_of_date) - 1, "
                        f"min(t.as_of_date) from {s}.customer_tier_latest t "
                        f"join {s}.customer_value_latest v using (customer_id)"))
        queries.append(("all views in one statement", f"select array[{every}]"))
        return queries

    def _loop(self) -> None:
        try:
            conn = psycopg.connect(self.url, autocommit=True, application_name="bi reader")
            conn.execute("set lock_timeout = '2s'")
        except psycopg.Error as exc:
            with self._lock:
                self.log.errors.append(f"connect: {exc}")
            return
        with conn:
            while not self._stop.is_set():
                for name, query in self._queries():
                    started = time.monotonic()
                    try:
                        row = conn.execute(query).fetchone()
                    except psycopg.Error as exc:
                        with self._lock:
                            self.log.errors.append(f"{name}: {type(exc).__name__}: {exc}".strip())
                        continue
                    took = time.monotonic() - started
                    with self._lock:
                        self.log.queries += 1
                        self.log.slowest = max(self.log.slowest, took)
                        self._judge(name, row)
                time.sleep(0.05)

    def _judge(self, name: str, row) -> None:
        if name == "all views in one statement":
            bounds = [b for b in row[0] if b[0] is not None]
            if len({d for b in bounds for d in b}) > 1:
                self.log.mixed.append(f"{name}: {bounds}")
            return
        count, dates, day = row
        if dates > 1:
            self.log.mixed.append(f"{name}: {dates} dates")
        table = name.removesuffix("_latest")
        if count == 0 and (table in NEVER_EMPTY or name.startswith("join")):
            self.log.empty.append(name)
        if day is not None:
            self.log.dates.add(day)

    def start(self) -> BiReaders:
        # a BI session left idle inside a transaction, holding read locks on views and tables
        self._idle = psycopg.connect(self.url, application_name="idle bi session")
        self._idle.execute("set lock_timeout = '2s'")
        # a BI tool's session, not the pipeline's: PGOPTIONS inherited from a pipeline step in this
        # process must not end it (the pipeline's idle-in-transaction timeout is 10 min, which a
        # slow machine's four publishes can outlast)
        self._idle.execute("set idle_in_transaction_session_timeout = 0")
        self._idle.execute(f"select count(*) from {self.schema}.customer_tier_latest t "
                           f"join {self.schema}.customer_value_latest v using (customer_id)").fetchone()
        for _ in range(self.sessions):
            thread = threading.Thread(target=self._loop, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> ReaderLog:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        if self._idle is not None:
            self._idle.rollback()
            self._idle.close()
        return self.log
