"""Charts of "how sure are we": both intervals of every effect, next to the noise floor between re-runs.

``rounds_chart`` shows one comparison with its replications in other rounds and the null
comparisons (same conditions, run twice); ``forest_chart`` shows every claim's measured effect on
the results page. Thick bars are the cluster-level 95% intervals the verdicts use, thin bars the
within-run intervals (pulls resampled as if independent), the shaded band the noise floor.
"""

from __future__ import annotations

import math

import altair as alt
import pandas as pd

ROLE_COLORS = alt.Scale(domain=["this comparison", "replication", "null (same conditions)"],
                        range=["#2166ac", "#4daf4a", "#999999"])


def _floor_band(floor: float | None, y_field: str | None = None) -> list[alt.Chart]:
    layers = [alt.Chart(pd.DataFrame({"x": [1.0]})).mark_rule(color="black", strokeDash=[4, 4]).encode(x="x:Q")]
    if floor and math.isfinite(floor):
        band = pd.DataFrame({"lo": [1 / floor], "hi": [floor]})
        layers.insert(0, alt.Chart(band).mark_rect(opacity=0.15, color="#d95f02").encode(x="lo:Q", x2="hi:Q"))
    return layers


def rounds_chart(rounds: pd.DataFrame, *, title: str = "The effect in each round, next to re-running") -> alt.LayerChart:
    """One row per comparison (this one, replications, nulls): speedup with both intervals, log scale."""
    data = rounds.assign(label=rounds["comparison"] + " (" + rounds["role"] + ")")
    floor = rounds["noise_floor"].dropna()
    floor_value = float(floor.iloc[0]) if len(floor) else None
    scale = alt.Scale(type="log", nice=False, padding=20)
    y = alt.Y("label:N", title=None, sort=list(data["label"]), axis=alt.Axis(labelLimit=420))
    color = alt.Color("role:N", scale=ROLE_COLORS, title="Comparison")
    tooltip = ["comparison:N", "role:N", alt.Tooltip("speedup:Q", format=".3g"),
               alt.Tooltip("ci_low:Q", format=".3g"), alt.Tooltip("ci_high:Q", format=".3g"),
               alt.Tooltip("within_ci_low:Q", format=".3g"), alt.Tooltip("within_ci_high:Q", format=".3g"),
               "clusters:N", "images:Q"]
    within = alt.Chart(data).mark_rule(strokeWidth=1.5).encode(
        x=alt.X("within_ci_low:Q", scale=scale), x2="within_ci_high:Q", y=y, color=color)
    cluster = alt.Chart(data).mark_rule(strokeWidth=6, opacity=0.45).encode(
        x=alt.X("ci_low:Q", scale=scale, title="Speedup, median(baseline) / median(treatment) (x, log scale)"),
        x2="ci_high:Q", y=y, color=color)
    points = alt.Chart(data).mark_point(filled=True, size=70, color="black").encode(
        x=alt.X("speedup:Q", scale=scale), y=y, tooltip=tooltip)
    subtitle = ["thick: cluster-level 95% CI (used by the verdicts); thin: within-run 95% CI",
                ("shaded: noise floor between re-runs of the same conditions, "
                 f"x{floor_value:.3g}" if floor_value else "no noise floor known for these conditions")
                + "; dashed: no effect"]
    return alt.layer(*_floor_band(floor_value), cluster, within, points).properties(
        height=max(90, 36 * len(data)), title=alt.Title(title, subtitle=subtitle))


def forest_table(claims_table: pd.DataFrame) -> pd.DataFrame:
    """The verdicts that carry an effect with an interval, one row each, with a one-sentence summary."""
    rows = claims_table.dropna(subset=["value", "ci_low", "ci_high"]).copy()
    rows = rows[rows["unit"].astype(str).str.len() > 0]
    rows["sentence"] = rows.apply(_sentence, axis=1)
    return rows


def _sentence(r) -> str:
    unit = str(r["unit"])
    s = f"{r['claim_id']}: {r['verdict']}; measured {r['value']:.3g} {unit} [{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
    if isinstance(r.get("clusters"), str) and r.get("clusters"):
        s += f", cluster-level, {r['clusters']} clusters"
        if pd.notna(r.get("within_ci_low")):
            s += f" (within-run [{r['within_ci_low']:.3g}, {r['within_ci_high']:.3g}])"
    floor = r.get("noise_floor")
    if pd.notna(floor):
        verdict_floor = "clears" if (r["ci_low"] > floor or r["ci_high"] < 1 / floor) else "does not clear"
        s += f"; it {verdict_floor} the noise floor x{floor:.3g} between re-runs"
    return s + "."


