"""The child end of a worker's pipe: set the threads, then answer each request until told to stop.

The parent end is harness/sweep/pool.py; a request is a dict, and so is each answer.
"""

from __future__ import annotations

import multiprocessing
import os
import signal

from harness.results.cases import Case
from harness.worker.threads import set_threads, settle, thread_environment, threading_report
from harness.worker.timing import SamplingPlan


def serve(conn, threads: int, environ: dict[str, str]) -> None:
    """The worker's loop: set threads, then answer each request until told to stop.

    Requests: open a round of a case (its first, or a later one: `HeldCase`), a turn of its
    samples, close it; or the reference workloads (`probe`: matrix products and streaming
    reads).
    """
    # Here, not at the top: the main process imports this module for its entry point, and
    # has no use for the measuring code and its numba kernels.
    from harness.worker.measure import HeldCase

    # The main process's environment as it is now, not as it was when the server started
    # (ATTNBENCH_IMPLS_PATH, for one, is read when the registry is first used, here).
    os.environ.clear()
    os.environ.update(environ)
    # Ctrl-C reaches the whole process group: the main process decides, workers just end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker never starts processes; said so, numba guards its thread-pool start with no
    # process lock, which a killed worker would leave behind as a leaked semaphore.
    multiprocessing.set_start_method("spawn", force=True)
    os.environ.update(thread_environment(threads))  # for pools created from here on (torch's)
    set_threads(threads)  # and the ones that exist already, at run time
    if not _answer(conn, {"pid": os.getpid()}):
        return
    while True:
        try:
            message = conn.recv()
        except (EOFError, ConnectionResetError):  # the main process is gone (its end of
            return  # the pipe closed, or reset as it exited): nothing left to measure for
        if message is None:
            return
        if "probe_dtype" in message:
            reply = _probe(message)
        elif "open" in message:
            case, plan = Case(**message["open"]), SamplingPlan(**message["plan"])
            held = HeldCase(case, plan, message["budget_s"], message["seed"], message["inner"])
            reply = held.open()
        elif "turn_s" in message:
            reply = held.turn(message["turn_s"], message["max_samples"])
        else:  # "close"
            reply = held.close()
            if held.first_round:
                reply["threading"] = threading_report()
        # (A case's worker is killed after its round: no pool spins on.)
        if not _answer(conn, reply):
            return


def _probe(message: dict) -> dict:
    """The reference workloads: matrix products, streaming reads, and reads of a case's bytes."""
    from harness.worker.references import gemm_rates, read_rates, stream_rates

    repeats = message["repeats"]
    reply = {
        "gemm_rates": gemm_rates(message["probe_dtype"], message["size"], repeats),
        "stream_gbps": stream_rates(message["stream_bytes"], repeats),
    }
    if message["case_bytes"]:
        settle()  # the products' BLAS threads spin on: they would share the reads' cores
        reply["bandwidth_gbps"] = read_rates(message["case_bytes"], repeats, message["cold_cache"])
    settle()  # this worker lives on: quiet before the next one's samples
    return reply


def _answer(conn, reply: dict) -> bool:
    """Send, or say that the main process is gone (a SIGTERM between its request and this
    answer): the worker then ends quietly, with no traceback on the user's terminal."""
    try:
        conn.send(reply)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True
