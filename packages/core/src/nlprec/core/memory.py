"""Peak resident memory of one step, for the run summary.

`ru_maxrss` only ever grows over a process's life, so alone it cannot tell one step's peak from an
earlier step's. Linux lets a process reset its own high-water mark: writing ``5`` to
``/proc/self/clear_refs`` sets ``VmHWM`` (``/proc/self/status``) back to the current resident size.
A step's peak is then ``VmHWM`` read when it ends. Children a step starts (torchrun workers) are
measured by ``RUSAGE_CHILDREN``, which cannot be reset: it is reported only when it grew during the
step, and it is the largest child's peak, not their sum.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _high_water_kib() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _children_kib() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


@dataclass
class PeakMemory:
    """Started before a step runs; `peak_mb()` after it gives the step's own peak."""

    exact: bool = False
    children_kib: int = 0

    @classmethod
    def start(cls) -> PeakMemory:
        try:
            _CLEAR_REFS.write_text("5")
            exact = _high_water_kib() is not None
        except OSError:
            exact = False
        return cls(exact=exact, children_kib=_children_kib())

    def peak_mb(self) -> dict[str, float]:
        """``peak_rss_mb`` (this process; where the mark cannot be reset, the process's peak so far,
        flagged by ``peak_rss_since_start``) and ``children_peak_rss_mb`` when a child grew it."""
        own = _high_water_kib() if self.exact else None
        result = {"peak_rss_mb": round((own if own is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024, 1)}
        if own is None:
            result["peak_rss_since_start"] = 1.0
        children = _children_kib()
        if children > self.children_kib:
            result["children_peak_rss_mb"] = round(children / 1024, 1)
        return result
