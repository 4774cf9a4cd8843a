"""Progress of a sweep: a live bar on a terminal, a line per finished round elsewhere."""

from __future__ import annotations

import sys

from harness.results.cases import Case


class Progress:
    """A live bar on a terminal; plain lines elsewhere (logs, CI)."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stdout
        self.total, self.done = total, 0
        self.bar = None
        if self.stream.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self.bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("starting", total=total)
            self.bar.start()

    def start(self, case: Case) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=describe(case))

    def finish(self, case: Case, row: dict, steps: int = 1) -> None:
        """A round of a case measured (or `steps` rounds settled at once: skipped, failed)."""
        self.done += steps
        line = f"[{self.done}/{self.total}] {describe(case)}: {summary(row)}"
        if self.bar is not None:
            self.bar.console.print(line, highlight=False, markup=False)
            self.bar.advance(self.task, steps)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def describe(case: Case) -> str:
    shape = f"n={case.n} d={case.d} {case.dtype}"
    if case.n_q != case.n:
        shape += f" n_q={case.n_q}"
    if case.batch > 1 or case.heads > 1:
        shape += f" B={case.batch} H={case.heads}"
    if case.kv_heads != case.heads:
        shape += f" H_kv={case.kv_heads}"
    return f"{case.impl} {shape}" + (" causal" if case.causal else "")


def summary(row: dict) -> str:
    if row["status"] in ("ok", "disagrees") and row.get("median_s") is not None:
        text = f"{row['median_s'] * 1e3:.4g} ms"
        if row.get("bound") == "memory":
            text += f", {row['gbps']:.3g} GB/s ({row['bandwidth_fraction']:.0%} of a read)"
        elif row.get("gflops"):
            text += f", {row['gflops']:.3g} GFLOP/s"
        if row.get("ratio") is not None and row["impl"] != row.get("baseline"):
            text += (
                f", {row['ratio']:.3g}x [{row['ratio_low']:.3g}, {row['ratio_high']:.3g}] of "
                f"{row['baseline']}'s time, {row['rounds']} round{'s' * (row['rounds'] != 1)}"
            )
        return text if row["status"] == "ok" else f"DISAGREES ({row['note']}); {text}"
    return f"{row['status']}: {row.get('note', '')}"
