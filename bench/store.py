"""The results store: one SQLite file, `OUT/results.sqlite`: table `runs`, one row per run; `speed`,
one row per cell and shape timed by `rnnbench speed`; `baselines`, each task's reference predictors.

A row is written in one transaction when its run ends (ok, failed or skipped), so a killed
process loses no finished run and leaves no half row. The columns are described in
docs/usage.md ("Results store"); a test keeps the two in step.
"""

from __future__ import annotations

import errno
import json
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

from reports.rows import (  # noqa: F401 - the store's schema, re-exported for its users
    BASELINE_COLUMNS, COLUMNS, JSON_COLUMNS, NOT_CONFIGURATION, SPEED_COLUMNS, TABLES, configuration, configuration_id,
    content_hash,
)

DONE = ("ok", "skipped")  # a re-run skips these; failed runs are tried again


SCHEMA_VERSION = 2  # SQLite's user_version: 1 and 0 are stores of earlier rnnbench versions, upgraded on opening
SQLITE_HEADER = b"SQLite format 3\x00"
# SQLite's application_id (the header's bytes 68-71) of every store rnnbench writes: "RNNB". A store
# of an older rnnbench has 0 there and is known by its runs table's columns instead.
APPLICATION_ID = 0x524E4E42
# the columns every rnnbench store's runs table has had (the first schema's NOT NULL ones)
REQUIRED = {"runs": ("run_id", "task", "task_version", "cell", "seed", "budget", "status")}


class StoreError(Exception):
    """The output folder or its results store cannot be used; the message names the path and why."""


def no_space(err: BaseException | None) -> bool:
    """Whether the error, or one it was raised from, is a full disk (or a quota)."""
    seen = 0
    while err is not None and seen < 20:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(err).lower()
        if "database or disk is full" in text or "no space left" in text:
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


def disk_full_paths(err: BaseException | None) -> list[str]:
    """The files being written when the disk filled, where the errors say them, the first one first
    (a checkpoint that failed, then the store that could not record the failure)."""
    paths: list[str] = []
    while err is not None and len(paths) < 20:
        path = err.filename if isinstance(err, OSError) else getattr(err, "path", None)
        if path and str(path) not in paths:
            paths.append(str(path))
        err = err.__cause__ or err.__context__
    return paths[::-1]


def _full(path: Path, err: sqlite3.OperationalError) -> StoreError:
    error = StoreError(f"results store {path}: no space left on the device; nothing was written and the store "
                       "is intact")
    error.path = path
    return error


def check_out(out: Path, must_exist: bool = False) -> None:
    """That OUT can hold the store: a folder (or creatable as one) that this process may write in.
    Changes nothing on disk (a probe file is created and removed at once)."""
    if out.exists() and not out.is_dir():
        raise StoreError(f"output folder {out}: exists and is not a folder")
    probe = out
    if not out.exists():
        if must_exist:
            raise StoreError(f"output folder {out}: does not exist")
        parent = next((p for p in out.absolute().parents if p.exists()), None)
        if parent is None or not parent.is_dir():
            raise StoreError(f"output folder {out}: cannot be created ({parent} is not a folder)")
        probe = parent  # it will be created there: that is what must be writable
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        where = "" if probe == out else f"cannot be created in {probe}: "
        raise StoreError(f"output folder {out}: {where}not writable ({err.strerror or err})") from None


