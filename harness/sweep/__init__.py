"""The main process of `attnbench run`: every case of the grid, in rounds of fresh worker
processes, results kept at once.

Round by round over the whole grid (as asv does): round 1 of every shape, dtype, d, then n
ascending, then round 2 of every shape, and so on. Within a round each implementation of a shape
is prepared in a fresh worker process of its own, after the reference workloads of that round
(matrix products, streaming reads) in a probe worker; then the workers take turns of 0.05 s
(pool.TURN_S), each quiet while the others sample, until each has its share. So:
- two implementations' samples of a round come from the same seconds of the machine (not from
  one second and the next, when the shared machine's speed may have moved), their thread pools
  never run at once, and their ratio's interval resamples whole rounds
  (harness/analysis/stats.py);
- a case's rounds are minutes apart, in different phases of a shared machine, and in different
  processes (allocation, alignment, thread placement): what varies between them is inside the
  intervals, not hidden in one good or bad minute;
- each round is also expressed in units of its reference workload (`round_normalised`), which
  drifts with the machine, so that runs taken at different speeds can be compared;
- each shape's rows are written after each of its rounds (the last record of a case counts),
  so an interruption loses no round already measured.
A case's time is predicted from the same implementation's smaller cases (or a quick calibration
at small n): a case predicted over budget is skipped with its prediction instead of burning
minutes.
"""
