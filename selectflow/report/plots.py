"""The report's plots: one function per section, each returning a matplotlib Figure (or None when there is nothing
to draw). Uses `matplotlib.figure.Figure` directly, so no pyplot state and no global backend switch."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Sequence

import numpy as np
from matplotlib.figure import Figure

from selectflow.report.data import (
    Bandit,
    BandPoint,
    ClusterComposition,
    Curriculum,
    DomainComposition,
    Estimate,
    FunnelStep,
    Mixture,
    Probes,
    Risk,
    Zip,
)

POOL = "pool"
POOL_COLOUR = "#b8b8b8"
# Okabe-Ito (colour-blind safe); the usual subsets get fixed colours so that runs look alike.
KNOWN_COLOURS = {"zip": "#0072B2", "quad": "#D55E00", "random": "#E69F00", "topk": "#009E73"}
SPARE_COLOURS = ["#CC79A7", "#56B4E9", "#8c564b", "#F0E442", "#17becf", "#7f7f7f", "#bcbd22", "#9467bd"]
SET_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
SET_TITLES = {"reference": "reference (target) set", "unseen": "unseen-domain set"}
FOREST_METRICS = {"reference_bpb": "reference set", "unseen_bpb": "unseen-domain set"}
DPI = 150  # images are shown at 100 px per inch, so they stay sharp on high-density screens
MAX_CLUSTERS = 40
MAX_DOMAINS = 10
MAX_HEATMAP_CLUSTERS = 40

RC_PARAMS = {
    "font.family": "DejaVu Sans",
    "font.size": 9.0,
    "axes.titlesize": 10.0,
    "axes.labelsize": 9.0,
    "legend.fontsize": 8.0,
}


def subset_colours(names: Iterable[str]) -> dict[str, str]:
    """One colour per subset, the same in every plot: fixed for known names, then spare colours in order."""
    colours = {POOL: POOL_COLOUR}
    spare = iter(SPARE_COLOURS)
    for name in names:
        if name in colours:
            continue
        colours[name] = KNOWN_COLOURS.get(name) or next(spare, None) or "#333333"
    return colours


def figure_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(width: float, height: float, ncols: int = 1, **kw) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False, **kw)[0]
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="y", color="#e6e6e6", linewidth=0.8)
        ax.set_axisbelow(True)
    return fig, list(axes)


def _subset_stage(stage: str) -> str | None:
    return stage.removeprefix("select_") if stage.startswith("select_") else None


def funnel_figure(funnel: Sequence[FunnelStep], colours: dict[str, str]) -> Figure | None:
    if not funnel:
        return None
    fig, (ax,) = _figure(9, 0.45 * len(funnel) + 1.1)
    ax.grid(False)
    ax.grid(axis="x", color="#e6e6e6", linewidth=0.8)
    y = np.arange(len(funnel))[::-1]
    docs_in = [s.docs_in for s in funnel]
    docs_out = [s.docs_out for s in funnel]
    bar_colours = [colours.get(_subset_stage(s.stage) or "", "#4a4a4a") for s in funnel]
    ax.barh(y, docs_in, color="#ececec", edgecolor="#d0d0d0", height=0.7, label="documents in")
    ax.barh(y, docs_out, color=bar_colours, height=0.7, label="documents out")
    top = max(docs_in + docs_out) or 1
    for yi, step in zip(y, funnel):
        kept = f" ({100 * step.docs_out / step.docs_in:.1f}% kept)" if step.docs_in else ""
        ax.text(step.docs_out + top * 0.01, yi, f"{step.docs_out:,}{kept}", va="center", fontsize=8)
    ax.set_yticks(y, [s.stage for s in funnel])
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel("documents")
    ax.set_title("Documents in and out of each stage (DAG order)")
    ax.legend(loc="lower right", frameon=False)
    return fig


def _top_keys(sizes: dict, limit: int) -> tuple[list, list]:
    ordered = sorted(sizes, key=lambda key: (-sizes[key], str(key)))
    return ordered[:limit], ordered[limit:]


def _shares(counts: dict, shown: list, rest: list) -> np.ndarray:
    total = sum(counts.values()) or 1
    values = [counts.get(key, 0) for key in shown]
    if rest:
        values.append(sum(counts.get(key, 0) for key in rest))
    return 100.0 * np.asarray(values, float) / total


def cluster_figure(clusters: ClusterComposition, subsets: Sequence[str], colours: dict[str, str]) -> Figure | None:
    if not clusters.pool:
        return None
    extra = {c: 0 for counts in clusters.subsets.values() for c in counts if c not in clusters.pool}
    sizes = {**extra, **clusters.pool}
    shown, rest = _top_keys(sizes, MAX_CLUSTERS)
    ticks = [f"{c} {clusters.labels[c]}" if c in clusters.labels else str(c) for c in shown]
    x = np.arange(len(ticks))
    fig, (ax,) = _figure(9.5, 3.9)
    # shares of the whole set; the clusters not shown are left out of the plot (a bar for them would flatten the rest)
    ax.bar(x, _shares(clusters.pool, shown, rest)[: len(shown)], color=POOL_COLOUR, width=0.8, label="pool")
    names = [name for name in subsets if name in clusters.subsets]
    offsets = np.linspace(-0.25, 0.25, len(names)) if len(names) > 1 else [0.0]
    for offset, name in zip(offsets, names):
        ax.plot(x + offset, _shares(clusters.subsets[name], shown, rest)[: len(shown)], "o", ms=4.5,
                color=colours[name], label=name, markeredgecolor="white", markeredgewidth=0.5)
    ax.set_xticks(x, ticks, rotation=60, ha="right", fontsize=7)
    ax.set_xlim(-0.7, len(ticks) - 0.3)
    ax.set_ylabel("share of documents (%)")
    if rest:
        hidden = _shares(clusters.pool, shown, rest)[-1]
        ax.set_xlabel(f"cluster, largest in the pool first (the {len(rest)} smallest, {hidden:.0f}% of the pool, "
                      "not shown)")
    else:
        ax.set_xlabel("cluster, largest in the pool first")
    ax.set_title(f"Cluster composition: pool (bars) and each subset (dots), {len(sizes)} clusters")
    fig.legend(frameon=False, ncols=len(names) + 1, loc="outside upper center")
    return fig


def domain_figure(domains: DomainComposition, subsets: Sequence[str], colours: dict[str, str]) -> Figure | None:
    groups = ([POOL] if domains.pool else []) + [name for name in subsets if name in domains.subsets]
    counts = {POOL: domains.pool, **domains.subsets}
    totals: dict[str, int] = {}
    for name in groups:
        for domain, n in counts[name].items():
            totals[domain] = totals.get(domain, 0) + n
    if not totals:
        return None
    shown, rest = _top_keys(totals, MAX_DOMAINS)
    ticks = shown + ([f"other ({len(rest)})"] if rest else [])
    x = np.arange(len(ticks))
    width = 0.8 / len(groups)
    fig, (ax,) = _figure(9, 3.4)
    for index, name in enumerate(groups):
        ax.bar(x - 0.4 + width * (index + 0.5), _shares(counts[name], shown, rest), width=width,
               color=colours[name], label=name)
    ax.set_xticks(x, ticks, rotation=20 if len(ticks) > 6 else 0, ha="right" if len(ticks) > 6 else "center")
    ax.set_ylabel("share of documents (%)")
    ax.set_xlabel("domain")
    ax.set_title("Domain composition of the pool and of each subset")
    ax.legend(frameon=False, ncols=min(len(groups), 6))
    return fig


def bandit_figure(bandit: Bandit, colours: dict[str, str]) -> Figure:
    rounds = bandit.rounds
    pulls: dict[int, int] = {}
    for r in rounds:
        for cluster in r.pulled:
            pulls[cluster] = pulls.get(cluster, 0) + 1
    shown = sorted(pulls, key=lambda c: (-pulls[c], c))[:MAX_HEATMAP_CLUSTERS]
    shown.sort()
    row = {cluster: index for index, cluster in enumerate(shown)}
    grid = np.full((len(shown), len(rounds)), np.nan)
    for col, r in enumerate(rounds):
        for cluster, reward in zip(r.pulled, r.rewards):
            if cluster in row:
                grid[row[cluster], col] = reward
    fig, (heat, progress) = _figure(10, max(3.2, 0.12 * len(shown) + 1.4), ncols=2, width_ratios=[1.6, 1])
    heat.grid(False)
    bound = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    image = heat.imshow(grid, aspect="auto", cmap="RdBu", vmin=-bound or -1, vmax=bound or 1, interpolation="nearest")
    fig.colorbar(image, ax=heat, label="reward (mean influence - threshold)", shrink=0.9)
    heat.set_xlabel("round")
    heat.set_ylabel("cluster")
    step = max(1, math.ceil(len(shown) / 20))
    heat.set_yticks(range(0, len(shown), step), [str(c) for c in shown[::step]], fontsize=7)
    heat.set_xticks(range(len(rounds))[:: max(1, len(rounds) // 10)],
                    [str(r.round) for r in rounds][:: max(1, len(rounds) // 10)])
    more = f", {MAX_HEATMAP_CLUSTERS} most pulled of {len(pulls)}" if len(pulls) > len(shown) else ""
    heat.set_title(f"Reward of each pulled cluster (blank: not pulled{more})")

    x = [r.round for r in rounds]
    colour = colours.get(bandit.subset, "#333333")
    rewarded = [sum(reward > 0 for reward in r.rewards) for r in rounds]
    progress.bar(x, rewarded, color=colour, alpha=0.3, label="rewarded pulls")
    progress.set_xlabel("round")
    progress.set_ylabel("rewarded pulls (reward > 0)")
    docs = progress.twinx()
    docs.plot(x, [r.selected_docs for r in rounds], "-o", ms=3, color=colour, label="selected documents")
    docs.set_ylabel("selected documents so far")
    docs.spines[["top"]].set_visible(False)
    docs.set_ylim(bottom=0)
    handles = progress.get_legend_handles_labels()[0] + docs.get_legend_handles_labels()[0]
    progress.legend(handles=handles, frameon=False, loc="upper left")
    progress.set_title(f"{bandit.kind.upper()} progress ({bandit.subset})")
    return fig


def zip_figure(zip_: Zip, colours: dict[str, str]) -> Figure:
    rounds = zip_.rounds
    colour = colours.get(zip_.subset, "#333333")
    x = [r.round for r in rounds]
    fig, (ax,) = _figure(9, 3.2)
    ax.bar(x, [r.n_selected for r in rounds], color=colour, alpha=0.25, label="selected documents")
    ax.set_xlabel("round")
    ax.set_ylabel("selected documents")
    ratio = ax.twinx()
    ratio.plot(x, [r.selected_ratio for r in rounds], "-o", ms=4, color=colour, label="compression ratio")
    ratio.set_ylabel("compression ratio of the selected set\n(raw bytes / compressed bytes)")
    ratio.spines[["top"]].set_visible(False)
    handles = ax.get_legend_handles_labels()[0] + ratio.get_legend_handles_labels()[0]
    ax.legend(handles=handles, frameon=False, loc="upper left")
    ax.set_title(f"ZIP: compression ratio of the selected set per round ({zip_.subset}; lower = less redundant)")
    return fig


def _draw_band(ax, points: Sequence[BandPoint], colour: str, label: str, marker: str | None = None) -> None:
    """The mean line and, where there is an interval, its shaded band."""
    steps = [p.step for p in points]
    ax.plot(steps, [p.mean for p in points], color=colour, lw=1.4, marker=marker, ms=3.5, label=label)
    banded = [p for p in points if p.low is not None]
    if banded:
        ax.fill_between([p.step for p in banded], [p.low for p in banded], [p.high for p in banded], color=colour,
                        alpha=0.2, linewidth=0)


def _seed_text(probes: Probes) -> str:
    n = len(probes.seeds)
    return f"{100 * probes.confidence:.0f}% CI over {n} seeds" if n > 1 else "one seed, no interval"


def probe_figure(probes: Probes, subsets: Sequence[str], colours: dict[str, str]) -> Figure | None:
    """Training bpb (mean over seeds) and each held-out set's bpb with its confidence band, per subset."""
    names = [name for name in subsets if name in probes.subsets]
    order = list(SET_TITLES)
    sets = sorted({s for name in names for s, points in probes.subsets[name].heldout.items() if points},
                  key=lambda s: (order.index(s) if s in order else len(order), s))
    panels = (["train"] if any(probes.subsets[name].train for name in names) else []) + sets
    if not panels:
        return None
    fig, axes = _figure(10.5 if len(panels) > 2 else 10, 3.7, ncols=len(panels))
    for ax, panel in zip(axes, panels):
        for name in names:
            result = probes.subsets[name]
            points = result.train if panel == "train" else result.heldout.get(panel, [])
            if points:
                _draw_band(ax, points, colours[name], name, None if panel == "train" else "o")
        ax.set_xlabel("training step")
        if panel == "train":
            ax.set_ylabel("training loss (bits/byte)")
            ax.set_title("Training bpb, mean over seeds")
        else:
            ax.set_ylabel("held-out bits/byte")
            ax.set_title(f"Held-out bpb: {SET_TITLES.get(panel, panel)}")
            if panel == "reference" and probes.speed_level is not None:
                ax.axhline(probes.speed_level, ls=":", color="#555555", lw=1,
                           label=f"speed level {probes.speed_level:.3f}")
    handles, labels = axes[-1].get_legend_handles_labels()
    for ax in axes[:-1]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, frameon=False, loc="outside lower center", ncols=min(len(labels), 6))
    fig.suptitle(f"Probe curves: mean over seeds, shaded {_seed_text(probes)} (lower is better)", fontsize=10)
    return fig


