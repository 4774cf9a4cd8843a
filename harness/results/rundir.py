"""A run directory: results.jsonl (appended per case), results.csv (tidy table), meta.json.

Floats are written at full precision: json and pandas' CSV writer both write the shortest repr
that reads back to the same float. Raw samples live in results.jsonl; the CSV has one row per case.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.results.schema import (
    CASE_COLUMNS,
    COLUMNS,
    INTEGER_COLUMNS,
    LEGACY_CASE_COLUMNS,
    SCHEMA_VERSION,
    migrate,
    with_case_defaults,
)


class RunDirError(Exception):
    """A run directory that cannot be read as it is: the message says why and where."""


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def jsonl(self) -> Path:
        return self.path / "results.jsonl"

    @property
    def csv(self) -> Path:
        return self.path / "results.csv"

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    def write_meta(self, meta: dict) -> None:
        tmp = self.meta_path.with_suffix(".json.tmp")
        tmp.write_text(
            json.dumps({**meta, "schema_version": SCHEMA_VERSION}, indent=2, default=str)
        )
        os.replace(tmp, self.meta_path)

    def meta(self) -> dict:
        if not self.meta_path.is_file():
            raise RunDirError(f"{self.path}: not a run directory (no meta.json)")
        try:
            meta = json.loads(self.meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{self.meta_path}: corrupt JSON ({exc})") from None
        if not isinstance(meta, dict) or "schema_version" not in meta:
            raise RunDirError(f"{self.meta_path}: no schema_version; not written by attnbench")
        version = meta["schema_version"]
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise RunDirError(
                f"{self.meta_path}: schema version {version!r} is newer than this attnbench reads "
                f"({SCHEMA_VERSION}); upgrade attnbench to read it"
            )
        if version < 1:
            raise RunDirError(f"{self.meta_path}: schema version {version} is not supported")
        return migrate(meta)

    def append(self, row: dict) -> None:
        """One line per case, flushed to disk at once: a crash loses nothing measured."""
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def drop_torn_tail(self) -> bool:
        """Cut a last line left unfinished by a killed process, before appending after it."""
        if not self.jsonl.is_file():
            return False
        data = self.jsonl.read_bytes()
        if not data or data.endswith(b"\n"):
            return False
        with open(self.jsonl, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
        return True

    def rows(self) -> list[dict]:
        """Every recorded case. A torn last line (the process was killed mid-write) is dropped;
        a bad line anywhere else means the file is corrupt."""
        if not self.jsonl.is_file():
            return []
        text = self.jsonl.read_text()
        lines = text.splitlines()
        rows = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not set(LEGACY_CASE_COLUMNS) <= set(row):
                    raise ValueError("not a case record")
            except ValueError as exc:
                if number == len(lines) and not text.endswith("\n"):
                    continue  # a write torn by a killed process
                raise RunDirError(f"{self.jsonl}:{number}: corrupt line ({exc})") from None
            rows.append(with_case_defaults(row))
        return rows

    def table(self) -> pd.DataFrame:
        """The tidy table: the last record of each case, in the order measured."""
        frame = pd.DataFrame(self.rows())
        frame = frame.reindex(columns=[*COLUMNS, *(c for c in frame.columns if c not in COLUMNS)])
        if frame.empty:
            return frame
        return frame.drop_duplicates(subset=CASE_COLUMNS, keep="last").reset_index(drop=True)

    def write_csv(self) -> pd.DataFrame:
        frame = self.table()
        tidy = frame[COLUMNS].astype({c: "Int64" for c in INTEGER_COLUMNS})
        tidy.to_csv(self.csv, index=False)
        return frame


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to results.jsonl")


def load_run(path: str | Path) -> tuple[dict, pd.DataFrame]:
    """meta.json and the table of one run directory, checked."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise RunDirError(f"{path}: no such run directory")
    return run.meta(), run.table()
