"""The claims are complete and a verdict cannot be recorded against nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pullstudy.studies.claims import (CLAIMS, SOURCE_2024, SOURCE_2025, UNTESTED_REASON, VERDICTS, Claim,
                                      Verdict, verdict_table, verdicts_from_dicts)
from pullstudy.paths import PROJECT_ROOT

EXPECTED_IDS = [
    "size-growth", "layers-no-effect", "registry-no-effect", "ssd-speedup", "streaming-synthetic",
    "streaming-apps", "streaming-ml", "soci-example", "scale-variation", "similarity-sets",
    "similarity-clusters", "gpu-usernetes",
]
# The published claims (the 2024 post on pulling containers in Kubernetes and the SOCI snapshotter, and
# the 2025 post on GPUs in rootless Usernetes), copied here so a clone checks them: claim id -> the study
# that checks it, a phrase of the claim, and the figure the source gives, verbatim.
PUBLISHED = {
    "size-growth": ("01", "pull time grows with total image size", "the largest image (19 GB) took about 2 minutes"),
    "layers-no-effect": ("01", "at most 125 layers might be ~10 s slower than 9", '"maybe 10 seconds slower"'),
    "registry-no-effect": ("02", "a registry in the same cloud and region made no difference", "no difference"),
    "ssd-speedup": ("03", "a local SSD for ephemeral storage improved pull times",
                    "1.25x (README: 20–40 s faster for the largest images, less variability)"),
    "streaming-synthetic": ("04", "programmatically generated images gained the most",
                            "15–120x overall; up to 120x for generated images"),
    "streaming-apps": ("04", "single-layer application images built with spack (LAMMPS, AMG2023, OSU, MiniFE)", "15x"),
    "streaming-ml": ("04", "a machine-learning container", "10x (no data archived)"),
    "soci-example": ("04", "the AWS SOCI example image", "71 s → 7 s, ~10x (no data archived)"),
    "scale-variation": ("07", "larger clusters show more variation in pull-event timestamps across nodes",
                        "qualitative"),
    "similarity-sets": ("05", "study containers 0.4027 (std 0.384), ensemble containers 0.659 (std 0.128), "
                              "spack containers 0.2 (std 0.327)", "as given"),
    "similarity-clusters": ("05", "clustering by layer content separates the environments", "qualitative"),
    "gpu-usernetes": ("06", "GPUs work in rootless Usernetes only with", "V100 nodes, CUDA 12.8, driver 560, Ubuntu 24.04"),
}


def test_all_twelve_claims_in_order() -> None:
    assert list(CLAIMS) == EXPECTED_IDS
    for claim_id, claim in CLAIMS.items():
        assert isinstance(claim, Claim) and claim.id == claim_id
        assert claim.text and claim.figure and claim.study.isdigit()
    assert CLAIMS["gpu-usernetes"].source == SOURCE_2025
    assert {c.source for k, c in CLAIMS.items() if k != "gpu-usernetes"} == {SOURCE_2024}


def test_claim_is_frozen() -> None:
    with pytest.raises(AttributeError):
        CLAIMS["size-growth"].text = "changed"  # type: ignore[misc]


def test_every_published_claim_is_in_claims_with_its_study_and_figure() -> None:
    assert set(PUBLISHED) == set(CLAIMS)
    for claim_id, (study, phrase, figure) in PUBLISHED.items():
        claim = CLAIMS[claim_id]
        assert claim.study == study, claim_id
        assert phrase in claim.text, claim_id
        assert claim.figure == figure, claim_id


def test_every_claim_is_checked_by_a_notebook_of_its_study() -> None:
    studies = {p.name[:2] for p in (PROJECT_ROOT / "notebooks").glob("[0-9][0-9]-*.ipynb")}
    assert {c.study for c in CLAIMS.values()} <= studies, sorted(studies)


def test_verdict_validation() -> None:
    with pytest.raises(ValueError, match="unknown claim id 'size-grow'.*size-growth"):
        Verdict("size-grow", "supported", "r")
    with pytest.raises(ValueError, match="unknown verdict 'true'.*partly supported"):
        Verdict("size-growth", "true", "r")
    with pytest.raises(ValueError, match="non-empty reason"):
        Verdict("size-growth", "supported", "  ")
    with pytest.raises(ValueError, match="ci_low"):
        Verdict("size-growth", "supported", "r", ci_low=2.0, ci_high=1.0)
    with pytest.raises(ValueError, match="n must be a count"):
        Verdict("size-growth", "supported", "r", n=-1)
    with pytest.raises(ValueError, match="n must be a count"):
        Verdict("size-growth", "supported", "r", n=2.5)
    with pytest.raises(ValueError, match="number"):
        Verdict("size-growth", "supported", "r", value="fast")


def test_verdict_values_are_json_safe() -> None:
    v = Verdict("ssd-speedup", "partly supported", "CI includes 1", value=np.float64(1.1),
                ci_low=np.float32(0.9), ci_high=float("nan"), n=np.int64(40))
    d = v.as_dict()
    assert d["value"] == pytest.approx(1.1) and type(d["value"]) is float
    assert d["ci_high"] is None and d["n"] == 40 and type(d["n"]) is int
    json.dumps(d, allow_nan=False)


def test_verdict_table_fills_untested_claims_and_keeps_duplicates() -> None:
    verdicts = [
        Verdict("ssd-speedup", "supported", "a", value=1.3, ci_low=1.2, ci_high=1.4, unit="x",
                n=40, notebook="03-local-ssd"),
        Verdict("size-growth", "supported", "b", notebook="01-pull-size-layers"),
        Verdict("size-growth", "not supported", "c", notebook="07-cluster-scale"),
    ]
    table = verdict_table(verdicts)
    assert list(table.columns) == [
        "claim_id", "study", "claim", "figure", "verdict", "measured", "value", "ci_low",
        "ci_high", "unit", "n", "reason", "notebook",
        "kind", "within_ci_low", "within_ci_high", "clusters", "noise_floor",
    ]
    assert len(table) == 13
    assert list(dict.fromkeys(table["claim_id"])) == EXPECTED_IDS
    growth = table[table["claim_id"] == "size-growth"]
    assert list(growth["notebook"]) == ["01-pull-size-layers", "07-cluster-scale"]
    ssd = table[table["claim_id"] == "ssd-speedup"].iloc[0]
    assert ssd["value"] == 1.3 and ssd["n"] == 40 and ssd["figure"] == CLAIMS["ssd-speedup"].figure
    untested = table[~table["claim_id"].isin(["size-growth", "ssd-speedup"])]
    assert len(untested) == 10
    assert set(untested["verdict"]) == {"not testable here"}
    assert list(untested["reason"]) == [UNTESTED_REASON.format(study=CLAIMS[c].study) for c in untested["claim_id"]]
    assert "study 05" in untested.set_index("claim_id").loc["similarity-sets", "reason"]
    assert set(table["verdict"]) <= set(VERDICTS)


def test_verdict_table_empty() -> None:
    table = verdict_table([])
    assert list(table["claim_id"]) == EXPECTED_IDS
    assert table["value"].isna().all()


def test_verdicts_round_trip_and_bad_rows() -> None:
    v = Verdict("layers-no-effect", "supported", "difference within 10 s", value=4.2,
                ci_low=1.0, ci_high=7.5, unit="s", n=12, notebook="01")
    back = verdicts_from_dicts(json.loads(json.dumps([v.as_dict()])))
    assert back == [v]
    with pytest.raises(ValueError, match="unknown keys.*'colour'"):
        verdicts_from_dicts([{**v.as_dict(), "colour": "red"}])
    with pytest.raises(ValueError, match="incomplete"):
        verdicts_from_dicts([{"claim_id": "size-growth"}])
    with pytest.raises(ValueError, match="unknown verdict"):
        verdicts_from_dicts([{**v.as_dict(), "verdict": "yes"}])
    with pytest.raises(ValueError, match="not an object"):
        verdicts_from_dicts(["size-growth"])  # type: ignore[list-item]
