"""Reports: results folders -> tables (md/tex/csv), figures (png/svg), index.html, report.pdf.

``harness report RESULTS_DIR [...] --out reports/NAME`` is :func:`render_report`.
"""

from harness.report.collect import Results, collect
from harness.report.render import Report, render_report

__all__ = ["Results", "Report", "collect", "render_report"]
