"""pullstudy.sources.kube.run.
"""
