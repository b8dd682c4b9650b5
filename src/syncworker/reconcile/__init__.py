"""Reconciliation: an exact comparison of two "sides" (a source after its filter and mapping,
and a target), segment by segment, and the repair of what differs.

``sides.py`` is the contract, ``engine.py`` the comparison (free of any database),
``report.py`` the result; ``postgres.py`` is the PostgreSQL side and ``mapping.py`` derives
what to compare from a pipeline's config. Issue 11 (REST -> Redis) adds other sides.
"""
