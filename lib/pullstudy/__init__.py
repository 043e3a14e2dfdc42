"""pullstudy: reproducible studies of container image pull time.

The library holds the logic; notebooks in ``notebooks/`` are narrative plus calls into it.
"""

__version__ = "0.1.0"
