"""What every benchmark process shares: its databases and how it reports."""

from __future__ import annotations

import json
import os
import statistics
import sys

import psycopg

SERVER = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def fresh_database(name: str) -> str:
    """Drop and create database ``name``; return its URL."""
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{SERVER}/{name}"


def per_step_ms(stamps: list[float], start: int, stop: int) -> float:
    """Mean milliseconds between consecutive stamps in [start, stop)."""
    window = stamps[start:stop]
    return (window[-1] - window[0]) / (len(window) - 1) * 1000


def mean_ms(seconds: list[float], per: int = 1) -> float:
    return statistics.fmean(seconds) / per * 1000


def report(results: dict[str, float]) -> None:
    """Hand results to the parent process as one JSON line."""
    sys.stdout.write("BENCH " + json.dumps(results) + "\n")
