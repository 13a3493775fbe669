"""The mixture search: plan the proposals, sample and probe each one side by side on the workers, fit, then
validate the proposed mixture against the natural and the uniform one with paired seeds."""

from dataclasses import dataclass

from prefect import flow

from selectflow.config import MixtureSelector, ProbeConfig
from selectflow.flows.runner import run_stages
from selectflow.stages.mixture import (
    mixture_fit_stage,
    mixture_plan_stage,
    mixture_sample_stage,
    mixture_validation_stage,
)
from selectflow.stages.probe import probe_stage
from selectflow.stages.registry import MIXTURE_PROBE
from selectflow.store import ArtifactRef
from selectflow.tasks.common import FLOW_OPTIONS

VALIDATION_SEED = 1000  # offset of the validation samples' seeds from the proposals' (never the same draw)


@dataclass
class MixtureSearch:
    plan: ArtifactRef
    samples: list[ArtifactRef]  # the proposals' probe samples, then the validation samples
    probes: list[ArtifactRef]  # one per sample, same order
    fit: ArtifactRef
    validation: ArtifactRef


@flow(name="mixture-search", **FLOW_OPTIONS)
def search_mixture(workspace: str, pool: list[ArtifactRef], clusters: ArtifactRef | None,
                   reference: list[ArtifactRef], unseen: list[ArtifactRef], options: MixtureSelector,
                   probe: ProbeConfig) -> MixtureSearch:
    """Propose `options.mixtures` mixtures, probe each on a sample resampled to it, fit bpb on the weights, and
    probe the best mixture against the natural and the uniform one over `probe.seeds` paired seeds."""
    if probe.tokenizer != "bytes":
        raise ValueError("mixture search: its probe samples are counted in bytes; set probe.tokenizer: bytes")
    (plan,) = run_stages(mixture_plan_stage, "mixture-plan", workspace,
                         [{"pool": pool, "clusters": clusters, "options": options}], "mixture plan")
    planned = plan.manifest()["stats"]
    proposals = [(f"mixture {index}", weights, options.seed + index, probe.seed)
                 for index, weights in enumerate(planned["mixtures"])]
    samples, probes = _probed(workspace, pool, plan, reference, unseen, options, probe, proposals,
                              "mixture proposals")
    (fit,) = run_stages(mixture_fit_stage, "mixture-fit", workspace,
                        [{"plan": plan, "probes": probes, "options": options}], "mixture fit")
    k = len(planned["components"])
    compared = {"proposed": fit.manifest()["stats"]["weights"], "natural": planned["natural"], "uniform": [1 / k] * k}
    checks = [(f"{name} mixture", weights, options.seed + VALIDATION_SEED + seed, seed)
              for name, weights in compared.items() for seed in probe.replicate_seeds]
    checked_samples, checked = _probed(workspace, pool, plan, reference, unseen, options, probe, checks,
                                       "mixture validation")
    by_name = {name: {} for name in compared}
    for (label, _, _, seed), ref in zip(checks, checked):
        by_name[label.removesuffix(" mixture")][seed] = ref
    (validation,) = run_stages(mixture_validation_stage, "mixture-validation", workspace,
                               [{"fit": fit, "probes": by_name, "confidence": probe.confidence}], "mixture validation")
    return MixtureSearch(plan, samples + checked_samples, probes + checked, fit, validation)


def _probed(workspace, pool, plan, reference, unseen, options, probe, runs, progress):
    """For each (label, weights, sample seed, probe seed): the pool resampled to the weights and its probe."""
    samples = run_stages(mixture_sample_stage, "mixture-sample", workspace,
                         [{"pool": pool, "plan": plan, "weights": weights, "seed": sample_seed,
                           "label": label, "options": options} for label, weights, sample_seed, _ in runs],
                         f"{progress}: samples", label=lambda call: f"sample of {call['label']}")
    probes = run_stages(probe_stage, "mixture-probe", workspace,
                        [{"name": label, "subset": [sample], "reference": reference, "unseen": unseen, "cfg": probe,
                          "seed": seed, "tokens": options.probe_tokens, "stage": MIXTURE_PROBE.name}
                         for (label, _, _, seed), sample in zip(runs, samples)],
                        f"{progress}: probes", label=lambda call: f"probe {call['name']} seed {call['seed']}")
    return samples, probes
