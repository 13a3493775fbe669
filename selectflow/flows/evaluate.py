from dataclasses import dataclass

from prefect import flow

from selectflow.config import CurriculumConfig, ProbeConfig, RiskConfig
from selectflow.flows.runner import run_stages
from selectflow.probe.compare import BASELINE, ProbeComparison, compare_probes
from selectflow.probe.curriculum import BASELINE_ORDER
from selectflow.probe.data import budget_blocks, common_budget
from selectflow.risk import RiskPoint, SubsetAssessment, SubsetEvidence, check_subset, r_tolerance
from selectflow.stages.base import Kind, stage_of_name, stages
from selectflow.stages.curriculum import curriculum_stage
from selectflow.stages.probe import full_pool_stage, probe_stage, subset_profile
from selectflow.stages.registry import CURRICULUM_PROBE
from selectflow.store import ArtifactRef
from selectflow.tasks.common import FLOW_OPTIONS, shard_task_options


@dataclass
class ProbeRuns:
    """The probes of a run: subset -> seed -> artifact, the common budget, each subset's whole-subset profile, and
    the profiles of uniform samples of the pool at the budget (R's noise for the risk check; not probed)."""

    runs: dict[str, dict[int, ArtifactRef]]
    budget: int
    profiles: dict[str, dict]  # subset -> docs, tokens, R_zlib, R_zstd (the 'full' samples: per seed, see runs)
    notes: list[str]
    uniform: list[dict]

    def stats(self) -> dict[str, dict[int, dict]]:
        return {name: {seed: ref.manifest()["stats"] for seed, ref in by_seed.items()}
                for name, by_seed in self.runs.items()}

    def curves(self, column: str = "reference_bpb") -> dict[str, dict[int, tuple[list, list]]]:
        curves = {}
        for name, by_seed in self.runs.items():
            curves[name] = {}
            for seed, ref in by_seed.items():
                table = ref.read("curve", columns=["step", column]).to_pydict()
                curves[name][seed] = (table["step"], table[column])
        return curves


def probe_budget(cfg: ProbeConfig, profiles: dict[str, dict]) -> tuple[int, list[str]]:
    """The tokens every probe trains on (see ProbeConfig.short_subset), and a note when it was lowered."""
    if cfg.short_subset == "shrink" and profiles:
        budget, note = common_budget(cfg.tokens, {name: p["tokens"] for name, p in profiles.items()},
                                     cfg.batch_size, cfg.model.seq_len)
        return budget, [note] if note else []
    return budget_blocks(cfg.tokens, cfg.batch_size, cfg.model.seq_len) * cfg.model.seq_len, []


@flow(name="probe", **FLOW_OPTIONS)
def probe_subsets(
    workspace: str,
    pool: list[ArtifactRef],
    selected: dict[str, ArtifactRef],
    reference: list[ArtifactRef],
    unseen: list[ArtifactRef],
    cfg: ProbeConfig,
    uniform_samples: int = 0,
    retries: int = 2,
    retry_delay_seconds: float = 1.0,
) -> ProbeRuns:
    """One probe per subset and seed, all on the same tokens, side by side on the workers; and `uniform_samples`
    seeded uniform samples of the pool at that budget, profiled but not probed (the first ones are also the 'full'
    subsets of the first seeds)."""
    subsets = {stage_of_name(stage).subset: [ref] for stage, ref in selected.items()}
    names = cfg.subsets or list(subsets)
    if missing := [name for name in names if name not in subsets and name != "full"]:
        raise ValueError(f"probe.subsets names {missing}, which this run does not select (it has {list(subsets)}); "
                         "change probe.subsets or selection.selectors")
    profiles = {name: subset_profile(subsets[name], cfg) for name in names if name != "full"}
    budget, notes = probe_budget(cfg, profiles)
    seeds = cfg.replicate_seeds
    sample_seeds = list(range(cfg.seed, cfg.seed + max(uniform_samples, len(seeds) if "full" in names else 0)))
    # the pool sampled to the budget: the 'no selection' point of comparison
    samples = dict(zip(sample_seeds, run_stages(
        full_pool_stage, "full-pool-sample", workspace,
        [{"pool": pool, "cfg": cfg, "seed": seed, "budget": budget} for seed in sample_seeds],
        "uniform samples of the pool", label=lambda call: f"full-pool sample seed {call['seed']}",
    ))) if sample_seeds else {}
    # a short training run per subset and seed: loss curve, code length, held-out bits per byte
    calls = [{"name": name, "subset": [samples[seed]] if name == "full" else subsets[name], "reference": reference,
              "unseen": unseen, "cfg": cfg, "seed": seed, "tokens": budget} for seed in seeds for name in names]
    runs: dict[str, dict[int, ArtifactRef]] = {name: {} for name in names}
    for call, ref in zip(calls, run_stages(probe_stage, "probe-training", workspace, calls, "probe",
                                           label=lambda call: f"probe {call['name']} seed {call['seed']}",
                                           **shard_task_options(retries, retry_delay_seconds))):
        runs[call["name"]][call["seed"]] = ref
    uniform = [subset_profile([samples[seed]], cfg) for seed in sample_seeds[:uniform_samples]]
    return ProbeRuns(runs, budget, profiles, notes, uniform)


