"""Raw Celery tasks: the baseline a fan-out is measured against."""

from celery import shared_task


@shared_task(name="bench.raw_noop")
def raw_noop(i: int) -> int:
    return i


@shared_task(name="bench.raw_callback")
def raw_callback(results: list[int]) -> int:
    return len(results)
