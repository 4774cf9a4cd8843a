"""Which cases got slower or faster from run A to run B (`attnbench compare A B`).

A case is judged on a figure from which the machine's drift is taken out, so that a machine
running 10-30% slower during one run than during the other does not read as a change of the
code. Where both runs measured the baseline implementation of its shape (the two took turns
in the same seconds), that figure is the case's ratio to the baseline: B's ratio over A's. The
baseline itself, and every case whose baseline is missing or itself changed, is judged on its
drift-normalised samples (each round's times the rate of that round's reference workload,
measured just before it), which must agree with the raw change of the seconds as measured (see
`compare_rounds`); a change of the baseline must also show in its ratio to some implementation
measured beside it (`_confirm_baseline_changes`). Each change has a 95% interval from
resampling whole rounds of each run (harness/analysis/stats.py) and is marked only when the
whole interval lies beyond the threshold. Samples within a round are not independent (one
process, one moment), so no test treats them as if they were. The statistics
(`compare_rounds`, `compare_tables`) do no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.analysis import stats
from harness.analysis.ratios import round_values
from harness.results.rundir import RunDirError
from harness.results.schema import CASE_COLUMNS

SLOWER, FASTER = "slower", "faster"
# From this many rounds a side, the raw change's value (not its interval, which also holds the
# machine's drift) must lie beyond the threshold with the normalised interval. Measured on
# pairs of runs of identical code and a planted 12% slowdown (docs/MEASUREMENT.md): at 12
# rounds the raw interval hid half the slowdown and the value marked no unchanged case; at 3
# rounds the value let through twice as many unchanged cases as the interval.
RAW_VALUE_ROUNDS = 8
BROKEN = ("failed", "disagrees")
OTHER_MACHINE = "not judged: other machine"
BY_REFERENCE = "drift-normalised"
NOT_BESIDE = "not seen beside the others"


@dataclass(frozen=True)
class Change:
    raw: stats.Interval  # B/A of the round medians, seconds as measured
    normalised: stats.Interval  # B/A of the drift-normalised rounds: what is judged
    change: str  # SLOWER, FASTER or "" (the interval reaches inside the threshold)


def compare_rounds(
    a_rounds_s: list, b_rounds_s: list, a_normalised: list, b_normalised: list, threshold: float
) -> Change:
    """One case: raw and normalised B/A with their intervals. Marked when the whole normalised
    interval lies beyond the threshold and the raw change beyond it on the same side: a drift
    of the machine moves the raw figure alone, a passing disturbance of a reference workload
    the normalised one alone; a change of the code moves both. With fewer than
    RAW_VALUE_ROUNDS rounds a side the raw change's whole interval must clear the threshold
    too. Each list holds a run's rounds: a round's samples, or one number per round."""
    raw, normalised = stats.change(a_rounds_s, b_rounds_s), stats.change(a_normalised, b_normalised)
    judged = stats.verdict(normalised, threshold)
    judged_raw = raw
    if min(len(a_rounds_s), len(b_rounds_s)) >= RAW_VALUE_ROUNDS:
        judged_raw = stats.Interval(raw.value, raw.value, raw.value)
    return Change(raw, normalised, judged if stats.verdict(judged_raw, threshold) == judged else "")


def _rounds(row: pd.Series, column: str, side: str) -> list:
    values = row.get(f"{column}_{side}")
    return list(values) if isinstance(values, list) else []


def _raw(row: pd.Series, side: str) -> list:
    """Each round's samples (seconds), or each round's median where the run kept no more."""
    return _rounds(row, "round_samples_s", side) or _rounds(row, "round_medians_s", side)


def _normalised(row: pd.Series, side: str) -> list:
    """Each round's samples times that round's reference rate: the drift taken out. Where the
    two runs took different references (a case near the machine's balance), the raw rounds:
    GFLOP and GB are not to be divided by each other."""
    if row.get("drift_reference_a") != row.get("drift_reference_b"):
        return _raw(row, side)
    samples, rates = (
        _rounds(row, "round_samples_s", side),
        _rounds(row, "round_reference_rates", side),
    )
    if samples and len(rates) == len(samples):
        return [[s * rate for s in r] for r, rate in zip(samples, rates, strict=True)]
    return _rounds(row, "round_normalised", side)


TABLE_COLUMNS = [
    *CASE_COLUMNS,
    "status_a",
    "status_b",
    "median_a_s",
    "median_b_s",
    "raw_ratio",
    "raw_low",
    "raw_high",
    "ratio",
    "ratio_low",
    "ratio_high",
    "judged_by",  # BY_REFERENCE, or "ratio to" the baseline
    "change",
    "regression",
]


def compare_tables(
    a: pd.DataFrame,
    b: pd.DataFrame,
    threshold: float,
    judge: bool = True,
    baseline: str | None = None,
) -> pd.DataFrame:
    """One row per case the two runs share (matched on every case field).

    `ratio` is the B/A that is judged: of the case's ratio to `baseline` where both runs
    measured it and it did not change itself, else of the drift-normalised time (`judged_by`
    says which). `change` is SLOWER/FASTER/"" for cases ok in both (OTHER_MACHINE when `judge`
    is False); for a case whose status changed it says so ("now failed", "now ok", ...).
    `regression` is true for a slowdown whose whole interval is beyond the threshold, and for
    a case that was ok and now fails or disagrees.
    """
    keep = [*CASE_COLUMNS, "status", "median_s", "round_medians_s", "round_normalised"]
    keep += ["round_samples_s", "round_reference_rates", "drift_reference"]
    pairs_a, pairs_b = (baseline_pairs(run, baseline) if baseline else {} for run in (a, b))
    shared = a.reindex(columns=keep).merge(
        b.reindex(columns=keep), on=CASE_COLUMNS, suffixes=("_a", "_b")
    )
    rows = [compared_case(row, threshold, judge) for _, row in shared.iterrows()]
    if baseline:
        _confirm_baseline_changes(rows, baseline, threshold, pairs_a, pairs_b)
    unchanged = {_shape(_key(row)) for row in rows if row["impl"] == baseline and not row["change"]}
    for row in rows:
        key = _key(row)
        if _shape(key) in unchanged and key in pairs_a and key in pairs_b:
            _judge_by_baseline(row, stats.ratio_change(pairs_a[key], pairs_b[key]), threshold)
            row["judged_by"] = f"ratio to {baseline}"
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return table.sort_values(["impl", "dtype", "d", "n"]).reset_index(drop=True)


_IMPL = CASE_COLUMNS.index("impl")


def _key(row: dict) -> tuple:
    return tuple(row[c] for c in CASE_COLUMNS)


def _shape(key: tuple) -> tuple:
    """A case's fields but its implementation."""
    return (*key[:_IMPL], *key[_IMPL + 1 :])


def _confirm_baseline_changes(
    rows: list[dict], baseline: str, threshold: float, pairs_a: dict, pairs_b: dict
) -> None:
    """A change of the baseline's drift-normalised time counts only where its ratio to some
    implementation measured beside it (in the same turns) moved the same way beyond the
    threshold: a change of its code does, a drift of the machine that its reference workload
    missed moves them all alike. Where nothing was measured beside it, its own figure stands.
    pairs_a, pairs_b: baseline_pairs of each run."""
    for row in rows:
        if row["impl"] != baseline or row["change"] not in (SLOWER, FASTER):
            continue
        shape = _shape(_key(row))
        others = [
            stats.verdict(
                stats.ratio_change(_flipped(pairs_a[key]), _flipped(pairs_b[key])), threshold
            )
            for key in pairs_a.keys() & pairs_b.keys()
            if _shape(key) == shape
        ]
        if others and row["change"] not in others:
            row.update(change="", regression=False, judged_by=f"{BY_REFERENCE}, {NOT_BESIDE}")


def _flipped(pairs: list) -> list:
    """(the baseline's rounds, the case's): the baseline's ratio to the case."""
    return [(base, case) for case, base in pairs]


def _judge_by_baseline(row: dict, change: stats.Interval, threshold: float) -> None:
    verdict = stats.verdict(change, threshold)
    row.update(ratio=change.value, ratio_low=change.low, ratio_high=change.high)
    row.update(change=verdict, regression=verdict == SLOWER)


def baseline_pairs(frame: pd.DataFrame, baseline: str) -> dict[tuple, list]:
    """Each ok case's rounds, each paired with the same round of the baseline of its shape
    (they took turns in the same seconds), keyed by the case's fields; the baseline itself and
    cases whose rounds do not pair up are left out."""
    ok = frame[frame["status"] == "ok"]
    rounds = {_key(row): round_values(row) for _, row in ok.iterrows()}
    pairs = {}
    for key, case_rounds in rounds.items():
        base = rounds.get((*key[:_IMPL], baseline, *key[_IMPL + 1 :]))
        if key[_IMPL] != baseline and case_rounds and base and len(base) == len(case_rounds):
            pairs[key] = list(zip(case_rounds, base, strict=True))
    return pairs


def compared_case(row: pd.Series, threshold: float, judge: bool) -> dict:
    """One shared case (its A and B columns side by side) judged on its own: the change of a
    case ok in both, drift-normalised, else how its status moved."""
    out = {c: row[c] for c in CASE_COLUMNS}
    out.update(
        status_a=row["status_a"],
        status_b=row["status_b"],
        median_a_s=row["median_s_a"],
        median_b_s=row["median_s_b"],
    )
    if row["status_a"] == "ok" and row["status_b"] == "ok":
        change = compare_rounds(
            _raw(row, "a"), _raw(row, "b"), _normalised(row, "a"), _normalised(row, "b"), threshold
        )
        verdict = change.change if judge else OTHER_MACHINE
        out.update(
            raw_ratio=change.raw.value,
            raw_low=change.raw.low,
            raw_high=change.raw.high,
            ratio=change.normalised.value,
            ratio_low=change.normalised.low,
            ratio_high=change.normalised.high,
            judged_by=BY_REFERENCE,
            change=verdict,
            regression=verdict == SLOWER,
        )
    else:
        moved = row["status_a"] != row["status_b"]
        out.update(
            raw_ratio=math.nan,
            raw_low=math.nan,
            raw_high=math.nan,
            ratio=math.nan,
            ratio_low=math.nan,
            ratio_high=math.nan,
            judged_by="",
            change=f"now {row['status_b']}" if moved else row["status_b"],
            regression=row["status_a"] == "ok" and row["status_b"] in BROKEN,
        )
    return out


def differences(meta_a: dict, meta_b: dict) -> list[str]:
    """What differs between the runs' conditions, each a warning line."""
    lines = []
    if not same_machine(meta_a, meta_b):
        lines.append(
            f"warning: different machines ({_machine_text(meta_a)}; {_machine_text(meta_b)}): "
            "no case is judged"
        )
    if meta_a.get("threads") != meta_b.get("threads"):
        lines.append(f"warning: threads differ ({meta_a.get('threads')}, {meta_b.get('threads')})")
    versions_a, versions_b = meta_a.get("versions", {}), meta_b.get("versions", {})
    moved = sorted(
        f"{name} {versions_a.get(name)} -> {versions_b.get(name)}"
        for name in set(versions_a) | set(versions_b)
        if versions_a.get(name) != versions_b.get(name)
    )
    if moved:
        lines.append(f"warning: library versions differ: {', '.join(moved)}")
    env_a, env_b = meta_a.get("environment", {}), meta_b.get("environment", {})
    changed = sorted(k for k in set(env_a) | set(env_b) if env_a.get(k) != env_b.get(k))
    if changed:
        lines.append(f"warning: the environment differs in {', '.join(changed)}")
    method_a, method_b = meta_a.get("method", {}), meta_b.get("method", {})
    keys = sorted(k for k in set(method_a) | set(method_b) if method_a.get(k) != method_b.get(k))
    if keys:
        lines.append(f"warning: the method differs in {', '.join(keys)}")
    return lines


# What names a machine: its host name, and the CPU behind it (one host name can be given to
# VMs on different CPUs). A run from before cpu_signature was recorded lacks it on both sides
# or on one; then the other fields decide.
MACHINE_KEYS = ("id", "cpu", "cpu_signature")


def same_machine(meta_a: dict, meta_b: dict) -> bool:
    machine_a, machine_b = meta_a.get("machine", {}), meta_b.get("machine", {})
    return all(
        machine_a.get(key) == machine_b.get(key)
        for key in MACHINE_KEYS
        if key in machine_a and key in machine_b
    )


def _machine_text(meta: dict) -> str:
    machine = meta.get("machine", {})
    signature = machine.get("cpu_signature")
    return f"{machine.get('id')}: {machine.get('cpu')}" + (f" ({signature})" if signature else "")


def require_rounds(meta: dict, path) -> None:
    """compare needs each round's reference: refuse runs measured before it was recorded."""
    if "migrated_from" in meta:
        raise RunDirError(
            f"{path}: measured by an older attnbench (schema {meta['migrated_from']}), without "
            "a reference workload per round, so its cases cannot be compared with the drift "
            f"removed; measure it again with: {meta.get('command', 'attnbench run ...')}"
        )


def unshared(a: pd.DataFrame, b: pd.DataFrame) -> tuple[int, int]:
    """How many cases only A has, and how many only B has."""
    keys_a = set(map(tuple, a[CASE_COLUMNS].to_numpy().tolist()))
    keys_b = set(map(tuple, b[CASE_COLUMNS].to_numpy().tolist()))
    return len(keys_a - keys_b), len(keys_b - keys_a)
