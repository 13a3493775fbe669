"""Render a `RunReport` as one self-contained HTML page: inline CSS, plots as base64 PNG, no scripts, no external
resources. Every text is escaped; every missing section becomes a short note saying why."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from html import escape
from pathlib import Path

import matplotlib
import numpy as np

from selectflow.report import plots
from selectflow.report.data import Estimate, Probes, Risk, RunReport
from selectflow.select.strata import effective_strata

VERDICT_CLASS = {"ok": "ok", "at risk": "risk", "inconclusive": "inconclusive", "law contradicted": "contradicted",
                 "insufficient history": "unknown"}
COMPARISON_CLASS = {"better": "ok", "worse": "risk", "indistinguishable": "unknown", "not comparable": "refused"}
METRIC_NAMES = {"reference_bpb": "reference", "unseen_bpb": "unseen", "prequential_bpb": "first epoch (L)"}
SECTIONS = [
    ("funnel", "Stage funnel"),
    ("clusters", "Cluster composition"),
    ("domains", "Domain composition"),
    ("bandit", "QUAD bandit"),
    ("zip", "ZIP rounds"),
    ("probes", "Probe training"),
    ("risk", "Entropy-law risk"),
    ("mixture", "Mixture search"),
    ("curriculum", "Curricula"),
]

CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d8dee4; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.5;
  font: 15px/1.5 -apple-system, "Segoe UI", "Helvetica Neue", "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1060px; margin: 0 auto; padding: 24px 28px 64px; }
header h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
header p { margin: 0; color: var(--muted); font-size: 13px; }
code, td.num { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
.verdict { margin: 20px 0 8px; padding: 16px 20px; border-radius: 10px; border-left: 8px solid; }
.verdict .label { font-size: 13px; text-transform: uppercase; letter-spacing: 0.06em; color: var(--muted); }
.verdict .value { font-size: 28px; font-weight: 700; margin: 2px 0 6px; }
.verdict p { margin: 0; max-width: 80ch; }
.verdict.ok { background: #e9f7ef; border-color: #1a7f37; } .verdict.ok .value { color: #1a7f37; }
.verdict.risk { background: #fdecec; border-color: #cf222e; } .verdict.risk .value { color: #cf222e; }
.verdict.unknown { background: #fff6e0; border-color: #bf8700; } .verdict.unknown .value { color: #9a6700; }
.verdict.inconclusive { background: #eef4fd; border-color: #0969da; } .verdict.inconclusive .value { color: #0550ae; }
.verdict.contradicted { background: #f6f0fe; border-color: #8250df; }
.verdict.contradicted .value { color: #6639ba; }
.verdict.none { background: var(--bg); border-color: #8c959f; } .verdict.none .value { color: var(--muted); }
nav { margin: 12px 0 8px; font-size: 13px; } nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
section { margin-top: 34px; }
h2 { font-size: 19px; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
figure { margin: 8px 0 12px; } figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13.5px; }
th, td { padding: 4px 12px 4px 0; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; padding-left: 12px; }
.note { background: var(--bg); border: 1px dashed var(--line); border-radius: 8px; padding: 10px 14px;
  color: var(--muted); margin: 8px 0; }
td.subset { white-space: nowrap; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.badge.ok { background: #dafbe1; color: #1a7f37; } .badge.risk { background: #ffebe9; color: #cf222e; }
.badge.unknown { background: #fff8c5; color: #9a6700; }
.badge.inconclusive { background: #ddf4ff; color: #0550ae; }
.badge.contradicted { background: #fbefff; color: #6639ba; }
.badge.refused { background: #eaeef2; color: #59636e; }
ul.sentences, ul.notes { margin: 6px 0 10px; padding-left: 20px; font-size: 14px; }
ul.notes { color: var(--muted); }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 8px 0; font-size: 14px; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
"""


