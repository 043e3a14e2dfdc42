"""The archive source: archived runs' events, study files and app logs, read from data/raw.
"""