def check_store(path: Path) -> None:
    """That an existing results store is a SQLite database this rnnbench can read and write."""
    if not path.exists():
        return
    if not path.is_file():
        raise StoreError(f"results store {path}: exists and is not a file")
    with open(path, "rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header and header != SQLITE_HEADER:  # an empty file is an empty database
        raise StoreError(f"results store {path}: not a SQLite database (move it away, or choose another --out)")
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            application = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {name: {row[1] for row in db.execute(f"PRAGMA table_info('{name}')")}
                      for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:
        raise StoreError(f"results store {path}: cannot be read as a SQLite database ({err})") from None
    if application not in (0, APPLICATION_ID):
        raise StoreError(f"results store {path}: a SQLite database of another program (application_id "
                         f"{application:#x}, not rnnbench's {APPLICATION_ID:#x}); nothing was changed: move it away, "
                         "or choose another --out")
    if application == 0 and tables:
        if not set(tables) & set(TABLES):
            raise StoreError(f"results store {path}: not an rnnbench store (it holds the tables "
                             f"{', '.join(sorted(tables))}, none of rnnbench's {', '.join(TABLES)}); nothing was "
                             "changed: move it away, or choose another --out")
        foreign = sorted(set(tables) - set(TABLES))
        if foreign:
            raise StoreError(f"results store {path}: not an rnnbench store (it also holds the tables "
                             f"{', '.join(foreign)}); nothing was changed: move it away, or choose another --out")
    for table, columns in REQUIRED.items():
        missing = [c for c in columns if table in tables and c not in tables[table]]
        if missing:
            raise StoreError(f"results store {path}: its table {table} lacks the columns {', '.join(missing)}, "
                             "which every rnnbench store has; nothing was changed: move it away, or choose another --out")
    if version > SCHEMA_VERSION:
        raise StoreError(f"results store {path}: written by a newer rnnbench (store schema {version}; this "
                         f"rnnbench reads up to {SCHEMA_VERSION}): upgrade rnnbench, or choose another --out")


class ResultsStore:
    """The store in OUT; opening it checks OUT and the file first (`StoreError`, nothing changed),
    creates what is missing and upgrades a store of an older rnnbench."""

    def __init__(self, out: str | Path, name: str = "results.sqlite", readonly: bool = False):
        """`readonly`: for commands that only read (report, export, status): OUT must exist, and
        nothing is created, upgraded or written."""
        self.path = Path(out) / name  # another name: a shard, e.g. shards/<job>_<task>.sqlite under SLURM
        self.readonly = readonly
        if readonly:
            if not Path(out).is_dir():
                raise StoreError(f"output folder {out}: " + ("exists and is not a folder" if Path(out).exists() else "does not exist"))
            check_store(self.path)
            return
        check_out(self.path.parent)
        check_store(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        try:
            self._create()
        except sqlite3.OperationalError as err:
            if new and self.path.is_file() and self.path.stat().st_size == 0:
                self.path.unlink()  # the empty file SQLite opened: no store was made
            if no_space(err):
                raise _full(self.path, err) from err
            raise

    def _current(self) -> bool:
        """Whether the store already has this rnnbench's schema and mark: then opening writes nothing
        (which a full disk would refuse)."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return False
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION or \
                    db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                return False
            for table, spec in TABLES.items():
                if set(spec) - {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    return False
            return db.execute("SELECT 1 FROM runs WHERE configuration_id IS NULL AND config IS NOT NULL "
                              "LIMIT 1").fetchone() is None

    def _create(self) -> None:
        if self._current():
            return
        with closing(self._connect()) as db, db:
            for table, spec in TABLES.items():
                columns = ", ".join(f"{name} {kind}" for name, kind in spec.items())
                db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
                # a store written by an older rnnbench: add the columns it lacks (empty in its rows)
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, kind in spec.items():
                    if name not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind.replace('NOT NULL', '')}")
            missing = db.execute("SELECT run_id, config, device FROM runs WHERE configuration_id IS NULL "
                                 "AND config IS NOT NULL").fetchall()
            for run_id, config, device in missing:  # rows of an older rnnbench gain their configuration id
                db.execute("UPDATE runs SET configuration_id = ? WHERE run_id = ?",
                           (configuration_id(json.loads(config), device), run_id))
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    def _connect(self) -> sqlite3.Connection:
        if self.readonly:
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60)
        return sqlite3.connect(self.path, timeout=60)

    def done(self, run_id: str) -> bool:
        if not self.path.exists():
            return False
        with closing(self._connect()) as db:
            row = db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row is not None and row[0] in DONE

    def has(self, key: str, value: str, table: str) -> bool:
        """Whether `table` holds a row whose column `key` is `value`."""
        with closing(self._connect()) as db:
            return db.execute(f"SELECT 1 FROM {table} WHERE {key} = ? LIMIT 1", (value,)).fetchone() is not None

    def save(self, record: dict[str, Any], table: str = "runs") -> None:
        unknown = set(record) - set(TABLES[table])
        if unknown:
            raise ValueError(f"unknown {table} columns: {sorted(unknown)}")
        values = {k: json.dumps(v, sort_keys=True, default=str) if k in JSON_COLUMNS and v is not None else v
                  for k, v in record.items()}
        try:
            self._save(table, values)
        except sqlite3.OperationalError as err:
            if no_space(err):  # SQLite rolled the row back: the store is as it was
                raise _full(self.path, err) from err
            raise

    def _save(self, table: str, values: dict[str, Any]) -> None:
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with closing(self._connect()) as db, db:  # one transaction: all of the row or none
            if table == "runs":  # a finished run's row is final: a later failure of it never replaces it
                key = PRIMARY_KEYS[table]
                # every column, those the record leaves out too (excluded.<column> is then NULL), as a replace would
                updates = ", ".join(f"{k} = excluded.{k}" for k in TABLES[table] if k != key)
                done = ", ".join(f"'{s}'" for s in DONE)
                db.execute(f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT({key}) DO UPDATE SET {updates} "
                           f"WHERE {table}.status NOT IN ({done})", tuple(values.values()))
            else:
                db.execute(f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks})", tuple(values.values()))

    def rows(self, table: str = "runs") -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        order = {"runs": "task, cell, seed, started_at", "speed": "measured_at, rowid",
                 "baselines": "task, budget, computed_at, rowid"}[table]
        with closing(self._connect()) as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is None:
                return []  # read-only, a store of an older rnnbench without this table
            db.row_factory = sqlite3.Row
            have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            order = ", ".join(k for k in order.split(", ") if k in have) or "rowid"
            # a store of an older rnnbench opened read-only: the columns it lacks read as empty
            rows = [{**dict.fromkeys(TABLES[table]), **dict(r)} for r in db.execute(f"SELECT * FROM {table} ORDER BY {order}")]
        for row in rows:
            for key in JSON_COLUMNS:
                if row.get(key):
                    try:
                        row[key] = json.loads(row[key])
                    except (TypeError, ValueError) as err:  # edited by hand, or written by something else
                        name = row.get(PRIMARY_KEYS[table])
                        raise StoreError(f"results store {self.path}: {table} row {name}: column {key} is not JSON "
                                         f"({err}); mend or delete that row") from None
        return rows


PRIMARY_KEYS = {"runs": "run_id", "speed": "measurement_id", "baselines": "baseline_id"}


def shard_paths(out: Path) -> list[Path]:
    return sorted((Path(out) / "shards").glob("*.sqlite"))


def merge_shards(out: str | Path) -> dict[str, int]:
    """Fold every shard (OUT/shards/*.sqlite, written by SLURM array tasks) into OUT/results.sqlite,
    by primary key: idempotent, and a run stored twice keeps one row (a finished one over a failed
    one, else the one already there). Returns the rows added or replaced per table. Shards stay
    (merging again changes nothing)."""
    out = Path(out)
    counts = {table: 0 for table in TABLES}
    shards = shard_paths(out)
    if not shards:
        return counts
    store = ResultsStore(out)
    # the store's rows are read once, and kept up to date as shards are folded in
    have = {table: {row[key]: row for row in store.rows(table)} for table, key in PRIMARY_KEYS.items()}
    for shard in shards:
        check_store(shard)
        part = ResultsStore(out, str(shard.relative_to(out)), readonly=True)
        for table, key in PRIMARY_KEYS.items():
            for row in part.rows(table):
                old = have[table].get(row[key])
                if old is not None and (table != "runs" or old["status"] in DONE or row["status"] not in DONE):
                    continue  # already there: keep it unless a finished run replaces a failed one
                store.save({k: v for k, v in row.items() if k in TABLES[table]}, table=table)
                have[table][row[key]] = row
                counts[table] += 1
    return counts


def stored_statuses(out: str | Path) -> dict[str, str]:
    """run_id -> status over the store and its shards (a finished status wins over failed)."""
    out = Path(out)
    statuses: dict[str, str] = {}
    paths = [out / "results.sqlite", *shard_paths(out)]
    for path in paths:
        if not path.is_file():
            continue
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            try:
                for run_id, status in db.execute("SELECT run_id, status FROM runs"):
                    if statuses.get(run_id) not in DONE:
                        statuses[run_id] = status
            except sqlite3.OperationalError:  # a shard created but holding no table yet
                continue
    return statuses
