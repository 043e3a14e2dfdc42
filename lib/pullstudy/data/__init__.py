"""The data stage: fetch and verify the archived raw files (``fetch``), the catalog of runs
(``catalog``) and reading raw files as archived (``data.rawfiles``). Imports nothing above it.
"""
