"""Squall's benchmark suite: a C load generator, peers, and a runner (``python -m bench``).

See bench/NOTES.md for the state of the work and bench/RESULTS.md for the latest numbers.
"""
