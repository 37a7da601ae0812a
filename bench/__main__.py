"""Run every benchmark, each in its own process, and print one table of ratios and goals.

    python -m bench [--steps 5500] [--workflows 300]

Each system runs in a fresh process on a fresh PostgreSQL database of this machine, in
the same invocation, so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(module: str, *args: int) -> dict[str, float]:
    print(f"  running {module} {' '.join(map(str, args))} ...", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode or not lines:
        sys.exit(f"{module} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("BENCH "))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=5500, help="length of the long run")
    parser.add_argument("--workflows", type=int, default=300, help="how many 3-step runs")
    parser.add_argument("--window", type=int, default=400, help="steps per cost window")
    parser.add_argument("--fan-out", type=int, default=1000, help="calls in the fan-out benchmark")
    parser.add_argument("--repeats", type=int, default=3, help="fan-out repetitions (median)")
    parser.add_argument("--rated", type=int, default=300, help="calls in the rate-limit run")
    parser.add_argument("--ws-events", type=int, default=1000, help="events per websocket scenario")
    parser.add_argument("--run-page", type=int, default=5000, help="steps of the run page runs")
    options = parser.parse_args()
    early, late = 100, options.steps - options.window
    print("per-step overhead on PostgreSQL")
    r: dict[str, float] = {}
    r |= measure("bench.floor", options.steps)
    r |= measure(
        "bench.agentflow_steps", options.steps, options.workflows, early, late, options.window
    )
    r |= measure("bench.dbos_steps", options.steps, options.workflows, early)
    print("fan-out and rate limits on 2 workers x 4 processes, Redis broker and backend")
    r |= measure("bench.fanout", options.fan_out, options.repeats, options.rated)
    print("websocket event latency through daphne and the Redis channel layer")
    r |= measure("bench.websocket_latency", options.ws_events)
    print("the admin run page")
    r |= measure("bench.run_page", options.run_page, 5)

    rows = [
        ("raw INSERT, autocommit (floor)", r["floor_insert"], None, None),
        ("agentflow ctx.step, long run", r["agentflow_step"], None, None),
        ("agentflow 3-step run, per step", r["agentflow_three"], None, None),
        ("DBOS step, long workflow", r["dbos_step"], None, None),
        ("DBOS 3-step workflow, per step", r["dbos_three"], None, None),
        (f"agentflow ctx.step at step {early}", r["agentflow_step_early"], None, None),
        (f"agentflow ctx.step at step {late}", r["agentflow_step_late"], None, None),
    ]
    seconds = [
        (f"raw Celery chord of {options.fan_out} no-ops + callback", r["raw_chord_s"]),
        (f"agentflow ctx.map of {options.fan_out} no-op tools", r["agentflow_fan_out_s"]),
    ]
    ratios = [
        ("ctx.step / raw INSERT", r["agentflow_step"] / r["floor_insert"], 4.0),
        ("ctx.step / DBOS 3-step workflow step", r["agentflow_step"] / r["dbos_three"], 0.35),
        ("ctx.step / DBOS step (long workflows)", r["agentflow_step"] / r["dbos_step"], None),
        ("3-step run / DBOS 3-step workflow", r["agentflow_three"] / r["dbos_three"], None),
        (f"step {late} / step {early}", r["agentflow_step_late"] / r["agentflow_step_early"], 1.2),
        ("ctx.map / raw chord", r["agentflow_fan_out_s"] / r["raw_chord_s"], 1.3),
    ]
    print()
    print(f"{'measurement':<44}{'ms/step':>10}")
    print("-" * 54)
    for name, value, *_ in rows:
        print(f"{name:<44}{value:>10.3f}")
    print()
    print(f"{'measurement':<44}{'seconds':>10}")
    print("-" * 54)
    for name, value in seconds:
        print(f"{name:<44}{value:>10.3f}")
    print()
    print(f"{'ratio':<44}{'value':>8}{'goal':>9}  result")
    print("-" * 70)
    failed = False
    for name, value, goal in ratios:
        verdict = "" if goal is None else ("met" if value <= goal else "MISSED")
        failed |= verdict == "MISSED"
        goal_text = "" if goal is None else f"<= {goal:g}"
        print(f"{name:<44}{value:>8.2f}{goal_text:>9}  {verdict}")
    utilisation = r["rate_utilisation"]
    over = int(r["rate_windows_over"])
    print(
        f"{'rate-limit utilisation (20/s)':<44}{utilisation:>8.0%}{'>= 90%':>9}  "
        f"{'met' if utilisation >= 0.9 else 'MISSED'}"
    )
    verdict = "met" if over == 0 else "MISSED"
    print(f"{'1-second windows over 20 starts':<44}{over:>8}{'0':>9}  {verdict}")
    failed |= utilisation < 0.9 or over > 0
    # Paced runs step slower than the 20 frames/s pacing; a burst waits for its batch frame.
    latencies = [
        ("websocket latency p50, paced (ms)", r["ws_paced_p50_ms"], 20.0),
        ("websocket latency p99, paced (ms)", r["ws_paced_p99_ms"], 100.0),
        ("websocket latency p50, burst (ms)", r["ws_burst_p50_ms"], None),
        ("websocket latency p99, burst (ms)", r["ws_burst_p99_ms"], 100.0),
    ]
    for name, value, goal in latencies:
        verdict = "" if goal is None else ("met" if value < goal else "MISSED")
        failed |= verdict == "MISSED"
        goal_text = "" if goal is None else f"< {goal:g}"
        print(f"{name:<44}{value:>8.1f}{goal_text:>9}  {verdict}")
    pages = [
        ("run page, 50 steps", "run_page_50"),
        (f"run page, {options.run_page} steps", "run_page_steps"),
        (f"run page, fan-out of {options.run_page}", "run_page_fan_out"),
    ]
    bounded = len({r[f"{key}_queries"] for _, key in pages}) == 1
    for name, key in pages:
        seconds_taken, queries = r[f"{key}_s"], int(r[f"{key}_queries"])
        verdict = "met" if seconds_taken < 0.5 and bounded else "MISSED"
        failed |= verdict == "MISSED"
        print(f"{name + f' ({queries} queries)':<44}{seconds_taken:>7.3f}s{'< 0.5s':>9}  {verdict}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
