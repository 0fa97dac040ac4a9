"""The verification benchmarks faceflow knows (the `.bin` files InsightFace datasets ship), in report order.

The one list: the workflow schema's benchmark enum, the `{bench}` wildcard, `export.checkpoint: best:NAME`,
the synthetic dataset's files and the report's column titles all come from here.
"""
from __future__ import annotations

import re

# name -> display title; the order is the seed's column order (LFW, CFP-FP, AgeDB-30)
BENCHMARK_TITLES: dict[str, str] = {"lfw": "LFW", "cfp_fp": "CFP-FP", "agedb_30": "AgeDB-30"}
BENCHMARKS: tuple[str, ...] = tuple(BENCHMARK_TITLES)


def benchmark_pattern() -> str:
    """A regular expression matching exactly one benchmark name (`lfw|cfp_fp|agedb_30`)."""
    return "|".join(re.escape(name) for name in BENCHMARKS)
