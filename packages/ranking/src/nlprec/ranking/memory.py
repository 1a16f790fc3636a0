"""Peak resident memory of this process, resettable per pipeline step (Linux).

``VmHWM`` in /proc/self/status is the process's resident high-water mark; writing ``5`` to
/proc/self/clear_refs resets it to the current resident size (Linux >= 4.0). Where /proc is
missing the peak is ``getrusage``'s lifetime maximum (never reset).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_rss() -> bool:
    """Start a new high-water mark; False where the platform cannot."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """The resident high-water mark since the last reset, in MiB."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB else