@dataclass
class CurriculumRuns:
    probes: list[ArtifactRef]
    comparison: ArtifactRef


@flow(name="curriculum", **FLOW_OPTIONS)
def compare_curricula(workspace: str, name: str, subset: list[ArtifactRef], reference: list[ArtifactRef],
                      unseen: list[ArtifactRef], cfg: ProbeConfig, curriculum: CurriculumConfig, retries: int = 2,
                      retry_delay_seconds: float = 1.0) -> CurriculumRuns:
    """The subset's probe budget of documents trained in each order and seed side by side, then compared."""
    budget, _ = probe_budget(cfg, {name: subset_profile(subset, cfg)})
    calls = [{"name": f"{name} {order}", "subset": subset, "reference": reference, "unseen": unseen, "cfg": cfg,
              "seed": seed, "tokens": budget, "stage": CURRICULUM_PROBE.name, "order": order}
             for order in (BASELINE_ORDER, *curriculum.orders) for seed in cfg.replicate_seeds]
    refs = run_stages(probe_stage, "curriculum-probe", workspace, calls, "curriculum probes",
                      label=lambda call: f"probe {call['name']} seed {call['seed']}",
                      **shard_task_options(retries, retry_delay_seconds))
    by_order: dict[str, dict[int, ArtifactRef]] = {}
    for call, ref in zip(calls, refs):
        by_order.setdefault(call["order"], {})[call["seed"]] = ref
    (comparison,) = run_stages(curriculum_stage, "curriculum", workspace,
                               [{"subset": name, "probes": by_order, "confidence": cfg.confidence,
                                 "speed_fraction": cfg.speed_fraction}], "curriculum comparison")
    return CurriculumRuns(refs, comparison)


def compare_subsets(probes: ProbeRuns, cfg: ProbeConfig) -> ProbeComparison:
    """Means with intervals over seeds, paired differences vs random, verdicts and learning speed."""
    return compare_probes(probes.stats(), probes.curves(), cfg.confidence, cfg.speed_fraction, cfg.speed_level,
                          probes.notes, [stage.subset for stage in stages(Kind.SELECTOR)])


def assess_risk(probes: ProbeRuns, history: list[RiskPoint], cfg: RiskConfig,
                confidence: float) -> list[SubsetAssessment]:
    """The entropy-law checks of each selected subset (zip, quad) against the random subset and the history. R's
    noise between uniform samples comes from the run's uniform samples of the pool."""
    stats = probes.stats()

    def evidence(name: str) -> SubsetEvidence:
        return SubsetEvidence(probes.profiles[name][f"R_{cfg.ratio}"],
                              {seed: s["prequential_bpb"] for seed, s in stats[name].items()})

    tolerance = r_tolerance([profile[f"R_{cfg.ratio}"] for profile in probes.uniform], confidence)
    random = evidence(BASELINE) if BASELINE in probes.profiles else None
    return [check_subset(name, evidence(name), random, history, cfg, confidence, tolerance)
            for name in (stage.subset for stage in stages(Kind.SELECTOR)) if name in probes.profiles]
