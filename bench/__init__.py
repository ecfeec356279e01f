"""``make bench``: cold start, calls per operation, planner reads, refresh pacing and memory.

Kept import-free on purpose: the cold-start children run ``python -m bench.cold_child``, and
anything imported here would be counted in their start-up time.
"""
