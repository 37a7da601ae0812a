"""The overview and the waterfall on SQLite, which the demo runs on: a process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

from tests.conftest import ROOT


def test_the_overview_and_the_waterfall_render_on_sqlite(tmp_path):
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL"}
    }
    environment["AGENTFLOW_VAR_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "tests.sqlite_charts"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    found = json.loads(lines[-1].removeprefix("RESULT "))
    assert found["vendor"] == "sqlite"
    assert found["overview_status"] == found["page_status"] == 200
    assert found["total_all"] == 7 and found["total"] == 6  # all agents; agent "sq"
    # Runs took 1, 2, 3, 4, 10 and 100 s; their steps 1 to 6 s: as percentile_cont has it.
    assert found["durations"] == {
        "p50-run": "3.5 s",
        "p95-run": "1 min 17 s",
        "p50-step": "3.5 s",
        "p95-step": "5.8 s",
    }
    assert Decimal(found["cost"]) == Decimal(3)
    assert found["approvals"] == ["1", "0", "0", "0"]
    assert found["waterfall_rows"] == 2  # the run and its fan-out
    assert 1 <= found["density_cells"] <= 120
