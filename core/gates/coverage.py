"""Reading a coverage percentage out of a coverage tool's output."""

from __future__ import annotations

import re

_PATTERNS = (
    # coverage.py / pytest-cov report: "TOTAL   120   14   88%" (also with branch columns)
    re.compile(r"^TOTAL\s.*?(\d+(?:\.\d+)?)%\s*$", re.MULTILINE),
    # istanbul / nyc / c8 / jest text table: "All files | 87.5 | 80 | 90 | 88.1 |" (Lines column)
    re.compile(r"^All files\s*\|[^|]*\|[^|]*\|[^|]*\|\s*(\d+(?:\.\d+)?)\s*\|", re.MULTILINE),
    # generic lines: "coverage: 87%", "Total coverage: 91.07%", go's "coverage: 80.0% of statements"
    re.compile(r"coverage\s*[:=]?\s*(\d+(?:\.\d+)?)\s*%", re.IGNORECASE),
)


def parse_coverage(output: str) -> float | None:
    """The total coverage percentage in ``output`` (the last one reported), or None."""
    for pattern in _PATTERNS:
        matches = pattern.findall(output)
        if matches:
            value = float(matches[-1])
            if 0.0 <= value <= 100.0:
                return value
    return None
