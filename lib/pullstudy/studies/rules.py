"""The verdict rules: one written rule per kind of claim, applied to a central estimate and its interval.

Every verdict function in the studies reduces its data to an :class:`Effect` (a central estimate,
its cluster-level 95% interval, the within-run interval beside it, how many clusters stand behind
each arm, and the noise floor between re-runs) and asks the rule of its claim's kind. Per-item
extremes (the fastest image, the widest per-image interval) are reported but never decide a
verdict: only the central estimate and its interval do.

The rules, as shown in the README and on the results page (:data:`RULES`):

========== ===============================================================================
kind       rule
========== ===============================================================================
factor     "X made it about F times faster". *Not supported* when the interval does not lie
           above 1 (no speedup shown). *Partly supported* when it is faster but the interval
           does not clear the noise floor (re-running alone moves results that much), or when
           F is neither inside the interval nor within the claim's rounding of the estimate.
           *Supported* otherwise.
range      "F1–F2 times faster across images". Central estimate: the median over images of
           the per-image speedups, with its interval; plus the share of images whose speedup
           lies in the range. *Not supported* when the overall speedup's interval does not lie
           above 1. *Supported* when, beyond the floor, the median's interval overlaps the
           range and at least half of the images lie in it. *Partly supported* otherwise.
bound      "at most B worse". *Supported* when the upper end of the interval is at most B;
           *not supported* when its lower end exceeds B; *partly supported* in between
           (the data cannot tell).
equivalence "made no difference". Tested for equivalence within ±margin with the (1 − 2α)
           interval (two one-sided tests), never read from a non-significant test.
           *Supported* when that interval lies inside the margin and the margin is at least
           the noise floor; *not supported* when the 95% interval lies entirely outside the
           margin; *partly supported* otherwise, and always when the margin is narrower than
           the floor (re-running alone differs by more than the margin).
trend      "grows with" / qualitative trend. *Supported* when the slope's interval lies on the
           claimed side of 0 and every stated figure is consistent with the data; *partly
           supported* when the trend holds but a figure or a sub-claim does not; *not
           supported* when the interval lies on the other side of 0 or includes it.
value      "the value is V". Computed exactly (no sampling): *supported* when equal within
           the rounding of the stated figure, *not supported* otherwise.
checklist  qualitative claims made of several conditions: each condition computed from the
           data; *supported* when all hold, *partly supported* when some do, *not supported*
           when none does.
========== ===============================================================================

Across rounds: where two rounds of the experiment test the same change, a claim is *supported*
only if it is supported in both; supported in one and not in the other is *partly supported*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

RULES: dict[str, str] = {
    "factor": ("not supported unless the speedup's interval lies above 1; partly supported when it does not "
               "clear the noise floor, or when the claimed factor is neither inside the interval nor within the "
               "claim's rounding of the estimate; supported otherwise"),
    "range": ("central estimate = median over images of the per-image speedups, with its interval, and the share "
              "of images inside the range; not supported unless the overall interval lies above 1; supported when, "
              "beyond the floor, the median's interval overlaps the range and at least half the images lie in it; "
              "partly supported otherwise"),
    "bound": ("supported when the interval's upper end is at most the bound; not supported when its lower end "
              "exceeds it; partly supported in between"),
    "equivalence": ("supported when the 90% interval (two one-sided tests) lies inside ±margin and the margin is at "
                    "least the noise floor; not supported when the 95% interval lies entirely outside the margin; "
                    "partly supported otherwise, and whenever the margin is narrower than the floor"),
    "trend": ("supported when the slope's interval lies on the claimed side of 0 and each stated figure is "
              "consistent; partly supported when the trend holds but a figure or sub-claim does not; not supported "
              "when the interval includes 0 or lies on the other side"),
    "value": "computed exactly: supported when equal within the rounding of the stated figure, else not supported",
    "checklist": "each condition computed: supported when all hold, partly supported when some do, not supported when none",
}
KINDS = tuple(RULES)


@dataclass(frozen=True)
class NoiseFloor:
    """How far apart two runs of the same nominal conditions came out: a ratio >= 1.

    ``factor`` = exp(max |log speedup|) over the null comparisons that apply; an effect whose
    interval does not clear it is not distinguishable from re-running the experiment.
    """

    factor: float
    pairs: tuple[str, ...]  # "a vs b: 0.866x" descriptions of the null comparisons behind it

    def text(self) -> str:
        return (f"noise floor between re-runs ±{self.factor - 1:.1%} (x{self.factor:.3g}; "
                f"from {', '.join(self.pairs)})")


@dataclass(frozen=True)
class Effect:
    """A central estimate with its cluster-level interval, and what stands behind it."""

    estimate: float
    ci_low: float
    ci_high: float
    within_low: float = math.nan  # the interval from resampling pulls within the run(s) only
    within_high: float = math.nan
    clusters: tuple[int, int] | None = None  # clusters behind (baseline, treatment)
    floor: NoiseFloor | None = None
    floor_note: str = ""  # why there is no floor, when there is none

    def text(self, unit: str = "x", *, with_floor: bool = True) -> str:
        """The estimate, both intervals and the clusters; with ``with_floor`` also the noise floor (said once
        where several rounds are listed)."""
        s = f"{self.estimate:.3g}{unit} [{self.ci_low:.3g}, {self.ci_high:.3g}]"
        if self.clusters is not None:
            k = self.clusters
            s += f" (cluster-level 95% CI, {k[0]} + {k[1]} clusters"
            if min(k) < 2:
                s += "; one cluster on a side: the interval covers within-cluster variation only"
            s += ")"
            if math.isfinite(self.within_low):
                s += f"; within-run CI [{self.within_low:.3g}, {self.within_high:.3g}]"
        if not with_floor:
            return s
        if self.floor is not None:
            s += f"; {self.floor.text()}"
        elif self.clusters is not None:
            s += f"; {self.floor_note or 'no re-run of these conditions is archived'}, so the noise floor is unknown"
        return s

    def clears_floor(self) -> bool | None:
        """Does the interval lie beyond the floor (in either direction)? None: no floor known."""
        if self.floor is None:
            return None
        f = self.floor.factor
        return self.ci_low > f or self.ci_high < 1 / f


def _within(value: float, figure: float, rounding: float) -> bool:
    return abs(math.log(value / figure)) <= math.log1p(rounding)


def decide_factor(effect: Effect, claimed: float, *, rounding: float = 0.2) -> tuple[str, str]:
    """Rule ``factor``; ``rounding`` is how loosely the source states its figure (±20%: "about")."""
    if not effect.ci_low > 1:
        return "not supported", f"no speedup shown: the interval reaches {effect.ci_low:.3g}x"
    figure_ok = effect.ci_low <= claimed <= effect.ci_high or _within(effect.estimate, claimed, rounding)
    figure_txt = (f"the claimed {claimed:g}x is {'consistent with' if figure_ok else 'not consistent with'} "
                  f"the measured {effect.estimate:.3g}x [{effect.ci_low:.3g}, {effect.ci_high:.3g}]")
    if effect.clears_floor() is False:
        return "partly supported", (f"faster, but not distinguishable from re-running the experiment: the interval "
                                    f"does not clear the noise floor x{effect.floor.factor:.3g}; {figure_txt}")
    if not figure_ok:
        return "partly supported", f"faster, but by a different amount: {figure_txt}"
    return "supported", f"faster beyond the noise floor, and {figure_txt}" if effect.floor else \
        f"faster, and {figure_txt} (no noise floor known for these conditions)"


def decide_range(overall: Effect, typical: Effect, share_inside: float, n_items: int,
                 claimed: tuple[float, float]) -> tuple[str, str]:
    """Rule ``range``: ``typical`` is the median per-image speedup with its interval."""
    low, high = claimed
    claim_txt = f"{low:g}-{high:g}x"
    if not overall.ci_low > 1:
        return "not supported", f"no speedup shown: the overall interval reaches {overall.ci_low:.3g}x"
    inside = int(round(share_inside * n_items))
    typical_txt = (f"median per-image speedup {typical.estimate:.3g}x [{typical.ci_low:.3g}, {typical.ci_high:.3g}], "
                   f"{inside} of {n_items} images inside {claim_txt}")
    if overall.clears_floor() is False:
        return "partly supported", (f"faster, but not distinguishable from re-running the experiment (noise floor "
                                    f"x{overall.floor.factor:.3g}); {typical_txt}")
    overlaps = typical.ci_low <= high and typical.ci_high >= low
    if overlaps and share_inside >= 0.5:
        return "supported", f"faster, and the typical image lies in the claimed range: {typical_txt}"
    return "partly supported", f"faster, but not by the claimed {claim_txt} for a typical image: {typical_txt}"


def decide_bound(effect: Effect, bound: float, unit: str = " s") -> tuple[str, str]:
    """Rule ``bound``: the claim is "at most ``bound`` worse"."""
    txt = f"{effect.estimate:+.3g}{unit} [{effect.ci_low:+.3g}, {effect.ci_high:+.3g}] against the bound {bound:g}{unit}"
    if effect.ci_high <= bound:
        return "supported", f"the whole interval lies within the bound: {txt}"
    if effect.ci_low > bound:
        return "not supported", f"the whole interval lies beyond the bound: {txt}"
    return "partly supported", f"the interval reaches past the bound, so the data cannot confirm it: {txt}"


def decide_equivalence(effect: Effect, eq_ci: tuple[float, float], margin: float) -> tuple[str, str]:
    """Rule ``equivalence`` on a ratio: ``eq_ci`` is the (1 - 2 alpha) interval, ``effect`` the 95% one."""
    lo_b, hi_b = 1 / (1 + margin), 1 + margin
    eq_txt = f"90% CI {eq_ci[0]:.3g}-{eq_ci[1]:.3g} against ±{margin:.0%}"
    narrow = effect.floor is not None and effect.floor.factor > hi_b
    if effect.ci_high < lo_b or effect.ci_low > hi_b:
        return "not supported", f"the 95% interval lies entirely outside ±{margin:.0%}"
    inside = lo_b < eq_ci[0] and eq_ci[1] < hi_b
    if narrow:
        return "partly supported", (f"the equivalence margin ±{margin:.0%} is narrower than the noise floor "
                                    f"±{effect.floor.factor - 1:.1%} between re-runs, so a margin this tight cannot "
                                    f"be tested by these runs ({eq_txt}: "
                                    f"{'inside' if inside else 'not inside'} the margin)")
    if inside:
        return "supported", f"equivalent within ±{margin:.0%} ({eq_txt})"
    return "partly supported", f"no large difference, but equivalence within ±{margin:.0%} is not shown ({eq_txt})"


def decide_trend(ci_low: float, ci_high: float, *, sub_claims: dict[str, bool] | None = None,
                 direction: int = 1) -> tuple[str, str]:
    """Rule ``trend``: the slope's interval on the claimed side of 0, and the sub-claims (figures)."""
    lo, hi = (ci_low, ci_high) if direction > 0 else (-ci_high, -ci_low)
    if not lo > 0:
        return "not supported", f"the slope's interval [{ci_low:.3g}, {ci_high:.3g}] does not lie on the claimed side of 0"
    failed = [name for name, ok in (sub_claims or {}).items() if not ok]
    if failed:
        return "partly supported", "the trend holds, but not: " + "; ".join(failed)
    return "supported", f"the slope's interval [{ci_low:.3g}, {ci_high:.3g}] lies on the claimed side of 0" + (
        "; and " + "; ".join(sub_claims) if sub_claims else "")


