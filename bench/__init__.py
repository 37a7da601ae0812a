"""Benchmarks of agentflow against its physical floor and its peers, run with `python -m bench`."""
