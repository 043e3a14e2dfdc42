"""The report stage: a notebook's outputs (``output.StudyOutput``), parameters, the notebook runner
(``runner``, ``python -m pullstudy.report.runner``), the results page (``page``); the rounds and forest figures are studies.uncertainty_figures.
"""