def render_report(report: RunReport) -> str:
    """The report as one self-contained HTML page."""
    names = report.subset_names()
    colours = plots.subset_colours(names)
    with matplotlib.rc_context(plots.RC_PARAMS):
        body = [
            _header(report),
            _verdict_banner(report.risk),
            _recommendation_banner(report.probes),
            "<nav>" + "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title in SECTIONS) + "</nav>",
            _config_section(report, colours),
            _funnel_section(report, colours),
            _cluster_section(report, names, colours),
            _domain_section(report, names, colours),
            _bandit_section(report, colours),
            _zip_section(report, colours),
            _probe_section(report, names, colours),
            _risk_section(report, names, colours),
            _mixture_section(report),
            _curriculum_section(report),
        ]
    title = f"selectflow run {report.run_name or report.run_id}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


def write_report(report: RunReport, path: str | Path) -> Path:
    """Render and write the report (UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(report), encoding="utf-8")
    return path


# ---------------------------------------------------------------- pieces


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


class _Figures(str):
    """Pre-formatted numbers (an interval): shown like a number, right-aligned in monospace."""


def _cell(value, digits: int = 4) -> str:
    if isinstance(value, _Figures):
        return f'<td class="num">{escape(value)}</td>'
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return f'<td class="num">{escape(_fmt(value, digits))}</td>' if numeric else f"<td>{escape(_fmt(value))}</td>"


def _table(headers: Sequence[str], rows: Iterable[Sequence], first_raw: bool = False, numeric_from: int = 1) -> str:
    """A table; with first_raw, the first cell of each row is trusted HTML (a subset swatch built here)."""
    head = "".join(
        f'<th class="num">{escape(h)}</th>' if i >= numeric_from else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    lines = []
    for row in rows:
        first = f'<td class="subset">{row[0]}</td>' if first_raw else _cell(row[0])
        lines.append("<tr>" + first + "".join(_cell(v) for v in row[1:]) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _subset_label(name: str, colours: dict[str, str]) -> str:
    colour = colours.get(name, "#333333")
    return f'<span class="swatch" style="background:{escape(colour)}"></span>{escape(name)}'


def _facts(items: Sequence[tuple[str, object]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(_fmt(v))}</dd>" for k, v in items) + "</dl>"


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _section(key: str, body: str) -> str:
    title = dict(SECTIONS).get(key, key)
    return f'<section id="{escape(key)}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def _figure_html(make: Callable[[], object], alt: str, caption: str = "") -> str:
    """Render a plot; '' when it has nothing to draw."""
    fig = make()
    if fig is None:
        return ""
    png = plots.figure_png(fig)
    width, height = (round(v * 100) for v in fig.get_size_inches())
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return (
        f'<figure><img src="{plots.png_data_uri(png)}" alt="{escape(alt)}" width="{width}" height="{height}">'
        f"{cap}</figure>"
    )


def _header(report: RunReport) -> str:
    bits = [f"run <code>{escape(report.run_id)}</code>"]
    if report.created_at:
        bits.append(escape(report.created_at.strftime("%Y-%m-%d %H:%M %Z").strip()))
    if report.code_version:
        bits.append(f"code <code>{escape(report.code_version)}</code>")
    title = report.run_name or "selectflow run report"
    return f"<header><h1>{escape(title)}</h1><p>{' · '.join(bits)}</p></header>"


def _verdict_banner(risk: Risk | None) -> str:
    if risk is None:
        return ('<div class="verdict none" id="verdict"><div class="label">Risk verdict</div>'
                '<div class="value">not checked</div><p>This run has no entropy-law risk check.</p></div>')
    css = VERDICT_CLASS[risk.overall]
    reason = f"<p>{escape(risk.reason)}</p>" if risk.reason else ""
    return (f'<div class="verdict {css}" id="verdict"><div class="label">Risk verdict</div>'
            f'<div class="value">{escape(risk.overall)}</div>{reason}</div>')


def _recommendation_banner(probes: Probes | None) -> str:
    if probes is None or probes.recommendation is None:
        return ""
    css, value = ("ok", probes.recommended) if probes.recommended else ("none", f"none beats {probes.baseline}")
    return (f'<div class="verdict {css}" id="recommendation"><div class="label">Recommended subset</div>'
            f'<div class="value">{escape(value)}</div><p>{escape(probes.recommendation)}</p></div>')


def _config_section(report: RunReport, colours: dict[str, str]) -> str:
    parts = []
    if report.config:
        parts.append(_table(["setting", "value"], report.config.items(), numeric_from=2))
    names = report.subset_names()
    if names:
        parts.append("<p>Subsets (one colour each, in every plot): "
                     + " &nbsp; ".join(_subset_label(n, colours) for n in names) + "</p>")
    body = "\n".join(parts) or _note("No configuration summary was recorded for this run.")
    return f'<section id="summary"><h2>Run summary</h2>\n{body}\n</section>'


def _funnel_section(report: RunReport, colours: dict[str, str]) -> str:
    if not report.funnel:
        return _section("funnel", _note("No stage counts were recorded for this run."))
    rows = [
        (s.stage, s.docs_in, s.docs_out, s.dropped, round(100.0 * s.docs_out / s.docs_in, 1) if s.docs_in else None,
         s.work_s)
        for s in report.funnel
    ]
    plot = _figure_html(lambda: plots.funnel_figure(report.funnel, colours), "stage funnel: documents per stage")
    table = _table(["stage", "docs in", "docs out", "dropped", "kept %", "work s"], rows)
    return _section("funnel", plot + table)


def _cluster_section(report: RunReport, names: list[str], colours: dict[str, str]) -> str:
    clusters = report.clusters
    if clusters is None or not clusters.pool:
        return _section("clusters", _note("No cluster composition: this run did not cluster the pool."))
    k = len(clusters.pool)
    rows = [(plots.POOL, clusters.pool)] + [(n, clusters.subsets[n]) for n in names if n in clusters.subsets]
    table_rows = []
    for name, counts in rows:
        total = sum(counts.values())
        covered = sum(1 for v in counts.values() if v > 0)
        top = max(counts, key=counts.get) if counts else None
        top_share = round(100.0 * counts[top] / total, 1) if total else None
        table_rows.append((_subset_label(name, colours), total, covered, effective_strata(counts.values()),
                           f"{top} {clusters.labels.get(top, '')}".strip() if top is not None else None, top_share))
    plot = _figure_html(lambda: plots.cluster_figure(clusters, names, colours), "cluster composition per subset")
    table = _table(["subset", "docs", f"clusters covered (of {k})", "effective clusters", "largest cluster",
                    "largest share %"], table_rows, first_raw=True)
    caption = "Effective clusters = exp(entropy of the cluster shares): how many equally sized clusters it spans."
    return _section("clusters", plot + table + f"<p class=\"caption\">{escape(caption)}</p>")


def _domain_section(report: RunReport, names: list[str], colours: dict[str, str]) -> str:
    domains = report.domains
    if domains is None or not (domains.pool or domains.subsets):
        return _section("domains", _note("No domain counts were recorded for this run."))
    groups = ([plots.POOL] if domains.pool else []) + [n for n in names if n in domains.subsets]
    counts = {plots.POOL: domains.pool, **domains.subsets}
    totals: dict[str, int] = {}
    for group in groups:
        for domain, n in counts[group].items():
            totals[domain] = totals.get(domain, 0) + n
    shown = sorted(totals, key=lambda d: (-totals[d], d))[: plots.MAX_DOMAINS]
    rows = [(d, *(counts[g].get(d, 0) for g in groups)) for d in shown]
    if len(totals) > len(shown):
        rest = set(totals) - set(shown)
        rows.append((f"other ({len(rest)})", *(sum(counts[g].get(d, 0) for d in rest) for g in groups)))
    plot = _figure_html(lambda: plots.domain_figure(domains, names, colours), "domain composition per subset")
    return _section("domains", plot + _table(["domain (documents)", *groups], rows))


def _missing_selector_note(report: RunReport, what: str, selector: str) -> str:
    chosen = report.config.get("selectors")
    why = f" (selectors: {chosen})" if chosen is not None else ""
    return _note(f"No {what} in this run{why}: it appears when the {selector} selector runs.")


def _bandit_section(report: RunReport, colours: dict[str, str]) -> str:
    bandit = report.bandit
    if bandit is None:
        return _section("bandit", _missing_selector_note(report, "bandit rounds", "quad"))
    pulls = [(c, r) for rnd in bandit.rounds for c, r in zip(rnd.pulled, rnd.rewards)]
    rewarded = sum(1 for _, r in pulls if r > 0)
    facts = [
        ("subset", bandit.subset),
        ("bandit", bandit.kind.upper()),
        ("rounds", len(bandit.rounds)),
        ("pulls", len(pulls)),
        ("distinct clusters pulled", len({c for c, _ in pulls})),
        ("rewarded pulls", f"{rewarded:,} ({100.0 * rewarded / len(pulls):.0f}%)" if pulls else "–"),
        ("mean reward", float(np.mean([r for _, r in pulls])) if pulls else None),
        ("selected documents", bandit.rounds[-1].selected_docs),
    ]
    plot = _figure_html(lambda: plots.bandit_figure(bandit, colours), "bandit pulls and rewards per round")
    return _section("bandit", _facts(facts) + plot)


def _zip_section(report: RunReport, colours: dict[str, str]) -> str:
    zip_ = report.zip
    if zip_ is None:
        return _section("zip", _missing_selector_note(report, "ZIP rounds", "zip"))
    first, last = zip_.rounds[0], zip_.rounds[-1]
    facts = [
        ("subset", zip_.subset),
        ("rounds", len(zip_.rounds)),
        ("selected documents", last.n_selected),
        ("ratio: first → last round", f"{_fmt(first.selected_ratio)} → {_fmt(last.selected_ratio)}"),
        ("pool left", last.pool_left),
    ]
    plot = _figure_html(lambda: plots.zip_figure(zip_, colours), "ZIP compression ratio per round")
    return _section("zip", _facts(facts) + plot)


def _mixture_section(report: RunReport) -> str:
    mixture = report.mixture
    if mixture is None:
        return _section("mixture", _missing_selector_note(report, "mixture search", "mixture"))
    facts = [("components", len(mixture.components)), ("mixtures probed", len(mixture.trials)),
             ("target", f"{mixture.target} held-out bpb"),
             ("fit's Spearman on left-out mixtures", "n/a" if mixture.spearman_cv is None
              else f"{mixture.spearman_cv:.2f}"),
             ("predicted bpb: proposed / natural", f"{_fmt(mixture.predicted)} / {_fmt(mixture.predicted_natural)}")]
    note = "" if mixture.preferred else _note("The fit predicts the same loss for every mixture: the natural "
                                             "proportions are kept.")
    rows = [(name, f"{natural:.3f}", f"{weight:.3f}")
            for name, natural, weight in zip(mixture.components, mixture.natural, mixture.weights)]
    plot = _figure_html(lambda: plots.mixture_figure(mixture), "Mixture weights, fit and validation")
    return _section("mixture", _facts(facts) + note + f"<p>{escape(mixture.verdict)}</p>" + plot +
                    _table(["component", "natural", "proposed"], rows))


def _curriculum_section(report: RunReport) -> str:
    curriculum = report.curriculum
    if curriculum is None:
        return _section("curriculum", _note("No curriculum comparison in this run (curriculum.enabled: false)."))
    plot = _figure_html(lambda: plots.curriculum_figure(curriculum), "Held-out curves per order")
    return _section("curriculum", f"<p>{escape(curriculum.verdict)}</p>" + plot)


def _interval(value: Estimate | None, digits: int = 3) -> _Figures:
    if value is None:
        return _Figures("–")
    if value.low is None:
        return _Figures(f"{value.mean:.{digits}f} (1 seed)")
    return _Figures(f"{value.mean:.{digits}f} [{value.low:.{digits}f}, {value.high:.{digits}f}]")


def _epochs(epochs: float | None) -> _Figures:
    if epochs is None:
        return _Figures("–")
    return _Figures(f"{epochs:.2f}" + (" (repeated)" if epochs > 1.0 + 1e-9 else ""))


def _probe_section(report: RunReport, names: list[str], colours: dict[str, str]) -> str:
    probes = report.probes
    if probes is None or not probes.subsets:
        return _section("probes", _note("No probe models were trained in this run."))
    ordered = [n for n in names if n in probes.subsets]
    conf = f"{100 * probes.confidence:.0f}%"
    facts = [("training tokens per probe", probes.budget_tokens),
             ("seeds (paired)", ", ".join(map(str, probes.seeds)) or None),
             ("intervals", f"{conf} t interval over seeds" if len(probes.seeds) > 1 else "none (one seed)"),
             ("baseline", probes.baseline),
             ("learning-speed level", f"{probes.speed_level:.3f} reference bpb" if probes.speed_level else None)]
    parts = [_facts(facts), "<p>Every loss is in bits per byte (bpb): lower is better.</p>"]
    curves = _figure_html(lambda: plots.probe_figure(probes, ordered, colours),
                          "probe curves: training and held-out bits per byte with confidence bands",
                          f"Lines: mean over seeds; shaded bands: {conf} confidence interval over seeds at each "
                          "evaluated step.")
    parts.append(curves or _note("The probes recorded no loss curve."))
    parts.append(_verdicts(probes, ordered, colours))
    parts.append(_differences(probes, names, colours))
    rows = [(_subset_label(n, colours), _epochs(s.epochs), _interval(s.reference_bpb), _interval(s.unseen_bpb),
             _interval(s.prequential_bpb), _Figures(s.speed or "–"))
            for n in ordered for s in [probes.subsets[n].summary]]
    parts.append(f"<h3>Results over seeds (mean [{conf} CI])</h3>" + _table(
        ["subset", "epochs", "reference bpb", "unseen bpb", "first-epoch bpb L", "learning speed (steps)"], rows,
        first_raw=True))
    if probes.notes:
        parts.append("<h3>Notes</h3><ul class=\"notes\">" + "".join(f"<li>{escape(n)}</li>" for n in probes.notes)
                     + "</ul>")
    return _section("probes", "\n".join(parts))


def _verdicts(probes: Probes, ordered: list[str], colours: dict[str, str]) -> str:
    items = [f"<li>{_subset_label(n, colours)}: {escape(probes.subsets[n].verdict)}</li>"
             for n in ordered if probes.subsets[n].verdict]
    if not items:
        return ""
    return f"<h3>Verdicts vs {escape(probes.baseline)}</h3><ul class=\"sentences\">{''.join(items)}</ul>"


def _difference_text(diff) -> _Figures | str:
    if diff.verdict == "not comparable":
        return "not comparable"
    if diff.low is None:
        return _Figures(f"{diff.mean:+.3f} (1 seed)")
    return _Figures(f"{diff.mean:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]")


def _differences(probes: Probes, names: list[str], colours: dict[str, str]) -> str:
    if not probes.differences:
        return _note(f"No paired differences: the {probes.baseline} subset and at least one other were not both "
                     "probed, so nothing was compared.")
    forest = _figure_html(lambda: plots.forest_figure(probes, names, colours),
                          f"forest plot: each subset's paired difference vs {probes.baseline} with its interval",
                          f"Subset minus {probes.baseline}, paired by seed; left of the line at 0 is better. A "
                          "comparison across different repetition (epochs) is refused: 'not comparable'.")
    order = {name: index for index, name in enumerate(names)}
    metrics = list(METRIC_NAMES)
    ranked = sorted(probes.differences, key=lambda d: (order.get(d.subset, len(order)), d.subset,
                                                        metrics.index(d.metric) if d.metric in metrics else 9))
    rows = "".join(
        f'<tr><td class="subset">{_subset_label(d.subset, colours)}</td>'
        f"<td>{escape(METRIC_NAMES.get(d.metric, d.metric))}</td>{_cell(_difference_text(d))}"
        f'<td><span class="badge {COMPARISON_CLASS[d.verdict]}">{escape(d.verdict)}</span></td>'
        f"<td>{escape(d.sentence)}</td></tr>"
        for d in ranked)
    table = ('<table class="differences"><thead><tr><th>subset</th><th>set</th>'
             f'<th class="num">difference vs {escape(probes.baseline)} (bpb)</th><th>verdict</th><th>detail</th>'
             f"</tr></thead><tbody>{rows}</tbody></table>")
    return f"<h3>Differences vs {escape(probes.baseline)}</h3>" + forest + table


def _risk_section(report: RunReport, names: list[str], colours: dict[str, str]) -> str:
    risk = report.risk
    if risk is None:
        return _section("risk", _note("No entropy-law risk check in this run (it needs probe training)."))
    parts = []
    fit_needs = f" The fit needs at least {risk.min_history} earlier runs." if risk.min_history is not None else ""
    if risk.fit is None:
        parts.append(_note(f"No fit yet: the history holds {len(risk.history)} earlier run(s).{fit_needs} "
                           "The scatter shows the points that exist."))
    plot = _figure_html(lambda: plots.risk_figure(risk, names, colours),
                        "R versus held-out bits per byte with this run and the fit's sign")
    parts.append(plot or _note("Nothing to plot: neither this run nor the history has both R and a held-out bpb."))
    if risk.subsets:
        rows = [(_subset_label(n, colours), risk.subsets[n].R_zlib, risk.subsets[n].R_zstd, risk.subsets[n].L,
                 risk.subsets[n].heldout_bpb) for n in names if n in risk.subsets]
        parts.append("<h3>This run</h3>" + _table(
            ["subset", "R_zlib", "R_zstd", "first-epoch bpb L", "reference held-out bpb"], rows, first_raw=True))
    if risk.checks:
        rows = "".join(
            f"<tr><td>{escape(c.name)}</td>"
            f"<td class=\"subset\">{_subset_label(c.subset, colours) if c.subset else '–'}</td>"
            f'<td><span class="badge {VERDICT_CLASS[c.verdict]}">{escape(c.verdict)}</span></td>'
            f"<td>{escape(c.detail)}</td></tr>"
            for c in risk.checks
        )
        parts.append("<h3>Checks</h3><table><thead><tr><th>check</th><th>subset</th><th>verdict</th><th>detail</th>"
                     f"</tr></thead><tbody>{rows}</tbody></table>")
    if risk.fit is not None:
        fit = risk.fit
        facts = [(f"coefficient {k}", v) for k, v in fit.coefficients.items()]
        if (sign := plots.fit_sign_text(risk)) is not None:
            facts.append((f"R's coefficient ({100 * fit.level:.0f}% interval)", sign))
        if fit.direction:
            facts.append(("direction", fit.direction))
        facts += [("runs in the fit", fit.n_runs), ("predicted held-out bpb", fit.predicted_heldout)]
        if fit.interval is not None:
            facts.append((f"{100 * fit.level:.0f}% interval", f"{_fmt(fit.interval[0])} – {_fmt(fit.interval[1])}"))
        parts.append("<h3>Fit: held-out bpb ~ a + b·R + c·L</h3>" + _facts(facts))
    return _section("risk", "\n".join(parts))