def forest_chart(claims_table: pd.DataFrame, *, title: str = "How sure are we: every claim's measured effect"
                 ) -> alt.VConcatChart | None:
    """One forest plot per unit (speedups on a log scale; seconds and slopes linear); None if nothing to draw."""
    rows = forest_table(claims_table)
    if rows.empty:
        return None
    panels = []
    # every speedup (whatever its wording) on one log axis; seconds and slopes each on their own
    rows["panel"] = rows["unit"].astype(str).map(lambda u: "x (speedup, baseline / treatment)" if u.startswith("x") else u)
    for unit, g in rows.groupby("panel", sort=False):
        ratio = str(unit).startswith("x")
        scale = alt.Scale(type="log", nice=False, padding=20) if ratio else alt.Scale(zero=False, padding=20)
        y = alt.Y("claim_id:N", title=None, sort=list(g["claim_id"]))
        color = alt.Color("verdict:N", title="Verdict", scale=alt.Scale(
            domain=["supported", "partly supported", "not supported", "not testable here"],
            range=["#1a9850", "#fdae61", "#d73027", "#999999"]))
        layers = []
        floors = g["noise_floor"].dropna()
        if ratio:
            layers += _floor_band(float(floors.max()) if len(floors) else None)
        layers.append(alt.Chart(g).mark_rule(strokeWidth=6, opacity=0.45).encode(
            x=alt.X("ci_low:Q", scale=scale, title=f"Measured effect ({unit}{', log scale' if ratio else ''})"),
            x2="ci_high:Q", y=y, color=color))
        if g["within_ci_low"].notna().any():
            layers.append(alt.Chart(g.dropna(subset=["within_ci_low"])).mark_rule(strokeWidth=1.5).encode(
                x=alt.X("within_ci_low:Q", scale=scale), x2="within_ci_high:Q", y=y, color=color))
        layers.append(alt.Chart(g).mark_point(filled=True, size=70, color="black").encode(
            x=alt.X("value:Q", scale=scale), y=y,
            tooltip=["claim_id:N", "verdict:N", alt.Tooltip("value:Q", format=".3g"), "sentence:N"]))
        panels.append(alt.layer(*layers).properties(height=max(60, 34 * len(g)), width=520,
                                                   title=alt.Title(f"Effects in {unit}")))
    sub = ("thick: cluster-level 95% CI (used by the verdicts); thin: within-run 95% CI; shaded: the widest "
           "noise floor between re-runs of the same conditions")
    return alt.vconcat(*panels).properties(title=alt.Title(title, subtitle=sub))


def how_sure_html(claims_table: pd.DataFrame, results_root) -> str:
    """The results page's "How sure are we" section: the forest plot (saved beside the page) and one
    sentence per claim, then the verdict rule of each kind of claim."""
    from html import escape

    from .charts import apply_theme, save_chart
    from .rules import rules_table

    apply_theme()
    rows = forest_table(claims_table)
    parts = ['<h2 id="how-sure">How sure are we</h2>']
    chart = forest_chart(claims_table)
    if chart is not None:
        save_chart(chart, results_root, "how-sure")
        parts.append('<p><a href="how-sure.html"><img src="how-sure.png" alt="forest plot of every claim\'s '
                     'effect with both intervals and the noise floor" style="max-width:100%"></a></p>')
        parts.append("<ul>" + "".join(f"<li>{escape(s)}</li>" for s in rows["sentence"]) + "</ul>")
    else:
        parts.append('<p class="muted">No verdict with a measured interval yet.</p>')
    rules = rules_table()
    parts.append("<h3>The verdict rule of each kind of claim</h3><table><tr><th>kind</th><th>rule</th>"
                 "<th>claims</th></tr>" + "".join(f"<tr><td>{escape(r.kind)}</td><td>{escape(r.rule)}</td>"
                                                 f"<td>{escape(r.claims)}</td></tr>" for r in rules.itertuples())
                 + "</table>")
    return "\n".join(parts)
