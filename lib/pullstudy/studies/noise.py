"""How much re-running an experiment moves its result: null comparisons, the noise floor, replications.

The archive holds pairs of runs made under the same nominal conditions weeks apart (the two rounds,
``pulling/`` and ``pulling-test/``). Comparing them with the same code as a real comparison gives a
"null" effect; the largest of those that apply to a comparison is its noise floor: an effect that
does not clear it cannot be told apart from re-running the experiment. Where both rounds tested the
same change (registry, SSD, streaming), the other round's comparison is a replication.

Everything here is derived from the catalog and the data, never typed: a pair is "the same
conditions" when every field of :data:`CONDITION_FIELDS` is equal and the study files share images.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

import pandas as pd

from pullstudy.data import catalog
from .claims import Verdict
from pullstudy.sources.archive.source import ArchiveSource
from .rules import NoiseFloor

CONDITION_FIELDS = ("provider", "machine_type", "registry", "ephemeral_storage", "image_streaming", "image_content")


def conditions_of(run: catalog.Run) -> tuple:
    return tuple(getattr(run, f) for f in CONDITION_FIELDS)


@lru_cache(maxsize=None)
def study_keys(run_id: str) -> frozenset[str]:
    """The image keys (as :func:`pullstudy.records.image_key` makes them) a run set out to pull."""
    return ArchiveSource(run_id).study_keys()


def _has_events(run: catalog.Run) -> bool:
    return bool(run.files_of("events"))


def null_pairs(runs: list[catalog.Run] | None = None) -> list[tuple[str, str]]:
    """Pairs of catalog runs with the same nominal conditions and images in common.

    Runs whose streaming setting was not recorded are left out (their conditions are not known to
    be the same); so are pairs whose study files share no image.
    """
    runs = [r for r in (runs or catalog.load()) if r.image_streaming is not None and _has_events(r)]
    pairs = []
    for a, b in combinations(runs, 2):
        if conditions_of(a) == conditions_of(b) and study_keys(a.id) & study_keys(b.id):
            pairs.append((a.id, b.id))
    return pairs


def changed_fields(a: catalog.Run, b: catalog.Run) -> dict[str, tuple]:
    return {f: (getattr(a, f), getattr(b, f)) for f in CONDITION_FIELDS if getattr(a, f) != getattr(b, f)}


def replications(baseline: str, treatment: str, runs: list[catalog.Run] | None = None) -> list[tuple[str, str]]:
    """Pairs in other rounds (experiments) that make exactly the same change of conditions.

    "The same change" = the same fields change, from the same value to the same value, and the
    pair shares images; the fields that stay fixed may differ from the original pair's (the
    earlier round's SSD run used Artifact Registry, say).
    """
    runs = runs or catalog.load()
    base, treat = catalog.get(baseline, runs), catalog.get(treatment, runs)
    change = changed_fields(base, treat)
    if not change:
        return []
    found = []
    for a in runs:
        for b in runs:
            if a.id == b.id or a.experiment == base.experiment or a.experiment != b.experiment:
                continue
            if a.image_content != base.image_content or a.image_streaming is None or b.image_streaming is None or not (_has_events(a) and _has_events(b)):
                continue
            if changed_fields(a, b) == change and study_keys(a.id) & study_keys(b.id):
                found.append((a.id, b.id))
    return found


def applicable_pairs(baseline: str, treatment: str, runs: list[catalog.Run] | None = None) -> list[tuple[str, str]]:
    """The null pairs that re-run the conditions of either arm of a comparison.

    Those say how far re-running the baseline (or the treatment) alone moves the result. Where no
    pair re-runs either arm, the pairs of the same image content stand in (said by the caller).
    """
    runs = runs or catalog.load()
    arms = {conditions_of(catalog.get(baseline, runs)), conditions_of(catalog.get(treatment, runs))}
    pairs = null_pairs(runs)
    own = [p for p in pairs if conditions_of(catalog.get(p[0], runs)) in arms and set(p) != {baseline, treatment}]
    if own:
        return own
    content = catalog.get(baseline, runs).image_content
    return [p for p in pairs if catalog.get(p[0], runs).image_content == content]


def floor_from(table: pd.DataFrame) -> NoiseFloor | None:
    """The floor from a table of null comparisons (columns baseline, treatment, speedup)."""
    usable = table.dropna(subset=["speedup"])
    if usable.empty:
        return None
    spread = usable["speedup"].map(lambda r: max(r, 1 / r))
    return NoiseFloor(float(spread.max()), tuple(f"{r.baseline} vs {r.treatment}: {r.speedup:.3g}x"
                                                 for r in usable.itertuples()))


def pair_tests(condition: str, baseline: str, treatment: str, runs: list[catalog.Run] | None = None) -> tuple[bool, str]:
    """Does this pair of catalog runs test a claim about ``condition``? And what else does it change?

    A pair that keeps the condition fixed cannot say anything about it (an SSD claim judged on a
    registry comparison would be a wrong verdict); a pair that also changes other conditions can,
    but its effect is not the condition's alone, and the verdict says so.
    """
    runs = runs or catalog.load()
    change = changed_fields(catalog.get(baseline, runs), catalog.get(treatment, runs))
    if condition not in change:
        value = getattr(catalog.get(baseline, runs), condition)
        return False, (f"{treatment} vs {baseline} does not change {condition.replace('_', ' ')} (both {value!r}): "
                       "this pair cannot test the claim; choose runs that differ in it")
    others = {f: v for f, v in change.items() if f != condition}
    if not others:
        return True, ""
    return True, ("the pair also changes " + "; ".join(f"{f.replace('_', ' ')} ({a!r} -> {b!r})"
                                                      for f, (a, b) in others.items())
                  + ", so the effect is not the claim's condition alone")


def judge_pair(v: Verdict, condition: str, baseline: str, treatment: str) -> Verdict:
    """A verdict on a pair that does not change the claim's condition becomes "not testable here"; one
    on a pair that changes more than that condition is kept, with that said (:func:`pair_tests`)."""
    testable, note = pair_tests(condition, baseline, treatment)
    if not testable:
        return Verdict(v.claim_id, "not testable here", note, measured=v.measured, n=v.n, notebook=v.notebook)
    if note:
        v.reason += f"; {note}"
    return v
