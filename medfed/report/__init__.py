"""Per-site reports over a run directory: CIs, paired comparisons, across-site summaries, one HTML page.

``write_report(["reports/demo_chest_xray"])`` writes report.html, per_site.csv, comparisons.csv,
summary.json and summary.md. Statistics come from :mod:`medfed.stats`; this package reads, formats, plots.
"""

from medfed.fl.names import REPORT_FILES
from medfed.report.analysis import Analysis, ReportOptions, analyse
from medfed.report.run_data import RunData, load_run, merge_runs
from medfed.report.writer import ReportResult, write_report

__all__ = [
    "REPORT_FILES", "Analysis", "ReportOptions", "ReportResult", "RunData", "analyse", "load_run", "merge_runs",
    "write_report",
]
