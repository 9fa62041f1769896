"""The benchmark harness behind `scripts/bench` (see docs/benchmarks.md).

Not part of the test command: it starts real servers pinned to cores and
drives them with wrk on loopback for a few minutes.
"""
