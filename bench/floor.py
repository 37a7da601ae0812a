"""The physical floor: one autocommitted INSERT (a durable commit) per step, with psycopg."""

from __future__ import annotations

import time
import uuid

import psycopg

from bench.common import fresh_database, mean_ms, report


def main(steps: int) -> None:
    url = fresh_database("agentflow_bench_floor")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE step (id bigserial PRIMARY KEY, run_id uuid NOT NULL, "
            "position int NOT NULL, output jsonb, UNIQUE (run_id, position))"
        )
        run_id = uuid.uuid4()
        timings = []
        for position in range(steps):
            started = time.perf_counter()
            conn.execute(
                "INSERT INTO step (run_id, position, output) VALUES (%s, %s, %s)",
                (run_id, position, str(position)),
            )
            timings.append(time.perf_counter() - started)
    report({"floor_insert": mean_ms(timings[100:])})


if __name__ == "__main__":
    import sys

    main(int(sys.argv[1]))
