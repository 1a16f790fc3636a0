"""Each step's peak resident memory is its own, not an earlier step's, and reaches the summary."""

from pathlib import Path

import pytest
from nlprec.core.memory import PeakMemory
from nlprec.core.runner import Runner
from nlprec.core.spec import load_pipeline

PIPELINE = """
name: memory
experiment: memory-tests
steps:
  - name: big
    uses: steps_for_tests:allocate
    with: {mb: 400}
  - name: small
    uses: steps_for_tests:allocate
    needs: [big]
    with: {mb: 10}
"""


@pytest.mark.skipif(not PeakMemory.start().exact, reason="needs Linux /proc/self/clear_refs")
def test_each_step_reports_its_own_peak(nlprec_env, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    path = nlprec_env / "memory.yaml"
    path.write_text(PIPELINE)
    summary = Runner(track=False).run(load_pipeline(path, []))
    big = summary.steps["big"].memory["peak_rss_mb"]
    small = summary.steps["small"].memory["peak_rss_mb"]
    assert big - small > 300  # the 400 MB block counts in the step that touched it only
    assert summary.to_json()["steps"]["big"]["memory"]["peak_rss_mb"] == big