def decide_checklist(conditions: dict[str, bool]) -> tuple[str, str]:
    """Rule ``checklist``."""
    held = [c for c, ok in conditions.items() if ok]
    missed = [c for c, ok in conditions.items() if not ok]
    if not missed:
        return "supported", "every condition holds: " + "; ".join(held)
    if held:
        return "partly supported", "holds: " + "; ".join(held) + ". Does not hold: " + "; ".join(missed)
    return "not supported", "no condition holds: " + "; ".join(missed)


def combine_rounds(verdicts: list[tuple[str, str, str]]) -> tuple[str, str]:
    """Verdicts of the same claim in several rounds ``(round, verdict, reason)`` -> one verdict.

    Supported in every round: supported. Not supported in every round: not supported. Anything
    else (supported in one, not in another; partly in any): partly supported. Rounds whose data is
    not here ("not testable here") are named but do not decide.
    """
    tested = [v for v in verdicts if v[1] != "not testable here"]
    if not tested:
        return "not testable here", "; ".join(f"{r}: {why}" for r, _, why in verdicts)
    kinds = {v for _, v, _ in tested}
    verdict = kinds.pop() if len(kinds) == 1 else "partly supported"
    return verdict, " | ".join(f"{r}: {v} ({why})" for r, v, why in verdicts)


def rules_table():
    """The rules as a table (kind, rule, claims of that kind) for the README and the results page."""
    import pandas as pd

    from .claims import CLAIMS

    return pd.DataFrame([{"kind": k, "rule": rule, "claims": ", ".join(c.id for c in CLAIMS.values() if c.kind == k)}
                         for k, rule in RULES.items()])
