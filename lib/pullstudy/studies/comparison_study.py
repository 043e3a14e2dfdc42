"""One comparison study for notebooks 02, 03 and 04's synthetic part: two arms from any sources in,
tables, charts, the rounds and the verdict by the claim's kind out.

Above :mod:`pullstudy.studies.compare` (comparing two sets of pulls) and
:mod:`pullstudy.studies.local_conditions` (a local run's conditions), which it combines, so
neither imports the other lazily.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from . import local_apps
from .claims import CLAIMS, Verdict
from .noise import judge_pair
from .pulls import load_sources
from pullstudy.studies.compare import (Comparison, compare_runs, overall_text, record, rounds_table,
                                       run_comparison, transfer_text, transferred_fraction,
                                       verdict_no_difference, verdict_speedup, verdict_speedup_range)


# --------------------------------------------------------------------------- the comparison study

# The claim each comparison notebook's baseline/treatment comparison speaks to, and what the verdict
# must say beside the rule's reason.
COMPARISON_CLAIMS = {"02-registry-proximity": "registry-no-effect", "03-local-ssd": "ssd-speedup",
                     "04-image-streaming": "streaming-synthetic"}
CLAIM_NOTES = {"streaming-synthetic": "under streaming the kubelet's pull time measures a remote mount, not the "
                                      "transfer; these images run nothing, so the data cannot say how much of the "
                                      "cost moved into run time"}
NOT_JUDGED = "Local measurement (reported, not judged: not a verdict on the upstream claim): {measured}."


@dataclass
class Judgement:
    """A verdict on a claim, or, when an arm was measured here, the same figures reported but not judged."""

    claim_id: str
    verdict: Verdict
    judged: bool

    def text(self) -> str:
        if self.judged:
            return f"**{self.claim_id}: {self.verdict.verdict}** — {self.verdict.reason}."
        return NOT_JUDGED.format(measured=self.verdict.measured)

    def _repr_markdown_(self) -> str:
        return self.text()


def _md(text: str):
    from IPython.display import Markdown  # only notebooks display; the library runs without IPython

    return Markdown(text)


@dataclass
class ComparisonStudy:
    """One baseline/treatment comparison as a comparison notebook tells it, whatever the arms' sources.

    Built by :func:`study`. Each method is one section of the notebook: it records its tables,
    charts and metrics in ``out`` under the names the notebooks have always used, and returns what
    the notebook shows. Local arms (two conditions of one local run) are compared per content mode
    with their replicate runs; archive arms with the archive's re-runs (noise floor, other round).
    """

    baseline: object
    treatment: object
    params: dict
    out: object
    comparison: Comparison | None = None
    report: str = ""
    conditions: pd.DataFrame | None = None
    by_content: dict[str, Comparison] = field(default_factory=dict)  # local arms: one comparison per content
    local_records: list[pd.DataFrame] = field(default_factory=list)  # local arms: the run and its replicates
    local_field: str = ""

    @property
    def judged(self) -> bool:
        """Verdicts on the upstream claims rest on archived runs only; local runs are reported, not judged."""
        return self.baseline.kind == "archive" and self.treatment.kind == "archive"

    def _opts(self) -> dict:
        p = self.params
        return dict(time=p.get("time_column", "pull_wait_s"), margin=p.get("equivalence_margin", 0.10),
                    n_boot=p.get("n_boot", 2000), seed=p.get("seed", 0))

    def overview(self) -> list:
        """The conditions of both arms (archive), the account of what was read and left out, and the overall speedup."""
        shown = [] if self.conditions is None else [self.conditions]
        return shown + [_md(self.report), _md("**Overall:** " + overall_text(self.comparison))]

    def rounds(self):
        """The comparison, its other round and its null comparisons: the ``rounds`` table and chart."""
        from .uncertainty_figures import rounds_chart

        table = self.out.table(rounds_table(self.comparison), "rounds")
        return table, self.out.chart(rounds_chart(table), "rounds")

    def per_content(self) -> list:
        """Local arms: the overall speedup and its chart per content mode (none for archived arms)."""
        from .figures import speedup_chart

        if not self.by_content:
            return []
        shown = [_md("\n".join(f"* **{c}** content: " + overall_text(comp) for c, comp in self.by_content.items()))]
        for c, comp in self.by_content.items():
            shown.append(self.out.chart(speedup_chart(comp, title=f"Speedup, {c} content: {comp.treatment} over "
                                                                  f"{comp.baseline}"), f"speedup-{c}"))
        return shown

    def transferred_fraction(self) -> float:
        return self.out.metric("transferred_fraction", transferred_fraction(self.comparison.pulls))

    def transfer(self) -> list:
        """The bytes transferred per image (``bytes-transferred``), the transferred fraction, and what they say."""
        from .pulls import transfer_table

        measured = pd.concat([c.pulls for c in self.by_content.values()]) if self.by_content else self.comparison.pulls
        table = self.out.table(transfer_table(measured, by=("content", "image_key", "layers", "size_bytes")),
                               "bytes-transferred")
        fraction = self.transferred_fraction()
        return [_md(transfer_text(table, fraction, self.comparison)),
                table.assign(size_gb=table.size_bytes / 1e9, reported_mb=table.image_size_reported / 1e6).round(2)]

    def time_saved(self) -> pd.DataFrame:
        """Median seconds saved and the spread (IQR) per image (``time-saved-and-spread``)."""
        spread = self.comparison.per_image[["image_key", "size_gb", "saved_s", "baseline_iqr_s",
                                            "treatment_iqr_s"]].copy()
        spread["iqr_ratio"] = spread["baseline_iqr_s"] / spread["treatment_iqr_s"]
        self.out.table(spread, "time-saved-and-spread")
        self.out.metric("largest_image_saved_s", float(spread.sort_values("size_gb")["saved_s"].iloc[-1]))
        return spread.round(2)

    def useful_work(self) -> list:
        """Local arms: time to useful work (pull, then read every file) per content mode, with its charts."""
        from .figures import pull_and_read_chart, speedup_chart
        from .local_conditions import compare_by_content

        if not self.by_content:
            return [_md("(no arm was measured on this machine: time to useful work of synthetic images is measured "
                        "locally only; see the application images below)")]
        records = self.local_records[0]
        b, t = self.baseline.where[self.local_field], self.treatment.where[self.local_field]
        o = self._opts()
        work_by_content = compare_by_content(records, self.local_field, b, t, out=self.out, time="ttuw_s",
                                             label="time-to-useful-work-", margin=o["margin"], n_boot=o["n_boot"],
                                             seed=o["seed"], replicates=self.local_records[1:])
        shown = []
        apps = local_apps.is_apps_run(records)
        for content, work_c in work_by_content.items():
            if apps:  # application images: their pull, create and run are shown per image in their own section
                shown.append(_md(f"**{content}, time to useful work (pull + create + run to ready):** "
                                 + overall_text(work_c)))
                continue
            shown.append(_md(f"**{content} content, time to useful work:** " + overall_text(work_c)))
            shown.append(self.out.chart(pull_and_read_chart(records[records["content"] == content],
                                                            title=f"Where the time goes, {content} content: pull, "
                                                                  "then read every file"),
                                        f"pull-and-read-{content}"))
            shown.append(self.out.chart(speedup_chart(work_c, title=f"Time to useful work, {content} content: "
                                                                    f"{work_c.treatment} over {work_c.baseline}"),
                                        f"time-to-useful-work-speedup-{content}"))
        work = work_by_content.get(self._primary(work_by_content))
        shown.append(work.per_image[["image_key", "n_baseline", "n_treatment", "speedup", "ci_low", "ci_high",
                                     "saved_s"]].round(3))
        return shown

    def _primary(self, by_content: dict) -> str:
        from pullstudy.sources import LOCAL_CONDITIONS

        wanted = LOCAL_CONDITIONS.get(self.baseline.notebook, (None,) * 4)[3]
        return wanted if wanted in by_content else next(iter(by_content))

    def verdict(self, claim_id: str | None = None, claimed=None) -> Judgement:
        """The verdict on the claim, by its kind (factor, range, equivalence), recorded when the arms are archived.

        ``claim_id`` defaults to the notebook's comparison claim, ``claimed`` to the figure its
        parameters state (``claimed_speedup``, ``claimed_speedup_range``). For a local arm the same
        figures are computed and reported, not judged, and nothing is recorded as a verdict.
        """
        claim_id = claim_id or COMPARISON_CLAIMS[self.out.notebook]
        kind, p, c = CLAIMS[claim_id].kind, self.params, self.comparison
        note = CLAIM_NOTES.get(claim_id, "")
        if kind == "factor":
            v = verdict_speedup(c, claim_id, float(p["claimed_speedup"] if claimed is None else claimed), note=note)
        elif kind == "range":
            v = verdict_speedup_range(c, claim_id, tuple(p["claimed_speedup_range"] if claimed is None else claimed),
                                      note=note)
        elif kind == "equivalence":
            v = verdict_no_difference(c, claim_id, transferred_fraction=transferred_fraction(c.pulls),
                                      min_fraction=p.get("network_min_fraction", 0.05))
        else:
            raise ValueError(f"claim {claim_id!r} is of kind {kind!r}, which a two-arm comparison does not judge; "
                             "use the study module of that claim")
        if self.judged and CLAIMS[claim_id].condition:
            v = judge_pair(v, CLAIMS[claim_id].condition, self.baseline.id, self.treatment.id)
        if self.judged:
            self.out.verdict(v, runs=[self.baseline.id, self.treatment.id])
        return Judgement(claim_id, v, self.judged)


def _local_pair(baseline, treatment) -> str | None:
    """The one condition two local arms of the same run differ in, or None when they are not such a pair."""
    if baseline.kind != "local" or treatment.kind != "local":
        return None
    if (baseline.notebook, baseline.grid, baseline.replicate) != (treatment.notebook, treatment.grid,
                                                                   treatment.replicate):
        return None
    differ = [k for k in baseline.where if baseline.where.get(k) != treatment.where.get(k)]
    return differ[0] if len(differ) == 1 and set(baseline.where) == set(treatment.where) else None


def study(arms, params, out) -> ComparisonStudy:
    """Load both arms, compare them and put them next to their re-runs: the first sections of a comparison notebook.

    ``arms`` is (baseline, treatment), each a :class:`pullstudy.sources.interface.RecordSource` (see
    :func:`pullstudy.sources.arms`); ``params`` the notebook's parameters (``time_column``,
    ``equivalence_margin``, ``n_boot``, ``seed``, ``cluster_nodes`` and the claimed figures).
    """
    from pullstudy.data import catalog
    from .local_conditions import compare_by_content, with_time_to_useful_work

    baseline, treatment = arms
    s = ComparisonStudy(baseline, treatment, dict(params), out)
    o = s._opts()
    nodes = params.get("cluster_nodes")
    local_field = _local_pair(baseline, treatment)
    if s.judged:
        s.conditions = catalog.conditions([catalog.get(baseline.id), catalog.get(treatment.id)])
        s.comparison, s.report = run_comparison(baseline.id, treatment.id, nodes, out=out, **o)
    elif local_field:  # two conditions of one local run, compared per content mode with the replicate runs
        runs = [baseline.replicate_of(k).load(nodes, time=o["time"]) for k in range(1, baseline.replicates + 1)]
        s.local_records = [with_time_to_useful_work(r.run_records) for r in runs]
        s.report = "\n\n".join(f"replicate {k}: {r.report}" if len(runs) > 1 else r.report
                               for k, r in enumerate(runs, start=1))
        out.metric("local_run", runs[0].local_run)
        s.local_field = local_field
        s.by_content = compare_by_content(s.local_records[0], local_field, baseline.where[local_field],
                                          treatment.where[local_field], out=out, replicates=s.local_records[1:], **o)
        s.comparison = s.by_content[s._primary(s.by_content)]
    else:  # arms from different kinds of source: compared as they are, with no re-runs to stand beside them
        pulls, s.report = load_sources([baseline, treatment], nodes, o["time"], out, require_size=False)
        s.comparison = compare_runs(pulls[baseline.id], pulls[treatment.id], baseline=baseline.label,
                                    treatment=treatment.label, **o)
        local = [r for r in (baseline, treatment) if r.kind == "local"]
        if local:
            out.metric("local_run", local[0].run_name)
        recorded = [r for r in (baseline, treatment) if r.kind == "kube"]
        if recorded:
            out.metric("recorded_run", recorded[0].id)
        record(s.comparison, out)
    return s
