"""The local source: a grid measured on this machine with real services, one file a service
(``registry_process``, ``containerd``, ``link``, ``stargz``, their ``lifecycle``), the
measurement (``measure``) and the run folders (``grid_runs``).
"""
