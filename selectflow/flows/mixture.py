"""The mixture search: plan the proposals, sample and probe each one side by side on the workers, fit."""

from dataclasses import dataclass

from prefect import flow

from selectflow.config import MixtureSelector, ProbeConfig
from selectflow.flows.runner import run_stages
from selectflow.stages.mixture import mixture_fit_stage, mixture_plan_stage, mixture_sample_stage
from selectflow.stages.probe import probe_stage
from selectflow.stages.registry import MIXTURE_PROBE
from selectflow.store import ArtifactRef
from selectflow.tasks.common import FLOW_OPTIONS


@dataclass
class MixtureSearch:
    plan: ArtifactRef
    samples: list[ArtifactRef]
    probes: list[ArtifactRef]
    fit: ArtifactRef


@flow(name="mixture-search", **FLOW_OPTIONS)
def search_mixture(workspace: str, pool: list[ArtifactRef], clusters: ArtifactRef | None,
                   reference: list[ArtifactRef], unseen: list[ArtifactRef], options: MixtureSelector,
                   probe: ProbeConfig) -> MixtureSearch:
    """Propose `options.mixtures` mixtures, probe each on a sample resampled to it, fit bpb on the weights."""
    if probe.tokenizer != "bytes":
        raise ValueError("mixture search: its probe samples are counted in bytes; set probe.tokenizer: bytes")
    (plan,) = run_stages(mixture_plan_stage, "mixture-plan", workspace,
                         [{"pool": pool, "clusters": clusters, "options": options}], "mixture plan")
    indices = range(options.mixtures)
    samples = run_stages(mixture_sample_stage, "mixture-sample", workspace,
                         [{"pool": pool, "clusters": clusters, "plan": plan, "index": index, "options": options}
                          for index in indices], "mixture samples", label=lambda call: f"mixture {call['index']}")
    probes = run_stages(probe_stage, "mixture-probe", workspace,
                        [{"name": f"mixture {index}", "subset": [sample], "reference": reference, "unseen": unseen,
                          "cfg": probe, "seed": probe.seed, "tokens": options.probe_tokens,
                          "stage": MIXTURE_PROBE.name} for index, sample in zip(indices, samples)],
                        "mixture probes", label=lambda call: f"probe {call['name']}")
    (fit,) = run_stages(mixture_fit_stage, "mixture-fit", workspace,
                        [{"plan": plan, "probes": probes, "options": options}], "mixture fit")
    return MixtureSearch(plan, samples, probes, fit)
