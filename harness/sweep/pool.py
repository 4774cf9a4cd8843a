"""The sweep's worker processes, seen from the main process: the parent end of each pipe.

Workers are forked from a server process (multiprocessing's forkserver) that has imported NumPy,
numba and the measuring code but has run nothing (see harness/worker/). A lost worker (a crash,
a hang past its timeout) raises WorkerLost, whose message is the reason for the case's row.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import time
from dataclasses import asdict, dataclass, field

from harness.cli.config import SweepConfig
from harness.results.cases import Case
from harness.worker.serve import serve
from harness.worker.threads import thread_environment
from harness.worker.timing import SamplingPlan

STARTUP_TIMEOUT_S = 120.0
PRELOAD = ["numpy", "numba", "harness.worker.measure"]  # imported once, in the server
# A round's turns: each worker samples for TURN_S, then waits while the others take theirs;
# at least MIN_TURNS turns each where the round's target allows.
TURN_S = 0.05
MIN_TURNS = 3


class WorkerLost(Exception):
    """The worker died or stopped answering; the message is the reason for the case's row."""


def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


@contextlib.contextmanager
def _interruptions_deferred():
    """SIGINT and SIGTERM held back while the server forks a worker, delivered right after: an
    interruption in the middle of the request left the server reading half a message, and it
    printed a traceback under the sweep's own message. The server is started first, outside,
    so that it and its workers do not inherit the held-back signals."""
    multiprocessing.forkserver.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Worker:
    def __init__(self, threads: int):
        context = _context()
        self.conn, child_conn = context.Pipe()
        saved = {k: os.environ.get(k) for k in thread_environment(threads)}
        os.environ.update(thread_environment(threads))  # the server's, when this starts it
        try:
            self.process = context.Process(
                target=serve, args=(child_conn, threads, dict(os.environ)), daemon=True
            )
            with _interruptions_deferred():
                self.process.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        child_conn.close()
        self.pid = self._receive(STARTUP_TIMEOUT_S)["pid"]

    def _receive(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while not self.conn.poll(0.05):
            if not self.process.is_alive():
                break
            if time.monotonic() > deadline:
                self.kill()
                raise WorkerLost(f"timeout: no answer within {timeout_s:g} s; worker killed")
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise WorkerLost(self._death()) from None

    def _death(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "worker stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"worker crashed: killed by {name}"
        return f"worker exited with status {code}"

    def _send(self, message) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):  # it died while idle
            self.process.join(5)
            raise WorkerLost(self._death()) from None

    def open(
        self,
        case: Case,
        plan: SamplingPlan,
        budget_s: float,
        seed: int,
        timeout_s: float,
        inner: int | None = None,
    ) -> dict:
        """Prepare a round of `case`: its first (inner None: compile, check) or a later one, of
        samples of `inner` calls. The reply has "ready" where samples may follow."""
        message = {"open": case.to_dict(), "plan": asdict(plan), "budget_s": budget_s}
        self._send({**message, "seed": seed, "inner": inner})
        return self._receive(timeout_s)

    def turn(self, turn_s: float, max_samples: int, timeout_s: float) -> dict:
        """Samples for turn_s seconds ("samples"), or the case's failure."""
        self._send({"turn_s": turn_s, "max_samples": max_samples})
        return self._receive(timeout_s)

    def close_round(self, timeout_s: float) -> dict:
        """The round's last figures (the first round's compile time and memory)."""
        self._send({"close": True})
        return self._receive(timeout_s)

    def probe(
        self,
        dtype: str,
        size: int,
        repeats: int,
        stream_bytes: int,
        case_bytes: int = 0,
        cold_cache: bool = False,
    ) -> dict:
        """The reference workloads in this worker: `gemm_rates` (GFLOP/s of size^3 products)
        and `stream_gbps` (GB/s of one-thread streaming reads of stream_bytes), `repeats` of
        each; with case_bytes, `bandwidth_gbps` (reads of that many bytes by every thread, in
        the sweep's cache state)."""
        message = {"probe_dtype": dtype, "size": size, "repeats": repeats}
        message.update(stream_bytes=stream_bytes, case_bytes=case_bytes, cold_cache=cold_cache)
        self._send(message)
        return self._receive(STARTUP_TIMEOUT_S)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # already gone
            self.conn.send(None)
        self.process.join(10)
        self.kill()
        self.conn.close()


@dataclass
class Workers:
    """The sweep's processes: a fresh one for every round of every case, and the probe."""

    threads: int
    timeout_s: float
    held: dict[Case, Worker] = field(default_factory=dict)
    probe_worker: Worker | None = None

    def round(
        self, cases: list[Case], plan: SamplingPlan, config: SweepConfig, inners: dict
    ) -> dict[Case, dict]:
        """One round of a shape's cases, each in a new worker, their samples taken in turns:
        each worker in turn samples for TURN_S while the others wait, quiet, until every case
        has plan.min_samples and plan.target_s of samples. The cases' samples so come from
        the same seconds of the machine, and the processes from one round to the next. A lost
        worker fails its case only; workers are killed afterwards (they hold nothing worth a
        clean exit, and an exit's teardown would take CPU from the next worker's samples)."""
        replies: dict[Case, dict] = {}
        try:
            for case in cases:
                replies[case] = self._open(case, plan, config, inners[case])
            samples = {case: [] for case in self.held}
            inner = {case: inners[case] or replies[case]["inner_repeats"] for case in self.held}
            turn_s = min(TURN_S, plan.target_s / MIN_TURNS)
            while wanting := [c for c in self.held if not _enough(samples[c], plan, inner[c])]:
                for case in wanting:
                    left = plan.max_samples - len(samples[case])
                    reply = self._ask(case, "turn", turn_s, left, self.timeout_s)
                    if "samples" in reply:
                        samples[case] += reply["samples"]
                    else:
                        replies[case] = {**replies[case], **reply}
            for case in list(self.held):
                reply = self._ask(case, "close_round", self.timeout_s)
                replies[case] = {**replies[case], **reply}
                if reply.get("status") != "failed":
                    replies[case]["round_samples_s"] = samples[case]
        finally:
            for worker in self.held.values():
                worker.kill()
            self.held.clear()
        for reply in replies.values():
            reply.pop("ready", None)
        return replies

    def _open(self, case: Case, plan: SamplingPlan, config: SweepConfig, inner) -> dict:
        """A new worker prepares `case`; held for its turns if ready, else killed. (Held from
        its start: an interruption kills it with the others.)"""
        try:
            self.held[case] = Worker(self.threads)
            reply = self.held[case].open(
                case, plan, config.budget_s, config.seed, self.timeout_s, inner
            )
        except WorkerLost as lost:
            reply = lost_row(lost)
        if not reply.get("ready") and case in self.held:
            self.held.pop(case).kill()
        return reply

    def _ask(self, case: Case, request: str, *args) -> dict:
        """A request (a Worker method) of a held case's worker; a failure or a lost worker ends
        its case."""
        try:
            reply = getattr(self.held[case], request)(*args)
        except WorkerLost as lost:
            reply = lost_row(lost)
        if reply.get("status") == "failed":
            self.held.pop(case).kill()
        return reply

    def probe(self, *request) -> dict | None:
        """A round's reference workloads (Worker.probe's arguments) in the probe worker, which
        lives from round to round; None if it was lost (the round then has no reference, and
        the shape falls back to the run's start)."""
        try:
            if self.probe_worker is None:
                self.probe_worker = Worker(self.threads)
            return self.probe_worker.probe(*request)
        except WorkerLost:
            self.probe_worker = None
            return None

    def kill(self) -> None:
        for worker in [*self.held.values(), self.probe_worker]:
            if worker is not None:
                worker.kill()

    def close(self) -> None:
        if self.probe_worker is not None:
            self.probe_worker.close()


def _enough(samples: list[float], plan: SamplingPlan, inner: int) -> bool:
    """A case's round is done with min_samples and target_s of samples, or max_samples."""
    if len(samples) >= plan.max_samples:
        return True
    return len(samples) >= plan.min_samples and sum(samples) * inner >= plan.target_s


def lost_row(lost: WorkerLost) -> dict:
    return {"status": "failed", "note": str(lost), "worker_lost": True}
