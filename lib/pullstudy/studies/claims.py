"""The published claims as data, and the verdicts the notebooks reach about them.

The claims are written here (not read from a file) so that a clone of the project carries them:
every notebook records a :class:`Verdict` against a claim id, and the results page lists every
claim, tested or not, so an untested claim is visible rather than missing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

import pandas as pd

SOURCE_2024 = "https://vsoch.github.io/2024/container-pulling/"
SOURCE_2025 = "https://vsoch.github.io/2025/rootless-usernetes-gpu/"


@dataclass(frozen=True)
class Claim:
    """One claim of the source, paraphrased, with the figure the source gave for it."""

    id: str
    study: str
    text: str
    figure: str
    source: str
    kind: str  # which verdict rule applies: a key of pullstudy.studies.rules.RULES
    rounding: float = 0.2  # how loosely the figure is stated ("about 15x": within ±20%)
    condition: str = ""  # for a comparison claim: the catalog condition the two runs must differ in


def _claims(*rows: Claim) -> dict[str, Claim]:
    return {claim.id: claim for claim in rows}


CLAIMS: dict[str, Claim] = _claims(
    Claim(
        "size-growth",
        "01",
        "pull time grows with total image size",
        "the largest image (19 GB) took about 2 minutes",
        SOURCE_2024,
        "trend",
    ),
    Claim(
        "layers-no-effect",
        "01",
        "the number of layers does not seem to matter; at most 125 layers might be ~10 s slower than 9",
        '"maybe 10 seconds slower"',
        SOURCE_2024,
        "bound",
    ),
    Claim(
        "registry-no-effect",
        "02",
        "a registry in the same cloud and region made no difference",
        "no difference",
        SOURCE_2024,
        "equivalence",
        condition="registry",
    ),
    Claim(
        "ssd-speedup",
        "03",
        "a local SSD for ephemeral storage improved pull times",
        "1.25x (README: 20–40 s faster for the largest images, less variability)",
        SOURCE_2024,
        "factor",
        rounding=0.05,  # stated to two decimals
        condition="ephemeral_storage",
    ),
    Claim(
        "streaming-synthetic",
        "04",
        "image streaming (lazy pulling) cut pull times; programmatically generated images gained the most",
        "15–120x overall; up to 120x for generated images",
        SOURCE_2024,
        "range",
        condition="image_streaming",
    ),
    Claim(
        "streaming-apps",
        "04",
        "for single-layer application images built with spack (LAMMPS, AMG2023, OSU, MiniFE), "
        "image streaming cut pull times",
        "15x",
        SOURCE_2024,
        "factor",
        condition="image_streaming",
    ),
    Claim(
        "streaming-ml",
        "04",
        "for a machine-learning container, image streaming cut pull times",
        "10x (no data archived)",
        SOURCE_2024,
        "factor",
    ),
    Claim(
        "soci-example",
        "04",
        "the AWS SOCI example image pulled much faster with lazy pulling",
        "71 s → 7 s, ~10x (no data archived)",
        SOURCE_2024,
        "factor",
    ),
    Claim(
        "scale-variation",
        "07",
        "larger clusters show more variation in pull-event timestamps across nodes; experiments take "
        "longer with cluster size, not because of pull time",
        "qualitative",
        SOURCE_2024,
        "trend",
    ),
    Claim(
        "similarity-sets",
        "05",
        "mean Jaccard similarity (over the full matrix, diagonal included) of layer digests: study "
        "containers 0.4027 (std 0.384), ensemble containers 0.659 (std 0.128), spack containers 0.2 "
        "(std 0.327)",
        "as given",
        SOURCE_2024,
        "value",
    ),
    Claim(
        "similarity-clusters",
        "05",
        "clustering by layer content separates the environments (cloud, CPU vs GPU); spack "
        "single-layer builds resemble nothing else",
        "qualitative",
        SOURCE_2024,
        "checklist",
    ),
    Claim(
        "gpu-usernetes",
        "06",
        "GPUs work in rootless Usernetes only with: the nvidia runtime in rootless docker reading an "
        "explicit daemon config, CDI specs generated on the host and again inside the node, device "
        "char symlinks created in advance, containerd inside the node configured for CDI, and the "
        "plain NVIDIA device plugin (the GPU Operator gave inconsistent, broken states); setting "
        "no-cgroups=true or skipping the nvidia runtime fails (cgroups needed later; "
        "bpf_prog_query permission error)",
        "V100 nodes, CUDA 12.8, driver 560, Ubuntu 24.04",
        SOURCE_2025,
        "checklist",
    ),
)

VERDICTS = ("supported", "partly supported", "not supported", "not testable here")

UNTESTED_REASON = "no notebook has checked this claim yet (study {study}: its notebook has not run or is not built)"
# A study notebook run with backend="local" measures this machine, not the published setup.
LOCAL_RUN_REASON = ("study {study} ran on the local backend (run {run}): local runs are reported, not judged "
                    "against the published claims; run it with backend=\"archive\" for a verdict")
RECORDED_RUN_REASON = ("study {study} analysed a run recorded on a live cluster ({run}): recorded runs are reported, "
                       "not judged against the published claims, which concern the upstream GKE runs")

TABLE_COLUMNS = [
    "claim_id", "study", "claim", "figure", "verdict", "measured",
    "value", "ci_low", "ci_high", "unit", "n", "reason", "notebook",
    "kind", "within_ci_low", "within_ci_high", "clusters", "noise_floor",
]


def _number(name: str, value: Any) -> float | None:
    """A float or None (NaN counts as "no value"), so verdicts are JSON-safe."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"Verdict {name} must be a number or None, got {value!r}") from None
    return None if math.isnan(number) else number