def mixture_figure(mixture: Mixture) -> Figure:
    """The natural and the proposed weights per component; each probed mixture's measured bpb against the fit's
    prediction from the other mixtures; the proposed mixture's paired differences from the natural and uniform."""
    fig, (weights_ax, fit_ax, forest_ax) = _figure(11, 3.8, ncols=3)
    x = np.arange(len(mixture.components))
    weights_ax.bar(x - 0.2, mixture.natural, width=0.4, color=POOL_COLOUR, label="natural (pool)")
    weights_ax.bar(x + 0.2, mixture.weights, width=0.4, color=SPARE_COLOURS[0], label="proposed")
    weights_ax.set_xticks(x, mixture.components, rotation=45, ha="right", fontsize=7)
    weights_ax.set_ylabel("weight (share of bytes)")
    weights_ax.set_title("Mixture weights")
    weights_ax.legend(frameon=False)
    measured = [t.measured for t in mixture.trials]
    fit_ax.plot(measured, [t.predicted for t in mixture.trials], "o", color=SPARE_COLOURS[0], ms=5)
    if measured:
        low, high = min(measured), max(measured)
        fit_ax.plot([low, high], [low, high], ls=":", color="#555555", lw=1)
    rho = "n/a" if mixture.spearman_cv is None else f"{mixture.spearman_cv:.2f}"
    fit_ax.set_xlabel(f"measured {mixture.target} bpb")
    fit_ax.set_ylabel("predicted from the other mixtures")
    fit_ax.set_title(f"Fit, cross-validated (Spearman {rho})")
    _estimate_forest(forest_ax, [(f"- {name}", estimate, SPARE_COLOURS[0])
                                 for name, estimate in mixture.differences.items()])
    forest_ax.set_xlabel(f"proposed - other, {mixture.target} bpb")
    forest_ax.set_title("Validation (left of 0: proposed better)")
    return fig


