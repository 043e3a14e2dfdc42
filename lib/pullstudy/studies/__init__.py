"""The studies: each turns records into tables, charts and verdicts. ``claims`` and ``rules`` (the
verdict rules) sit here at the base because every study produces Verdicts; no module here
imports a source implementation.
"""
