"""The workflow report: accuracy.csv, report.md (the seed's table) and a self-contained report.html."""