def curriculum_figure(curriculum: Curriculum) -> Figure:
    """Reference held-out bpb per order over the training steps (mean, shaded interval), and each order's area under
    that curve minus the shuffled order's."""
    fig, (curve_ax, forest_ax) = _figure(10.5, 3.7, ncols=2)
    orders = list(curriculum.curves)
    for order, colour in zip(orders, SPARE_COLOURS):
        _draw_band(curve_ax, curriculum.curves[order], colour, order, "o")
    curve_ax.set_xlabel("training step")
    curve_ax.set_ylabel("reference held-out bits/byte")
    curve_ax.set_title(f"{curriculum.subset}: one budget of documents in each order")
    curve_ax.legend(frameon=False)
    _estimate_forest(forest_ax, [(name, estimate, SPARE_COLOURS[orders.index(name) % 8] if name in orders
                                  else "#333333") for name, estimate in curriculum.vs_shuffled.items()])
    forest_ax.set_xlabel("area under the curve, order - shuffled (bits/byte)")
    forest_ax.set_title(f"Learning speed vs shuffled ({100 * curriculum.confidence:.0f}% CI; left: faster)")
    return fig


def _estimate_forest(ax, rows: list[tuple[str, Estimate, str]]) -> None:
    """A forest of (label, estimate, colour) rows, top to bottom: each mean with its interval, filled when the
    interval excludes 0."""
    ax.grid(False)
    ax.grid(axis="x", color="#e6e6e6", linewidth=0.8)
    ax.axvline(0.0, color="#444444", lw=1)
    ys = list(range(len(rows)))[::-1]
    for y, (_, estimate, colour) in zip(ys, rows):
        decided = estimate.low is not None and (estimate.low > 0 or estimate.high < 0)
        err = None if estimate.low is None else [[estimate.mean - estimate.low], [estimate.high - estimate.mean]]
        ax.errorbar([estimate.mean], [y], xerr=err, fmt="o", ms=7, color=colour, capsize=4, lw=1.6,
                    mfc=colour if decided else "white", mew=1.6)
    ax.set_yticks(ys, [label for label, _, _ in rows])
    ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    ax.margins(x=0.3)


