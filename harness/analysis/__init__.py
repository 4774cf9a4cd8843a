"""Analysis: the runs as one table, and what it says, with intervals from whole rounds: ratios
to a baseline, summaries and findings of one run, changes from one run to another. Pure: tables
in, tables and sentences out."""
