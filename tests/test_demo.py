"""The embedded default: `make demo` on SQLite with an in-process worker, no services."""

from __future__ import annotations

import os
import re
import subprocess

from tests.conftest import ROOT


def test_make_demo_runs_the_demo_agent_to_completion(tmp_path):
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL"}
    }
    environment["AGENTFLOW_VAR_DIR"] = str(tmp_path)
    result = subprocess.run(
        ["make", "--no-print-directory", "demo", "DEMO_ARGS=--once"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert (tmp_path / "agentflow.sqlite3").exists()  # the embedded database, not PostgreSQL
    assert "created the admin user" in output
    assert "run.succeeded" in output
    # The payment over 250 waited for a person; --once approves it as the admin user.
    assert re.search(r"waiting for approval: Pay INV-\d+: \d+\.\d\d\n", output), output
    assert "--once: approved by the demo's admin user" in output
    assert '"total_paid": "477.75"' in output
    assert '"INV-2023": "paid twice"' in output and '"to_refund": [\n    "INV-2023"\n  ]' in output
    # Each mismatch explained by the model, and the brief written by it: the scripted
    # stand-in, labelled as such.
    assert output.count('"model": "scripted:demo"') == 5 + 1
    assert "INV-2017 (Globex, 145.00) is short-paid" in output
    # Then the research brief: FTS5 search on SQLite, three notes read at once, cited.
    assert "starting research.brief on 'durable execution and replay'" in output
    assert '"kind": "parallel", "name": "parallel", "children": 3' in output
    assert "Brief: durable execution and replay\n\n- " in output
    assert len(re.findall(r"^- .+\. \[\d+\]$", output, flags=re.MULTILINE)) == 3
