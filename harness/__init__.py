"""attnbench's harness, a package per stage of a run: cli (the command), sweep (the main
process), worker (the measuring process), results, analysis and present."""
