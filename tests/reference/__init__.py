"""The online stores as they were at commit 5e6acec, one Python object per service: the reference
the array-backed stores (``app.baselines``, ``app.windows``, ``app.forecasts``) and the reworked
template and sequence stores are tested against, value for value
(``tests/test_store_equivalence.py``); and ``patterns_scalar``, the pattern store as at 431d57c,
for ``app.patterns``. Not imported by the app."""