def forest_figure(probes: Probes, subsets: Sequence[str], colours: dict[str, str]) -> Figure | None:
    """One row per subset and panel per held-out set: its paired difference vs the baseline with the interval;
    a refused comparison (unequal repetition) is written as 'not comparable', never drawn as a number."""
    metrics = [m for m in FOREST_METRICS if any(d.metric == m for d in probes.differences)]
    if not metrics:
        return None
    names = [name for name in subsets if any(d.subset == name and d.metric in metrics for d in probes.differences)]
    names += sorted({d.subset for d in probes.differences if d.metric in metrics} - set(names))
    y = np.arange(len(names))[::-1]
    fig, axes = _figure(10, 0.55 * len(names) + 1.7, ncols=len(metrics), sharey=True)
    for ax, metric in zip(axes, metrics):
        ax.grid(False)
        ax.grid(axis="x", color="#e6e6e6", linewidth=0.8)
        ax.axvline(0.0, color="#444444", lw=1)
        for yi, name in zip(y, names):
            _forest_row(ax, probes.difference(name, metric), yi, colours.get(name, "#333333"))
        ax.set_yticks(y, names)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.margins(x=0.2)
        ax.set_xlabel(f"{FOREST_METRICS[metric]}: subset - {probes.baseline} (bits/byte)")
        ax.set_title(f"{FOREST_METRICS[metric]} (left of 0: better than {probes.baseline})")
    fig.suptitle(f"Paired difference vs {probes.baseline}, {_seed_text(probes)}", fontsize=10)
    return fig


