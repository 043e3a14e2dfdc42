"""The claims are complete and a verdict cannot be recorded against nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pullstudy.claims import (
    CLAIMS, SOURCE_2024, SOURCE_2025, UNTESTED_REASON, VERDICTS, Claim, Verdict,
    verdict_table, verdicts_from_dicts,
)
from pullstudy.paths import PROJECT_ROOT

EXPECTED_IDS = [
    "size-growth", "layers-no-effect", "registry-no-effect", "ssd-speedup", "streaming-synthetic",
    "streaming-apps", "streaming-ml", "soci-example", "scale-variation", "similarity-sets",
    "similarity-clusters", "gpu-usernetes",
]
SHARED_CLAIMS = PROJECT_ROOT.parent / "shared" / "claims.md"


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


def _markdown_claims(path: Path) -> dict[str, str]:
    """claim id -> study, from the first markdown table whose header starts with 'id'."""
    rows: dict[str, str] = {}
    in_table = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "id":
            in_table = True
        elif in_table and not set(cells[0]) <= set("-: "):
            rows[cells[0]] = cells[1]
    return rows


@pytest.mark.skipif(not SHARED_CLAIMS.exists(),
                    reason=f"{SHARED_CLAIMS} is absent (only the development checkout has it)")
def test_every_published_claim_is_in_claims() -> None:
    published = _markdown_claims(SHARED_CLAIMS)
    assert len(published) >= 12, published
    missing = sorted(set(published) - set(CLAIMS))
    assert not missing, f"claims.md rows missing from CLAIMS: {missing}"
    for claim_id, study in published.items():
        assert CLAIMS[claim_id].study == study, claim_id


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
