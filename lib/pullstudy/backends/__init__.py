"""The machinery behind the record sources: reading the archive (``archive``), running a registry and
containerd here (``services``, ``local``, ``lazy``). Analysis never imports these: it reaches them through
:mod:`pullstudy.sources`, and every backend ends in the one record table (``pullstudy.records.RECORD_COLUMNS``).
"""
