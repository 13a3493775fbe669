"""The HTML run report: rendering, escaping, missing parts, and a check in a real headless Chromium.

The browser is driven through the DevTools protocol (websockets, a Prefect dependency), so no chromedriver is
needed. No browser: the browser test skips locally and fails when CI is set (scripts/test.sh installs one).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from selectflow.report import (
    Bandit,
    BanditRound,
    BandPoint,
    ClusterComposition,
    Curriculum,
    DomainComposition,
    Estimate,
    FunnelStep,
    HistoryPoint,
    Mixture,
    MixtureTrial,
    ProbeDifference,
    ProbeResult,
    Probes,
    ProbeSummary,
    Risk,
    RiskCheck,
    RiskFit,
    RunReport,
    SubsetRisk,
    Zip,
    ZipRound,
    render_report,
    write_report,
)
from selectflow.report.html import VERDICT_CLASS
from selectflow.report.plots import (
    MAX_CLUSTERS,
    cluster_figure,
    forest_figure,
    probe_figure,
    risk_figure,
    subset_colours,
)

SUBSETS = ["zip", "quad", "random", "topk"]
DOMAINS = ["prose", "dictionary", "licenses", "code", "faq", "manpages"]
FULL_SECTIONS = ["Run summary", "Stage funnel", "Cluster composition", "Domain composition", "QUAD bandit",
                 "ZIP rounds", "Probe training", "Entropy-law risk", "Mixture search", "Curricula"]
FULL_PLOTS = 10  # funnel, clusters, domains, bandit, zip, probe curves, forest plot, risk, mixture, curricula
SEEDS = [0, 1, 2]
VERDICTS = {
    "zip": "beats random by 0.050 [0.020, 0.080] bpb on the reference held-out set",
    "quad": "indistinguishable from random at this budget on the reference held-out set (difference +0.010 "
            "[-0.020, +0.040] bpb; about 9 seeds would decide a difference this large, if it is real)",
    "topk": "not comparable with random: trained 1.60 epochs vs 1.00 (unequal repetition confounds quality; use "
            "probe.short_subset 'shrink')",
}


def realistic_report(k: int = 64, n_rounds: int = 20, zip_rounds: int = 10, history: int = 6) -> RunReport:
    """A run with every section: 64 clusters, 4 subsets, 20 bandit rounds, 10 ZIP rounds, 6 earlier runs."""
    rng = np.random.default_rng(0)
    pool = {c: int(n) for c, n in enumerate(rng.integers(20, 400, size=k))}
    labels = {c: DOMAINS[c % len(DOMAINS)] for c in range(k)}
    cluster_subsets = {}
    for index, name in enumerate(SUBSETS):
        weights = rng.dirichlet(np.full(k, 0.3 + index))
        cluster_subsets[name] = {c: int(n) for c, n in enumerate(rng.multinomial(1000, weights)) if n}
    domain_pool = {d: int(sum(n for c, n in pool.items() if labels[c] == d)) for d in DOMAINS}
    domain_subsets = {name: {d: int(sum(n for c, n in counts.items() if labels[c] == d)) for d in DOMAINS}
                      for name, counts in cluster_subsets.items()}
    bandit_rounds = []
    for r in range(n_rounds):
        pulled = [int(c) for c in (range(8) if r == 0 else rng.choice(k, size=8, replace=False))]
        rewards = [float(v) for v in rng.normal(0.0005, 0.003, size=8)]
        bandit_rounds.append(BanditRound(round=r, pulled=pulled, rewards=rewards,
                                         scores=[float(v) for v in rng.uniform(0, 0.01, size=8)],
                                         selected_docs=min(1000, 50 * (r + 1))))
    zip_ = Zip(rounds=[ZipRound(round=r, n_selected=100 * (r + 1), selected_ratio=2.1 + 0.08 * r,
                                pool_left=12000 - 200 * (r + 1)) for r in range(zip_rounds)])
    probes = probe_results(SUBSETS, rng)
    points = [HistoryPoint(run_id=f"run-{i:04d}-abcdef", R=float(2.0 + 0.2 * i), L=float(1.4 - 0.02 * i),
                           heldout_bpb=float(1.6 - 0.05 * i), predicted_heldout=float(1.61 - 0.05 * i))
              for i in range(history)]
    risk = Risk(
        overall="at risk",
        reason="The ZIP subset compresses like the random baseline but its first-epoch loss is lower than the "
        "history predicts: the probe already knows this data.",
        subsets={name: SubsetRisk(R_zlib=2.3 + 0.1 * i, R_zstd=2.5 + 0.1 * i, L=1.2 + 0.05 * i,
                                  heldout_bpb=1.4 + 0.05 * i) for i, name in enumerate(SUBSETS)},
        checks=[RiskCheck(name="vs reference", subset="zip", verdict="law contradicted",
                          detail="the history's fit contradicts the law's direction"),
                RiskCheck(name="vs history", subset="zip", verdict="at risk", detail="above the 90% interval"),
                RiskCheck(name="vs reference", subset="quad", verdict="inconclusive", detail="L within seed noise")],
        history=points,
        fit=RiskFit(coefficients={"intercept": 1.5, "R": -0.12, "L": 0.2}, predicted_heldout=1.35,
                    interval=(1.28, 1.42), n_runs=history, R_interval=(-0.2, -0.04),
                    direction="over 6 earlier points, held-out bpb changes by -0.120 [-0.200, -0.040] per unit of "
                    "R, which contradicts the Entropy Law's direction (higher R, worse)"),
        min_history=5,
    )
    return RunReport(
        run_id="20261121-223055-1a2b3c",
        run_name="sample run",
        created_at=datetime(2026, 11, 21, 22, 30, tzinfo=timezone.utc),
        code_version="0a1b2c3d4e5f",
        config={"selectors": "zip, quad, random", "budget": "1000 docs", "cluster.k": k,
                "influence.model": "SmolLM2-135M-Instruct", "embedding": "all-MiniLM-L6-v2"},
        subsets=SUBSETS,
        funnel=[FunnelStep(stage="ingest", docs_in=14000, docs_out=13800, work_s=4.2),
                FunnelStep(stage="dedup_exact", docs_in=13800, docs_out=12500, work_s=1.1),
                FunnelStep(stage="dedup_near", docs_in=12500, docs_out=12000, work_s=6.3),
                FunnelStep(stage="cluster", docs_in=12000, docs_out=12000, dropped=0, work_s=20.5),
                *(FunnelStep(stage=f"select_{name}", docs_in=12000, docs_out=1000, work_s=3.0) for name in SUBSETS)],
        clusters=ClusterComposition(pool=pool, labels=labels, subsets=cluster_subsets),
        domains=DomainComposition(pool=domain_pool, subsets=domain_subsets),
        bandit=Bandit(subset="quad", kind="ucb", rounds=bandit_rounds),
        zip=zip_,
        probes=probes,
        risk=risk,
        mixture=Mixture(components=["domain code", "domain prose", "domain qa"], natural=[0.2, 0.5, 0.3],
                        weights=[0.1, 0.7, 0.2], trials=[MixtureTrial(weights=[0.2, 0.5, 0.3], measured=2.6 + 0.01 * i,
                                                                      predicted=2.61 + 0.008 * i) for i in range(12)],
                        spearman_cv=0.83, predicted=2.55, predicted_natural=2.64,
                        differences={"natural": Estimate(mean=-0.05, low=-0.08, high=-0.02, n=3),
                                     "uniform": Estimate(mean=-0.02, low=-0.07, high=0.03, n=3)},
                        verdict="the proposed mixture beats the natural mixture by 0.050 [0.020, 0.080] bpb"),
        curriculum=Curriculum(subset="zip", curves={order: [BandPoint(step=s, mean=3.0 - s / 600 + shift,
                                                                      low=2.9 - s / 600 + shift,
                                                                      high=3.1 - s / 600 + shift, n=3)
                                                            for s in (0, 128, 256, 384, 512)]
                                                    for order, shift in (("shuffled", 0.0), ("domain", 0.1))},
                              vs_shuffled={"domain": Estimate(mean=0.1, low=0.05, high=0.15, n=3)},
                              verdict="Curricula of zip: no order learns faster than the shuffled one"),
    )


def _band(steps, means, half: float) -> list[BandPoint]:
    return [BandPoint(step=int(s), mean=float(m), low=float(m) - half, high=float(m) + half, n=len(SEEDS))
            for s, m in zip(steps, means)]


def _estimate(mean: float, half: float = 0.02) -> Estimate:
    return Estimate(mean=mean, low=mean - half, high=mean + half, n=len(SEEDS))


def _difference(subset: str, metric: str, mean: float | None, verdict: str, half: float = 0.03) -> ProbeDifference:
    numbers = {} if mean is None else {"mean": mean, "low": mean - half, "high": mean + half}
    sentence = VERDICTS[subset] if metric == "reference_bpb" else f"{verdict} vs random on the unseen-domain set"
    return ProbeDifference(subset=subset, metric=metric, verdict=verdict, sentence=sentence, **numbers)


def probe_results(names: list[str], rng) -> Probes:
    """Three seeds per subset; topk repeated its data (1.6 epochs), so its comparisons are refused."""
    steps, evaluated = np.arange(0, 200, 5), [0, 50, 100, 150, 199]
    subsets = {}
    for index, name in enumerate(names):
        train = 2.0 * np.exp(-steps / 60) + 1.2 + 0.05 * index + rng.normal(0, 0.02, steps.size)
        subsets[name] = ProbeResult(
            seeds=SEEDS,
            train=_band(steps, train, 0.04),
            heldout={set_name: _band(evaluated, [3.0 - s / 150 + 0.05 * index + offset for s in evaluated], 0.03)
                     for set_name, offset in (("reference", 0.0), ("unseen", 0.25))},
            summary=ProbeSummary(epochs=1.6 if name == "topk" else 1.0, reference_bpb=_estimate(1.7 + 0.05 * index),
                                 unseen_bpb=_estimate(1.95 + 0.05 * index),
                                 prequential_bpb=_estimate(1.2 + 0.05 * index),
                                 speed="not reached (1 of 3 seeds)" if name == "topk"
                                 else f"{120 + 10 * index} [{110 + 10 * index}, {130 + 10 * index}] steps"),
            verdict=VERDICTS.get(name),
        )
    differences = []
    for name, (reference, unseen, verdict_ref, verdict_unseen) in {
            "zip": (-0.05, 0.06, "better", "worse"), "quad": (0.01, -0.01, "indistinguishable", "indistinguishable"),
            "topk": (None, None, "not comparable", "not comparable")}.items():
        if name in names:
            differences += [_difference(name, "reference_bpb", reference, verdict_ref),
                            _difference(name, "unseen_bpb", unseen, verdict_unseen)]
    return Probes(budget_tokens=1_048_576, seeds=SEEDS, confidence=0.95, speed_level=2.1, subsets=subsets,
                  differences=differences if "random" in names else [],
                  notes=[] if "random" in names else ["no 'random' subset was probed: no paired differences (add "
                                                      "it to selection.selectors)"])


def zip_only_first_run() -> RunReport:
    """Selector zip, no clustering, no history yet: bandit and cluster notes, the scatter shows this run only."""
    full = realistic_report()
    return RunReport(
        run_id="first-run",
        config={"selectors": "zip"},
        funnel=full.funnel[:3] + [full.funnel[4]],
        zip=full.zip,
        probes=probe_results(["zip"], np.random.default_rng(1)),
        risk=Risk(overall="insufficient history", reason="No earlier runs to compare with.",
                  subsets={"zip": SubsetRisk(R_zstd=2.5, L=1.2, heldout_bpb=1.7)}, min_history=5),
    )


RENDER_SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module")
def full_html() -> str:
    start = time.perf_counter()
    html = render_report(realistic_report())
    RENDER_SECONDS["full"] = time.perf_counter() - start
    return html


@pytest.fixture(scope="module")
def partial_html() -> str:
    return render_report(zip_only_first_run())


def _img_sources(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


def _section_html(html: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', html, re.S)
    assert match, f"section {key} missing"
    return match.group(1)


# ---------------------------------------------------------------- rendering without a browser


def test_full_report_has_every_plot_as_inline_png_and_no_external_reference(full_html):
    html = full_html
    sources = _img_sources(html)
    assert len(sources) == FULL_PLOTS
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        png = base64.b64decode(source.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    for key in ("funnel", "clusters", "domains", "bandit", "zip", "probes", "risk", "mixture", "curriculum"):
        assert "<img" in _section_html(html, key), key
    assert 'class="note"' not in html
    text = re.sub(r'"data:image/png;base64,[A-Za-z0-9+/=]*"', '""', html)
    assert not re.search(r"(https?:)?//[a-z0-9]", text, re.I), "the report must not reference any URL"
    assert not re.search(r"<(script|link|iframe)\b", html, re.I)
    assert 'class="verdict risk"' in html and ">at risk<" in html
    print(f"full report rendered in {RENDER_SECONDS['full']:.2f} s, {len(html) // 1024} KB")
    assert RENDER_SECONDS["full"] < 15, f"render took {RENDER_SECONDS['full']:.1f} s (about 1.5 s on an idle core)"


def test_report_model_round_trips_through_json(full_html):
    report = realistic_report()
    again = RunReport.model_validate_json(report.model_dump_json())
    assert again == report
    assert render_report(again) == full_html


def test_missing_parts_show_notes_instead_of_plots(partial_html):
    html = partial_html
    for key in ("clusters", "domains", "bandit"):
        section = _section_html(html, key)
        assert "<img" not in section and 'class="note"' in section, key
    assert "selectors: zip" in _section_html(html, "bandit")
    risk = _section_html(html, "risk")
    assert "No fit yet: the history holds 0 earlier run(s). The fit needs at least 5 earlier runs." in risk
    assert risk.count("<img") == 1, "insufficient history: the scatter still shows this run"
    assert 'class="verdict unknown"' in html and ">insufficient history<" in html
    assert len(_img_sources(html)) == 4  # funnel, zip, probe curves, risk scatter
    probes = _section_html(html, "probes")
    assert probes.count("<img") == 1 and "No paired differences: the random subset" in probes
    assert "no &#x27;random&#x27; subset was probed" in probes  # the comparison's note


def test_empty_report_renders_notes_everywhere():
    html = render_report(RunReport(run_id="empty"))
    assert "<img" not in html
    assert html.count('class="note"') == 10  # config summary + 9 sections
    assert 'class="verdict none"' in html and "not checked" in html


def test_html_special_characters_are_escaped():
    nasty = '<script>alert("x")</script> & \'q\''
    report = realistic_report().model_copy(update={"funnel": [], "domains": None, "bandit": None, "zip": None,
                                                   "probes": None})
    report.run_name = nasty
    report.config["inputs"] = nasty
    report.risk.reason = nasty
    report.risk.checks[0].detail = nasty
    pool = report.clusters.pool
    report.clusters.labels[max(pool, key=pool.get)] = nasty  # the pool's largest cluster: named in the table
    html = render_report(report)
    assert "<script>" not in html
    escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;"
    assert html.count(escaped) == 6  # title, h1, config, reason, check detail, cluster label


def test_subset_colours_are_stable_and_distinct(full_html):
    colours = subset_colours(["topk", "custom", "zip", "quad", "random", "other"])
    assert colours["zip"] == subset_colours(["zip"])["zip"]
    assert len(set(colours.values())) == len(colours)
    assert full_html.count(f'background:{colours["quad"]}') >= 3  # summary, cluster table, probe table, risk tables


def test_misaligned_bandit_round_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="must be aligned"):
        BanditRound(round=0, pulled=[1, 2], rewards=[0.1], selected_docs=0)


def test_hundreds_of_clusters_are_aggregated(tmp_path):
    full = realistic_report(k=400)
    report = RunReport(run_id="many-clusters", clusters=full.clusters)
    path = write_report(report, tmp_path / "sub" / "report.html")
    html = path.read_text(encoding="utf-8")
    assert "clusters covered (of 400)" in html
    assert len(_img_sources(html)) == 1
    figure = cluster_figure(report.clusters, SUBSETS, subset_colours(SUBSETS))
    axes = figure.axes[0]
    assert len(axes.get_xticks()) == MAX_CLUSTERS
    assert "the 360 smallest" in axes.get_xlabel()


def _rows(section: str, subset: str) -> list[str]:
    return [row for row in re.findall(r"<tr>.*?</tr>", section, re.S) if f"</span>{subset}</td>" in row]


def test_probe_section_shows_bands_forest_plot_verdicts_and_refuses_unequal_repetition(full_html):
    section = _section_html(full_html, "probes")
    alts = re.findall(r'<img src="[^"]*" alt="([^"]*)"', section)
    assert len(alts) == 2 and "confidence bands" in alts[0] and alts[1].startswith("forest plot")
    assert "shaded bands: 95% confidence interval over seeds" in section
    for name, sentence in VERDICTS.items():
        assert sentence.replace("'", "&#x27;") in section, name
    assert "training tokens per probe" in section and "1,048,576" in section and "0, 1, 2" in section
    differences = re.search(r'<table class="differences">.*?</table>', section, re.S).group(0)
    zip_reference = _rows(differences, "zip")[0]
    assert "<td>reference</td>" in zip_reference and "-0.050 [-0.080, -0.020]" in zip_reference
    assert 'class="badge ok">better<' in zip_reference
    refused = _rows(differences, "topk")
    assert len(refused) == 2
    for row in refused:  # shown as refused, never as a number
        assert "<td>not comparable</td>" in row and 'class="num"' not in row and 'badge refused' in row
    topk = _rows(section.split('<table class="differences">')[1].split("</table>", 1)[1], "topk")[0]
    assert "1.60 (repeated)" in topk and "not reached (1 of 3 seeds)" in topk
    zip_row = _rows(section.split('<table class="differences">')[1].split("</table>", 1)[1], "zip")[0]
    assert "1.700 [1.680, 1.720]" in zip_row and "1.200 [1.180, 1.220]" in zip_row and "1.00<" in zip_row
    assert "nats" not in section


def test_probe_curves_have_one_band_per_subset_and_set():
    report = realistic_report()
    figure = probe_figure(report.probes, SUBSETS, subset_colours(SUBSETS))
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["Training bpb, mean over seeds", "Held-out bpb: reference (target) set",
                      "Held-out bpb: unseen-domain set"]
    for ax in figure.axes:
        assert len(ax.collections) == len(SUBSETS), ax.get_title()  # one fill_between band per subset
    assert "95% CI over 3 seeds" in figure.get_suptitle()


def test_forest_plot_draws_intervals_around_zero_and_labels_refused_rows():
    report = realistic_report()
    figure = forest_figure(report.probes, SUBSETS, subset_colours(SUBSETS))
    assert len(figure.axes) == 2  # reference and unseen panels, sharing the subset rows
    first = figure.axes[0]
    rows = sorted(zip(first.get_yticks(), (t.get_text() for t in first.get_yticklabels())), reverse=True)
    assert [name for _, name in rows] == ["zip", "quad", "topk"]  # subset order, top down; random is the baseline
    for ax in figure.axes:
        assert any(list(line.get_xdata()) == [0, 0] for line in ax.get_lines()), "a vertical line at 0"
        texts = [t.get_text() for t in ax.texts]
        assert texts.count("not comparable (unequal epochs)") == 1
        assert len(ax.containers) == 2  # error bars for zip and quad only
    assert {t.get_text() for t in figure.axes[0].texts} >= {"better", "indistinguishable"}


def test_risk_scatter_states_the_fitted_sign_and_new_verdicts_get_their_class(full_html):
    report = realistic_report()
    figure = risk_figure(report.risk, SUBSETS, subset_colours(SUBSETS))
    scatter = figure.axes[0]
    assert scatter.get_ylabel() == "reference held-out bits/byte"
    assert scatter.get_title().endswith("b = -0.120 [-0.200, -0.040]: contradicts the Entropy Law")
    risk = _section_html(full_html, "risk")
    assert 'class="badge contradicted">law contradicted<' in risk and 'class="badge inconclusive">inconclusive<' in risk
    assert "b = -0.120 [-0.200, -0.040]: contradicts the Entropy Law" in risk and "predicted held-out bpb" in risk
    for verdict, css in (("inconclusive", "inconclusive"), ("law contradicted", "contradicted"), ("ok", "ok")):
        html = render_report(RunReport(run_id="v", risk=Risk(overall=verdict, reason="why")))
        assert f'class="verdict {css}"' in html and f">{verdict}<" in html


def test_refused_difference_needs_no_number_but_a_decided_one_does():
    ProbeDifference(subset="topk", metric="reference_bpb", verdict="not comparable")
    with pytest.raises(ValueError, match="needs a mean"):
        ProbeDifference(subset="zip", metric="reference_bpb", verdict="better")


class FakeRef:
    """A probe artifact: its curve table and manifest stats."""

    def __init__(self, curve: dict, stats: dict):
        self.curve, self.stats = curve, stats

    def read(self, table: str, columns=None):
        import pyarrow as pa

        assert table == "curve"
        data = pa.table(self.curve)
        return data.select(columns) if columns else data

    def manifest(self) -> dict:
        return {"stats": self.stats}


def fake_probe(seed: int, offset: float, epochs: float = 1.0, steps: int = 600) -> FakeRef:
    rng = np.random.default_rng(seed)
    evaluated = set(np.linspace(0, steps, 7).astype(int))
    train = [None] + [float(3 * np.exp(-s / 150) + 1.0 + offset + rng.normal(0, 0.05)) for s in range(1, steps + 1)]
    held = {name: [float(3.2 * np.exp(-s / 200) + 1.2 + shift + offset + rng.normal(0, 0.01)) if s in evaluated
                   else None for s in range(steps + 1)] for name, shift in (("reference", 0.0), ("unseen", 0.3))}
    curve = {"step": list(range(steps + 1)), "tokens_seen": [s * 2048 for s in range(steps + 1)],
             "train_bpb": train, "reference_bpb": held["reference"], "unseen_bpb": held["unseen"]}
    stats = {"seed": seed, "tokens": steps * 2048, "epochs": epochs, "prequential_bpb": 1.5 + offset + seed * 0.01,
             "reference_bpb": held["reference"][-1], "unseen_bpb": held["unseen"][-1], "R_zlib": 2.4 + offset,
             "R_zstd": 2.6 + offset}
    return FakeRef(curve, stats)


def test_probe_section_is_assembled_over_seeds_from_the_probe_artifacts():
    from selectflow.report.assemble import MAX_TRAIN_POINTS, probe_section

    refs = {"random": [fake_probe(seed, 0.0) for seed in SEEDS],
            "zip": [fake_probe(seed, -0.2) for seed in SEEDS],
            "topk": [fake_probe(seed, -0.3, epochs=2.0) for seed in SEEDS]}
    probes = probe_section(refs)  # compared here: no comparison given
    assert probes.seeds == SEEDS and probes.budget_tokens == 600 * 2048 and probes.speed_level is not None
    zip_ = probes.subsets["zip"]
    assert zip_.seeds == SEEDS and set(zip_.heldout) == {"reference", "unseen"}
    assert [p.step for p in zip_.heldout["reference"]] == [0, 100, 200, 300, 400, 500, 600]
    assert all(p.n == 3 and p.low < p.mean < p.high for p in zip_.heldout["reference"])
    assert len(zip_.train) <= MAX_TRAIN_POINTS and zip_.train[-1].step == 600
    assert zip_.summary.reference_bpb.n == 3 and zip_.summary.epochs == 1.0 and zip_.summary.speed.endswith("steps")
    assert zip_.verdict.startswith("beats random by") and probes.difference("zip", "reference_bpb").verdict == "better"
    refused = probes.difference("topk", "unseen_bpb")
    assert refused.verdict == "not comparable" and refused.mean is None
    assert probes.subsets["topk"].summary.epochs == 2.0 and probes.subsets["random"].verdict is None
    report = RunReport(run_id="assembled", probes=probes)
    assert RunReport.model_validate_json(report.model_dump_json()) == report
    section = _section_html(render_report(report), "probes")
    assert section.count("<img") == 2 and probes.subsets["zip"].verdict in section


def test_risk_section_uses_whole_subset_R_seed_means_and_the_fits_sign():
    from types import SimpleNamespace

    from selectflow.config import RiskConfig
    from selectflow.report.assemble import risk_section
    from selectflow.risk import RiskPoint, SubsetEvidence, check_subset

    cfg = RiskConfig(min_history=6)
    rng = np.random.default_rng(0)
    history = [RiskPoint(R, L, 2.0 - 0.3 * R + 0.5 * L + rng.normal(0, 0.005), f"run-{i}/random")
               for i, (R, L) in enumerate(zip(rng.uniform(2, 3, 10), rng.uniform(1.0, 1.6, 10)))]
    stats = {name: {seed: {"seed": seed, "prequential_bpb": L + 0.01 * seed, "reference_bpb": H + 0.01 * seed,
                           "R_zlib": 9.0}
                    for seed in SEEDS} for name, L, H in (("random", 1.4, 1.7), ("zip", 1.3, 1.65))}
    stats["full"] = {seed: {"seed": seed, "prequential_bpb": 1.45, "reference_bpb": 1.75, "R_zlib": 2.5 + 0.1 * seed,
                            "R_zstd": 2.7} for seed in SEEDS}
    probes = SimpleNamespace(profiles={"random": {"R_zlib": 2.5, "R_zstd": 2.7}, "zip": {"R_zlib": 2.3, "R_zstd": 2.5}},
                             stats=lambda: stats)
    evidence = {name: SubsetEvidence(probes.profiles[name]["R_zlib"], {s: v["prequential_bpb"]
                                                                       for s, v in stats[name].items()})
                for name in ("random", "zip")}
    assessed = [check_subset("zip", evidence["zip"], evidence["random"], history, cfg)]
    risk = risk_section(assessed, probes, history, cfg)
    assert risk.subsets["zip"].R_zlib == 2.3 and risk.subsets["zip"].L == pytest.approx(1.31)
    assert risk.subsets["zip"].heldout_bpb == pytest.approx(1.66)
    assert risk.subsets["full"].R_zlib == pytest.approx(2.6)  # no profile: the seeds' samples, averaged
    assert [h.heldout_bpb for h in risk.history] == [p.heldout_bpb for p in history]
    assert all(abs(h.predicted_heldout - h.heldout_bpb) < 0.05 for h in risk.history)  # the fit's own predictions
    assert risk.fit is not None and risk.fit.n_runs == 10 and risk.fit.R_interval[1] < 0
    assert risk.fit.sign == "contradicts the Entropy Law" and "contradicts" in risk.fit.direction
    assert any(check.verdict == "law contradicted" for check in risk.checks)
    html = render_report(RunReport(run_id="r", subsets=["zip", "random", "full"], risk=risk))
    assert "contradicts the Entropy Law" in _section_html(html, "risk")
    assert f'class="verdict {VERDICT_CLASS[risk.overall]}"' in html


# ---------------------------------------------------------------- in a real headless browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def _find_browser() -> str | None:
    if os.environ.get("CHROME_BIN"):
        return os.environ["CHROME_BIN"]
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


@pytest.fixture(scope="module")
def browser_binary() -> str:
    binary = _find_browser()
    if binary is None:
        message = ("no headless Chromium/Chrome found (looked for CHROME_BIN and " + ", ".join(BROWSERS)
                   + "); install one: apt-get install -y chromium (scripts/test.sh does this as root)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, url: str):
        from websockets.sync.client import connect

        self.socket = connect(url, max_size=None, open_timeout=20)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 30.0, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.socket.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for message in self.events:
            if message.get("method") == event:
                return message
        while True:
            message = json.loads(self.socket.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            self.events.append(message)
            if message.get("method") == event:
                return message

    def close(self) -> None:
        self.socket.close()


def _start_browser(binary: str, profile: str) -> tuple[subprocess.Popen, int]:
    args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-extensions", "--disable-background-networking", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", "--window-size=1200,900", "about:blank"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line)
        match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if match:
            return process, int(match.group(1))
    process.kill()
    raise RuntimeError(f"{binary} did not start its DevTools endpoint:\n{''.join(seen[-20:])}")


PAGE_FACTS = """(() => ({
  images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
                                           shownW: i.getBoundingClientRect().width})),
  headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
  verdict: document.querySelector('#verdict .value')?.textContent,
  verdictColour: document.querySelector('#verdict') && getComputedStyle(document.querySelector('#verdict'))
                   .backgroundColor,
  notes: [...document.querySelectorAll('.note')].map(n => n.closest('section')?.id),
  links: [...document.querySelectorAll('[src],[href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))
           .filter(u => !u.startsWith('data:') && !u.startsWith('#')),
  resources: performance.getEntriesByType('resource').map(r => r.name),
  scripts: document.scripts.length,
}))()"""


def _inspect_in_browser(binary: str, pages: list[Path]) -> list[dict]:
    """Load each page in headless Chromium; return what the page shows and every network request it made."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process, port = _start_browser(binary, profile)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=20) as response:
                targets = json.load(response)
            page = next(t for t in targets if t.get("type") == "page")
            tools = DevTools(page["webSocketDebuggerUrl"])
            tools.call("Page.enable")
            tools.call("Network.enable")
            results = []
            for path in pages:
                tools.events.clear()
                tools.call("Page.navigate", url=path.resolve().as_uri())
                tools.wait_for("Page.loadEventFired")
                evaluated = tools.call("Runtime.evaluate", expression=PAGE_FACTS, returnByValue=True)
                if "exceptionDetails" in evaluated:
                    raise RuntimeError(f"page inspection failed on {path}: {evaluated['exceptionDetails']}")
                facts = evaluated["result"]["value"]
                facts["requests"] = [e["params"]["request"]["url"] for e in tools.events
                                     if e.get("method") == "Network.requestWillBeSent"]
                shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                facts["screenshot_bytes"] = len(base64.b64decode(shot["data"]))
                results.append(facts)
            tools.close()
            return results
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def test_reports_render_in_headless_chromium(browser_binary, full_html, partial_html, tmp_path):
    full, partial = tmp_path / "full.html", tmp_path / "partial.html"
    full.write_text(full_html, encoding="utf-8")
    partial.write_text(partial_html, encoding="utf-8")
    start = time.perf_counter()
    full_facts, partial_facts = _inspect_in_browser(browser_binary, [full, partial])
    seconds = time.perf_counter() - start
    print(f"headless chromium: 2 reports inspected in {seconds:.1f} s")

    assert full_facts["headings"] == FULL_SECTIONS
    assert len(full_facts["images"]) == FULL_PLOTS
    for image in full_facts["images"]:
        assert image["complete"] and image["w"] > 300 and image["h"] > 150, image
        assert image["shownW"] > 300, image
    assert full_facts["verdict"] == "at risk"
    assert full_facts["verdictColour"] == "rgb(253, 236, 236)"  # the red banner
    assert full_facts["notes"] == []
    assert full_facts["scripts"] == 0 and full_facts["links"] == [] and full_facts["resources"] == []
    external = [url for url in full_facts["requests"] + partial_facts["requests"]
                if not url.startswith(("file:", "data:"))]
    assert external == [], f"the report fetched {external}"
    assert full_facts["screenshot_bytes"] > 50_000

    assert partial_facts["headings"] == FULL_SECTIONS
    assert len(partial_facts["images"]) == 4
    assert all(image["complete"] and image["w"] > 0 for image in partial_facts["images"])
    assert partial_facts["verdict"] == "insufficient history"
    assert sorted(partial_facts["notes"]) == ["bandit", "clusters", "curriculum", "domains", "mixture", "probes",
                                              "risk"]
    assert seconds < 30, f"the browser check took {seconds:.1f} s"
