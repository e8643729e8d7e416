"""Jobs in SQLite: what was asked, where it stands, what came out.

One row per job; the input and output files live in ``data/jobs/<id>/``.  Every state
change is one transaction, so a server killed at any point restarts with each job
queued, running (put back in the queue by ``recover``), or finished.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

STATES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    filename TEXT NOT NULL,
    input TEXT NOT NULL,
    options TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    report TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0
)
"""


@dataclass
class JobRow:
    id: str
    state: str
    created: float
    updated: float
    filename: str
    input: str
    options: Dict[str, Any]
    progress: Dict[str, Any]
    report: Optional[Dict[str, Any]]
    error: Optional[str]
    attempts: int

    def public(self) -> Dict[str, Any]:
        """What the API shows of a job."""
        stop = self.report and {"iteration": self.report["stop_iteration"], "reason": self.report["stop_reason"]}
        return {
            "id": self.id,
            "state": self.state,
            "created": self.created,
            "updated": self.updated,
            "filename": self.filename,
            "options": self.options,
            **self.progress,
            "stop": stop or None,
            "report": self.report,
            "error": self.error,
            "attempts": self.attempts,
        }


class JobStore:
    """The job table, safe to share between the server's threads."""

    def __init__(self, data_dir: Path):
        self.root = Path(data_dir)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "jobs.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def _row(self, r: Any) -> JobRow:
        return JobRow(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            json.loads(r[6]),
            json.loads(r[7]),
            json.loads(r[8]) if r[8] else None,
            r[9],
            r[10],
        )

    def _query(self, sql: str, args: tuple = ()) -> List[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def create(self, filename: str, input_name: str, options: Dict[str, Any], job_id: Optional[str] = None) -> JobRow:
        job_id = job_id or uuid.uuid4().hex[:16]
        now = time.time()
        self._query(
            "INSERT INTO jobs (id, state, created, updated, filename, input, options) VALUES (?,?,?,?,?,?,?)",
            (job_id, "queued", now, now, filename, input_name, json.dumps(options)),
        )
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Optional[JobRow]:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._row(rows[0]) if rows else None

    def list(self, limit: int = 100) -> List[JobRow]:
        return [self._row(r) for r in self._query("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,))]

    def counts(self) -> Dict[str, int]:
        found = dict(self._query("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        return {s: int(found.get(s, 0)) for s in STATES}

    def claim(self) -> Optional[JobRow]:
        """The oldest queued job, now running (None: the queue is empty)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                r = self._db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1").fetchone()
                if r is not None:
                    self._db.execute(
                        "UPDATE jobs SET state = 'running', updated = ?, attempts = attempts + 1, "
                        "progress = '{}' WHERE id = ?",
                        (time.time(), r[0]),
                    )
                self._db.execute("COMMIT")
            except Exception:
                self._db.execute("ROLLBACK")
                raise
        return self.get(r[0]) if r is not None else None

    def progress(self, job_id: str, progress: Dict[str, Any]) -> None:
        self._query(
            "UPDATE jobs SET progress = ?, updated = ? WHERE id = ? AND state = 'running'",
            (json.dumps(progress), time.time(), job_id),
        )

    def finish(
        self, job_id: str, state: str, report: Optional[Dict[str, Any]] = None, error: Optional[str] = None
    ) -> None:
        if state not in FINISHED and state != "queued":
            raise ValueError(f"not an end state: {state}")
        self._query(
            "UPDATE jobs SET state = ?, report = ?, error = ?, updated = ? WHERE id = ?",
            (state, json.dumps(report) if report is not None else None, error, time.time(), job_id),
        )

    def cancel(self, job_id: str) -> Optional[str]:
        """Cancel a queued job at once; a running one is cancelled by its worker. Returns
        the state it had (None: no such job)."""
        job = self.get(job_id)
        if job is None:
            return None
        if job.state == "queued":
            self._query(
                "UPDATE jobs SET state = 'cancelled', updated = ? WHERE id = ? AND state = 'queued'",
                (time.time(), job_id),
            )
        return job.state

    def recover(self) -> int:
        """After a restart: jobs that were running go back to the queue (restarted from
        their input).  Returns how many."""
        rows = self._query("SELECT id FROM jobs WHERE state = 'running'")
        self._query(
            "UPDATE jobs SET state = 'queued', progress = '{}', updated = ? WHERE state = 'running'", (time.time(),)
        )
        return len(rows)

    def expired(self, older_than_s: float) -> List[str]:
        """Finished jobs last touched more than ``older_than_s`` ago, now deleted (their
        files are the caller's to remove)."""
        cutoff = time.time() - older_than_s
        ids = [
            r[0]
            for r in self._query(
                "SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND updated < ?", (cutoff,)
            )
        ]
        for job_id in ids:
            self._query("DELETE FROM jobs WHERE id = ?", (job_id,))
        return ids

    def close(self) -> None:
        with self._lock:
            self._db.close()
