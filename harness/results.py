"""A run directory: results.jsonl (appended per case), results.csv (tidy table), meta.json.

Floats are written at full precision: json and pandas' CSV writer both write the shortest repr
that reads back to the same float. Raw samples live in results.jsonl; the CSV has one row per case.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.cases import Case
from harness.timing import CUDA_TIMER  # noqa: F401 - the value of the timer column for GPU rows

# 2: rounds in fresh workers, intervals, ratios, drift-normalised rounds
# 3: cases gained kv_heads and n_q (grouped-query attention, decode), rows bytes and bandwidth
SCHEMA_VERSION = 3
CASE_COLUMNS = [f.name for f in dataclasses.fields(Case)]
LEGACY_CASE_COLUMNS = ["impl", "n", "d", "dtype", "batch", "heads", "causal"]  # schema 1 and 2
COLUMNS = [
    *CASE_COLUMNS,
    "status",  # ok, skipped, failed, disagrees
    "median_s",
    "median_low_s",  # the median's 95% interval, resampling whole rounds (harness/stats.py)
    "median_high_s",
    "baseline",  # the implementation `ratio` is to
    "ratio",  # median over rounds of time / the baseline's time in the same round
    "ratio_low",  # its 95% interval
    "ratio_high",
    "normalised",  # median over rounds of time x the round's reference rate (drift removed)
    "drift_reference",  # gemm, stream (the reference workload that rate is of) or none (GPU)
    "iqr_s",
    "min_s",
    "mean_s",
    "max_s",
    "samples",
    "inner_repeats",
    "rounds",  # the samples came in this many rounds, interleaved with the other implementations
    "unstable",  # the median's interval spans more than 20% of it
    "round_spread",  # the slowest round's median / the fastest's (harness/timing.py)
    "timer",  # perf_counter, or CUDA_TIMER for GPU rows
    "first_call_s",
    "compile_s",
    "compile_source",  # compiled, disk cache, none
    "variant",  # which code path the implementation ran (its `variant` hook), or empty
    "transfer_s",
    "flops",
    "gflops",
    "bytes",  # q, K and V (once per key/value head) read, the output written
    "gbps",  # bytes / median_s
    "bandwidth_gbps",  # streaming reads of as many bytes, alongside, same cache state
    "bandwidth_fraction",  # gbps / bandwidth_gbps
    "bound",  # memory or compute: arithmetic intensity against gemm_gflops / bandwidth_gbps
    "peak_fraction",  # gflops / gemm_gflops; CPU rows only
    "gemm_gflops",  # the CPU matrix-product peak it is a fraction of (see harness/sweep.py)
    "gemm_best_gflops",  # the fastest of the products whose median is gemm_gflops
    "peak_mem_bytes",
    "score_matrix_bytes",
    "max_abs_err",
    "max_rel_err",
    "tolerance",
    "checked_rows",
    "predicted_s",
    "note",
]
INTEGER_COLUMNS = [
    "n",
    "d",
    "batch",
    "heads",
    "kv_heads",
    "n_q",
    "samples",
    "inner_repeats",
    "rounds",
    "peak_mem_bytes",
    "score_matrix_bytes",
    "bytes",
]
STATUSES = ("ok", "skipped", "failed", "disagrees")


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


def with_case_defaults(row: dict) -> dict:
    """A row written before cases had kv_heads and n_q (schema 2 and older): they were the
    heads and n."""
    row.setdefault("kv_heads", row["heads"])
    row.setdefault("n_q", row["n"])
    return row


def migrate(meta: dict) -> dict:
    """An older run read as this schema. Schema 2 differs only in its rows, which lack kv_heads
    and n_q (`with_case_defaults`). A schema-1 run (rounds in one worker per implementation, no
    intervals, no reference workload per round) is another method: its meta says so, and what
    it lacks stays absent."""
    if meta["schema_version"] >= 2:
        return {**meta, "schema_version": SCHEMA_VERSION}
    return {
        **meta,
        "schema_version": SCHEMA_VERSION,
        "migrated_from": meta["schema_version"],
        "method": {
            "rounds": meta.get("settings", {}).get("rounds"),
            "round_process": "one worker per implementation for the whole sweep",
            "statistic": "median",
            "interval": None,
            "references": {},
        },
    }


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
