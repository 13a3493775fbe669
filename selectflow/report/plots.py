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
    ClusterComposition,
    DomainComposition,
    FunnelStep,
    ProbeResult,
    Risk,
    Zip,
)

POOL = "pool"
POOL_COLOUR = "#b8b8b8"
# Okabe-Ito (colour-blind safe); the usual subsets get fixed colours so that runs look alike.
KNOWN_COLOURS = {"zip": "#0072B2", "quad": "#D55E00", "random": "#E69F00", "topk": "#009E73"}
SPARE_COLOURS = ["#CC79A7", "#56B4E9", "#8c564b", "#F0E442", "#17becf", "#7f7f7f", "#bcbd22", "#9467bd"]
SET_MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
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


def probe_figure(probes: dict[str, ProbeResult], subsets: Sequence[str], colours: dict[str, str]) -> Figure | None:
    names = [name for name in subsets if name in probes]
    has_heldout = any(probes[name].heldout for name in names)
    if not any(probes[name].curve for name in names) and not has_heldout:
        return None
    fig, axes = _figure(10, 3.6, ncols=2 if has_heldout else 1)
    train = axes[0]
    for name in names:
        curve = probes[name].curve
        if curve:
            train.plot([p.step for p in curve], [p.train_loss for p in curve], color=colours[name], lw=1.4, label=name)
    train.set_xlabel("training step")
    train.set_ylabel("training loss (nats/token)")
    train.set_title("Probe training loss, all subsets")
    train.legend(frameon=False)
    if has_heldout:
        held = axes[1]
        sets = sorted({p.set for name in names for p in probes[name].heldout})
        marker = {name: SET_MARKERS[i % len(SET_MARKERS)] for i, name in enumerate(sets)}
        for name in names:
            for set_name in sets:
                points = [p for p in probes[name].heldout if p.set == set_name]
                if points:
                    held.plot([p.step for p in points], [p.loss for p in points], "--", marker=marker[set_name],
                              ms=4, lw=1, color=colours[name])
        for name in names:
            held.plot([], [], color=colours[name], lw=3, label=name)
        for set_name in sets:
            held.plot([], [], ls="--", marker=marker[set_name], color="#444444", label=f"set: {set_name}")
        held.set_xlabel("training step")
        held.set_ylabel("held-out loss (nats/token)")
        held.set_title("Held-out loss per set")
        held.legend(frameon=False, fontsize=7)
    return fig


def _ratio(risk: Risk, name: str) -> float | None:
    values = risk.subsets[name]
    return getattr(values, risk.ratio_name, None) if risk.ratio_name in ("R_zlib", "R_zstd") else None


def risk_points(risk: Risk, subsets: Sequence[str]) -> dict[str, tuple[float, float]]:
    """This run's (R, L) per subset, where both are known."""
    points = {}
    for name in subsets:
        if name in risk.subsets:
            r, loss = _ratio(risk, name), risk.subsets[name].L
            if r is not None and loss is not None:
                points[name] = (r, loss)
    return points


def is_linear_fit(risk: Risk) -> bool:
    return risk.fit is not None and set(risk.fit.coefficients) == {"intercept", "R", "L"}


def risk_figure(risk: Risk, subsets: Sequence[str], colours: dict[str, str]) -> Figure | None:
    mine = risk_points(risk, subsets)
    if not mine and not risk.history:
        return None
    with_prediction = risk.fit is not None and risk.fit.predicted_heldout is not None
    fig, axes = _figure(10 if with_prediction else 7.5, 4.6, ncols=2 if with_prediction else 1,
                        width_ratios=[1.4, 1] if with_prediction else None)
    ax = axes[0]
    ax.grid(True, color="#eeeeee")
    history = risk.history
    if history:
        losses = [h.heldout_loss for h in history]
        known = [h for h, loss in zip(history, losses) if loss is not None]
        unknown = [h for h, loss in zip(history, losses) if loss is None]
        if known:
            scatter = ax.scatter([h.R for h in known], [h.L for h in known], c=[h.heldout_loss for h in known],
                                 cmap="viridis", s=36, edgecolors="white", linewidths=0.5, label="earlier runs")
            fig.colorbar(scatter, ax=ax, label="held-out loss of earlier runs (nats/token)", shrink=0.9)
        if unknown:
            ax.scatter([h.R for h in unknown], [h.L for h in unknown], s=36, facecolors="none", edgecolors="#777777",
                       label="earlier runs (no held-out loss)")
    for name, (r, loss) in mine.items():
        ax.scatter([r], [loss], marker="*", s=260, color=colours[name], edgecolors="black", linewidths=0.7,
                   zorder=5, label=f"this run: {name}")
    if is_linear_fit(risk):
        _draw_iso_lines(ax, risk)
    ax.set_xlabel(f"compression ratio {risk.ratio_name} (raw / compressed bytes)")
    ax.set_ylabel("first-epoch training loss L (nats/token)")
    short = risk.min_history is not None and len(history) < risk.min_history
    need = f"; the fit needs {risk.min_history}" if short else ""
    ax.set_title(f"Entropy law: R vs L, {len(history)} earlier run{'s' if len(history) != 1 else ''}{need}")
    fig.legend(*ax.get_legend_handles_labels(), frameon=False, loc="outside lower center", ncols=4, markerscale=0.6)
    if with_prediction:
        _prediction_panel(axes[1], risk)
    return fig


def _draw_iso_lines(ax, risk: Risk) -> None:
    coef = risk.fit.coefficients
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    rr, ll = np.meshgrid(np.linspace(x0, x1, 60), np.linspace(y0, y1, 60))
    predicted = coef["intercept"] + coef["R"] * rr + coef["L"] * ll
    lines = ax.contour(rr, ll, predicted, levels=6, colors="#888888", linewidths=0.7, linestyles="dotted")
    ax.clabel(lines, fontsize=6, fmt="%.2f")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.plot([], [], ls="dotted", color="#888888", label="fit: predicted held-out loss")


def _prediction_panel(ax, risk: Risk) -> None:
    fit = risk.fit
    history = [h for h in risk.history if h.heldout_loss is not None]
    x = np.arange(len(history))
    ax.plot(x, [h.heldout_loss for h in history], "o", color="#555555", ms=5, label="observed")
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
    ax.set_ylabel("held-out loss (nats/token)")
    ax.set_title("Held-out loss: earlier runs vs the fit")
    ax.legend(frameon=False, fontsize=7, loc="upper left", markerscale=0.7)
