"""Parsers of raw files into records (the records layer): kubelet events (``kubelet_events``) and
application logs (``app_logs``). They know formats, not where a run's files are.
"""
