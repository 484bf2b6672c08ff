"""asv benchmarks for refrnn: one ``bench_<area>.py`` per area, seeded data in ``common.py``.

Run with ``asv run`` from the repository root (see the README's developer section).
"""
