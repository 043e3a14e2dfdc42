"""The kube backend as the rest of pullstudy sees it: the record source of a recorded run, and what
the command line needs to plan, record and list runs (the layers above import this module only)."""

from pullstudy.sources.kube.manifests import KubeParamError, KubeParams, parse_params
from pullstudy.sources.kube.run import KubeRunError, KubeSource, catalog_entry, dry_run, kube_runs, run

__all__ = ["KubeParamError", "KubeParams", "KubeRunError", "KubeSource", "catalog_entry", "dry_run", "kube_runs",
           "parse_params", "run"]
