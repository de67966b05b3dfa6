"""What the tasks show people: self-contained HTML reports (score, retrieval) and the probe's and zero-shot's outputs.

    page        the page every report is: inline styles and thumbnails, the marker, links to videos
    score       the score report: pages of video groups, failures first, sortable
    retrieval   the retrieval report: metrics, the R@K curve, queries with their top videos
    captioning  the captioning report: metrics, videos worst CIDEr-D first with their caption and references
    classification  a classifier's per-video outputs (probe, zeroshot): predictions and per-class CSVs, confusion
    probe       the probe's metrics, tables and plots
"""

from .captioning import write_captioning_report
from .page import REPORT_MARKER, is_our_report
from .probe import ProbeResult, write_probe_outputs
from .retrieval import write_retrieval_report
from .score import page_count, report_page_paths, write_score_report

__all__ = [
    "REPORT_MARKER", "ProbeResult", "is_our_report", "page_count", "report_page_paths", "write_captioning_report",
    "write_probe_outputs", "write_retrieval_report", "write_score_report",
]
