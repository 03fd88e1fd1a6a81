"""Results files, Markdown tables and plots for cldf runs."""

from cldf.report.plots import plot_average_auc, plot_forgetting, plot_matrix
from cldf.report.report import write_report
from cldf.report.results import (
    ResultsError,
    build_results,
    group_runs,
    load_results,
    package_versions,
    result_matrix,
    validate_results,
    write_results,
)
from cldf.report.tables import markdown_table

__all__ = [
    "ResultsError",
    "build_results",
    "group_runs",
    "load_results",
    "markdown_table",
    "package_versions",
    "plot_average_auc",
    "plot_forgetting",
    "plot_matrix",
    "result_matrix",
    "validate_results",
    "write_report",
    "write_results",
]