@dataclass
class Verdict:
    """What a notebook concluded about one claim, with the measurement behind it."""

    claim_id: str
    verdict: str
    reason: str
    measured: str = ""
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    unit: str = ""
    n: int | None = None
    notebook: str = ""
    # Beside the cluster-level interval above: the interval from resampling pulls within the run(s),
    # the clusters behind each arm ("3+3") and the noise floor between re-runs (a ratio >= 1).
    within_ci_low: float | None = None
    within_ci_high: float | None = None
    clusters: str = ""
    noise_floor: float | None = None

    def __post_init__(self) -> None:
        if self.claim_id not in CLAIMS:
            raise ValueError(
                f"unknown claim id {self.claim_id!r}; allowed: {', '.join(CLAIMS)}"
            )
        if self.verdict not in VERDICTS:
            raise ValueError(
                f"unknown verdict {self.verdict!r} for claim {self.claim_id!r}; "
                f"allowed: {', '.join(repr(v) for v in VERDICTS)}"
            )
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ValueError(f"verdict for claim {self.claim_id!r} needs a non-empty reason")
        self.value = _number("value", self.value)
        self.ci_low = _number("ci_low", self.ci_low)
        self.ci_high = _number("ci_high", self.ci_high)
        self.within_ci_low = _number("within_ci_low", self.within_ci_low)
        self.within_ci_high = _number("within_ci_high", self.within_ci_high)
        self.noise_floor = _number("noise_floor", self.noise_floor)
        if self.ci_low is not None and self.ci_high is not None and self.ci_low > self.ci_high:
            raise ValueError(
                f"verdict for claim {self.claim_id!r}: ci_low {self.ci_low} > ci_high {self.ci_high}"
            )
        if self.n is not None:
            try:
                is_count = not isinstance(self.n, (bool, str)) and int(self.n) == self.n >= 0
            except (TypeError, ValueError, OverflowError):
                is_count = False
            if not is_count:
                raise ValueError(f"verdict for claim {self.claim_id!r}: n must be a count, got {self.n!r}")
            self.n = int(self.n)

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe fields (what metrics.json stores)."""
        return asdict(self)


def verdicts_from_dicts(rows: Iterable[dict[str, Any]]) -> list[Verdict]:
    """Verdicts read back from JSON; unknown keys are refused rather than silently dropped."""
    allowed = {f.name for f in fields(Verdict)}
    verdicts = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"verdict #{i} is not an object: {row!r}")
        unknown = set(row) - allowed
        if unknown:
            raise ValueError(
                f"verdict #{i} has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        try:
            verdicts.append(Verdict(**row))
        except TypeError as exc:  # missing required fields
            raise ValueError(f"verdict #{i} is incomplete: {exc}") from None
    return verdicts


def verdict_table(verdicts: Iterable[Verdict]) -> pd.DataFrame:
    """Every claim in CLAIMS order; untested claims appear as "not testable here", never missing.

    A claim checked by several notebooks (or several measurements) gets one row per verdict.
    """
    by_claim: dict[str, list[Verdict]] = {claim_id: [] for claim_id in CLAIMS}
    for verdict in verdicts:
        by_claim[verdict.claim_id].append(verdict)
    rows = []
    for claim_id, claim in CLAIMS.items():
        found = by_claim[claim_id] or [Verdict(claim_id, "not testable here",
                                               UNTESTED_REASON.format(study=claim.study))]
        for v in found:
            rows.append({
                "claim_id": claim_id, "study": claim.study, "claim": claim.text,
                "figure": claim.figure, "verdict": v.verdict, "measured": v.measured,
                "value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high, "unit": v.unit,
                "n": v.n, "reason": v.reason, "notebook": v.notebook, "kind": claim.kind,
                "within_ci_low": v.within_ci_low, "within_ci_high": v.within_ci_high,
                "clusters": v.clusters, "noise_floor": v.noise_floor,
            })
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    for column in ("value", "ci_low", "ci_high", "within_ci_low", "within_ci_high", "noise_floor"):
        table[column] = table[column].astype("float64")
    table["n"] = table["n"].astype("Int64")
    return table


def with_reported_not_judged(notebook: str, metrics: dict, verdicts: list[Verdict]) -> list[Verdict]:
    """``verdicts`` and, for a notebook that measured locally, its study's other claims as reported, not judged."""
    have = {v.claim_id for v in verdicts}
    return list(verdicts) + [v for v in reported_not_judged(notebook, metrics) if v.claim_id not in have]


def reported_not_judged(notebook: str, metrics: dict) -> list[Verdict]:
    """For a notebook that measured locally (its metrics name the ``local_run``) or analysed a run recorded
    by the kube backend (``recorded_run``): each claim of its study as "not testable here", saying that
    such runs are reported, not judged. Else none."""
    run, template = metrics.get("local_run"), LOCAL_RUN_REASON
    if not run and metrics.get("recorded_run"):
        run, template = metrics["recorded_run"], RECORDED_RUN_REASON
    if not run:
        return []
    study = notebook.split("-", 1)[0]
    reason = template.format(study=study, run=run)
    return [Verdict(c.id, "not testable here", reason, notebook=notebook) for c in CLAIMS.values() if c.study == study]
