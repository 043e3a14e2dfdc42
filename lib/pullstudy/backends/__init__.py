"""Where pull records come from: ``archive`` (the upstream data); later ``local`` and ``kube``.

Every backend ends in the same record table (``pullstudy.records.RECORD_COLUMNS``).
"""
