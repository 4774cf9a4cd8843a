"""Presentation: figures, the report (report.md and a self-contained report.html), the compare
command's output and the terminal's tables. Reads the analysis; decides nothing about the data."""
