"""The worker process: measures one round of one case, in turns with the workers of the shape's
other implementations, or the reference workloads, and answers.

Isolation keeps numba's, OpenBLAS's and torch's thread pools from slowing each other (up to 4x
on this kind of machine), and lets a crash, a hang or a leak take down only the worker.

Workers are forked from a server process (multiprocessing's forkserver) that has imported NumPy,
numba and the harness but has run nothing: a new worker starts in a few hundredths of a second
instead of the half second a fresh interpreter takes to import them, which matters when every
round of every case gets a fresh worker. Each worker still builds its own thread pools, loads
its own compiled kernels and allocates its own arrays. The server never touches a GPU, so CUDA
is first initialised in the worker that uses it.
"""