def _forest_row(ax, diff, y: float, colour: str) -> None:
    if diff is None:
        return
    if diff.verdict == "not comparable":
        ax.text(0.5, y, "not comparable (unequal epochs)", transform=ax.get_yaxis_transform(), ha="center",
                va="center", fontsize=8, style="italic", color="#6e7781")
        return
    decided = diff.verdict in ("better", "worse")
    err = None if diff.low is None else [[diff.mean - diff.low], [diff.high - diff.mean]]
    ax.errorbar([diff.mean], [y], xerr=err, fmt="o", ms=7, color=colour, capsize=4, lw=1.6,
                mfc=colour if decided else "white", mew=1.6)
    label = diff.verdict if diff.low is not None else f"{diff.verdict} (1 seed)"
    ax.annotate(label, (diff.mean, y), xytext=(0, 8), textcoords="offset points", ha="center", fontsize=7,
                color="#444444")


def _ratio(risk: Risk, name: str) -> float | None:
    values = risk.subsets[name]
    return getattr(values, risk.ratio_name, None) if risk.ratio_name in ("R_zlib", "R_zstd") else None


def risk_points(risk: Risk, subsets: Sequence[str]) -> dict[str, tuple[float, float]]:
    """This run's (R, held-out bpb) per subset, where both are known."""
    points = {}
    for name in subsets:
        if name in risk.subsets:
            r, bpb = _ratio(risk, name), risk.subsets[name].heldout_bpb
            if r is not None and bpb is not None:
                points[name] = (r, bpb)
    return points


def is_linear_fit(risk: Risk) -> bool:
    return risk.fit is not None and set(risk.fit.coefficients) == {"intercept", "R", "L"}


def fit_sign_text(risk: Risk) -> str | None:
    """'b = -0.120 [-0.200, -0.040]: contradicts the Entropy Law' (None without a linear fit)."""
    if not is_linear_fit(risk):
        return None
    b = risk.fit.coefficients["R"]
    if risk.fit.R_interval is None:
        return f"b = {b:+.3f} (no interval)"
    low, high = risk.fit.R_interval
    return f"b = {b:+.3f} [{low:+.3f}, {high:+.3f}]: {risk.fit.sign}"


