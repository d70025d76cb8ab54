"""The fault campaign (see campaign.py), sized by environment variables.

- `PLACEOS_CAMPAIGN_FAULTS`: number of faults (default 30: the size `scripts/test` runs);
  `scripts/reliability` runs 300.
- `PLACEOS_CAMPAIGN_SEED`: the seed of fault order, moments, values and fuzz frames.
- `PLACEOS_CAMPAIGN_KINDS`: comma-separated fault kinds to run (default: all), for digging
  into one kind.
- `PLACEOS_CAMPAIGN_TRACE_TOP`: list the N source lines whose retained memory grew most
  (tracemalloc snapshots; adds a few seconds).
- `PLACEOS_CAMPAIGN_REPORT`: a file to write the report to (per-kind lines, then the summary
  line last); `scripts/reliability` prints it.
"""

from __future__ import annotations

import os
from pathlib import Path

from homeassistant.core import HomeAssistant

from placeos_sim import PlaceOSSimulator

from .campaign import FAULT_KINDS, Campaign

DEFAULT_FAULTS = 30
DEFAULT_SEED = 20261203
# Retained memory allowed to grow after the warm-up. The harness itself keeps a little per
# fault (the simulator's request log fills up to 1000 entries, mock call records, the
# campaign's own results), about 1-2 KiB; one leaked connection or value per fault would be
# tens of KiB to megabytes.
MEMORY_BASE_KIB = 1024
MEMORY_PER_FAULT_KIB = 4


async def test_fault_campaign(hass: HomeAssistant, sim: PlaceOSSimulator) -> None:
    """Every fault is recovered from with fresh values, quietly, and nothing is left behind."""
    faults = int(os.environ.get("PLACEOS_CAMPAIGN_FAULTS", DEFAULT_FAULTS))
    seed = int(os.environ.get("PLACEOS_CAMPAIGN_SEED", DEFAULT_SEED))
    kinds = (
        tuple(os.environ.get("PLACEOS_CAMPAIGN_KINDS", "").split(","))
        if os.environ.get("PLACEOS_CAMPAIGN_KINDS")
        else FAULT_KINDS
    )
    unknown = set(kinds) - set(FAULT_KINDS)
    assert not unknown, f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}"
    trace_top = int(os.environ.get("PLACEOS_CAMPAIGN_TRACE_TOP", "0"))
    campaign = Campaign(hass, sim, faults=faults, seed=seed, kinds=kinds, trace_top=trace_top)
    summary = await campaign.run()
    report = summary.report(seed)
    if path := os.environ.get("PLACEOS_CAMPAIGN_REPORT"):
        Path(path).write_text(report + "\n", encoding="utf-8")

    assert summary.faults == faults, report
    assert summary.recovered == faults, report
    assert summary.stale_after_recovery == 0, report
    assert summary.lost_final_values == 0, report
    assert summary.unhandled_exceptions == 0, report
    assert summary.max_error_lines_per_outage == 0, report
    assert summary.leaked_tasks == 0, report
    assert summary.secret_leaks == 0, report
    assert summary.memory_growth_kib <= MEMORY_BASE_KIB + MEMORY_PER_FAULT_KIB * faults, report
