"""The pipeline timeline's implementation (private: import ``planner.cost.timeline``).

- ``walk``: the reference, every op in order, and the walk's state advanced in pieces;
- ``one_pass``: the walk in one loop over a recorded op order;
- ``cycles`` and ``skip``: the steady cycles of a shape, and the walk jumping over those
  that grow linearly;
- ``sweep``: the walk as array operations, one op position of every rank at a time;
- ``simulate``: the result type, and the choice of the cheapest path.

Every faster path returns the walk's doubles bit for bit; ``tests/cost/test_timeline_paths.py``
compares each with the walk on random pipelines.
"""