def risk_figure(risk: Risk, subsets: Sequence[str], colours: dict[str, str]) -> Figure | None:
    """Held-out bpb against R: earlier runs (coloured by L), this run's subsets, and the fit's line at mean L."""
    mine = risk_points(risk, subsets)
    known = [h for h in risk.history if h.heldout_bpb is not None]
    if not mine and not known:
        return None
    with_prediction = risk.fit is not None and risk.fit.predicted_heldout is not None
    fig, axes = _figure(10 if with_prediction else 7.5, 4.6, ncols=2 if with_prediction else 1,
                        width_ratios=[1.4, 1] if with_prediction else None)
    ax = axes[0]
    ax.grid(True, color="#eeeeee")
    if known:
        scatter = ax.scatter([h.R for h in known], [h.heldout_bpb for h in known], c=[h.L for h in known],
                             cmap="viridis", s=36, edgecolors="white", linewidths=0.5, label="earlier runs")
        fig.colorbar(scatter, ax=ax, label="first-epoch bpb L of earlier runs", shrink=0.9)
    for name, (r, bpb) in mine.items():
        ax.scatter([r], [bpb], marker="*", s=260, color=colours[name], edgecolors="black", linewidths=0.7,
                   zorder=5, label=f"this run: {name}")
    if is_linear_fit(risk) and known:
        _draw_fit_line(ax, risk, known)
    ax.set_xlabel(f"compression ratio {risk.ratio_name} (raw / compressed bytes)")
    ax.set_ylabel("reference held-out bits/byte")
    n = len(risk.history)
    short = risk.min_history is not None and len(known) < risk.min_history
    need = f"; the fit needs {risk.min_history}" if short else ""
    title = f"Entropy law: R vs held-out bpb, {n} earlier run{'s' if n != 1 else ''}{need}"
    sign = fit_sign_text(risk)
    ax.set_title(title + (f"\n{sign}" if sign else ""))
    fig.legend(*ax.get_legend_handles_labels(), frameon=False, loc="outside lower center", ncols=3, markerscale=0.6)
    if with_prediction:
        _prediction_panel(axes[1], risk)
    return fig


def _draw_fit_line(ax, risk: Risk, known) -> None:
    """The fit a + b*R + c*L at the history's mean L: its slope is R's coefficient b."""
    coef = risk.fit.coefficients
    mean_L = float(np.mean([h.L for h in known]))
    x0, x1 = ax.get_xlim()
    xs = np.linspace(x0, x1, 50)
    ax.plot(xs, coef["intercept"] + coef["R"] * xs + coef["L"] * mean_L, ls="--", color="#555555", lw=1.2,
            label=f"fit at mean L = {mean_L:.3f} (slope: R's coefficient b)")
    ax.set_xlim(x0, x1)


def _prediction_panel(ax, risk: Risk) -> None:
    fit = risk.fit
    history = [h for h in risk.history if h.heldout_bpb is not None]
    x = np.arange(len(history))
    ax.plot(x, [h.heldout_bpb for h in history], "o", color="#555555", ms=5, label="observed")
    predicted = [(i, h.predicted_heldout) for i, h in zip(x, history) if h.predicted_heldout is not None]
    if predicted:
        ax.plot(*zip(*predicted), "o", mfc="none", color="#555555", ms=8, label="fit")
    here = len(history)
    err = None
    if fit.interval is not None:
        low, high = fit.interval
        err = [[fit.predicted_heldout - low], [high - fit.predicted_heldout]]
    ax.errorbar([here], [fit.predicted_heldout], yerr=err, fmt="*", ms=14, color="black", capsize=5,
                label=f"this run: predicted ({100 * fit.level:.0f}% interval)" if err else "this run: predicted")
    ax.set_xticks(list(x) + [here], [h.run_id[:8] for h in history] + ["this run"], rotation=45, ha="right",
                  fontsize=7)
    ax.set_ylabel("reference held-out bits/byte")
    ax.set_title("Held-out bpb: earlier runs vs the fit")
    ax.legend(frameon=False, fontsize=7, loc="upper left", markerscale=0.7)
