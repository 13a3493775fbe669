"""The self-contained HTML run report: `RunReport` (what a run shows) -> `render_report` / `write_report`."""

from selectflow.report.data import (
    Bandit,
    BanditRound,
    ClusterComposition,
    CurvePoint,
    DomainComposition,
    FunnelStep,
    HeldoutPoint,
    HistoryPoint,
    ProbeResult,
    ProbeSummary,
    Risk,
    RiskCheck,
    RiskFit,
    RunReport,
    SubsetRisk,
    Zip,
    ZipRound,
)
from selectflow.report.html import render_report, write_report

__all__ = [
    "Bandit",
    "BanditRound",
    "ClusterComposition",
    "CurvePoint",
    "DomainComposition",
    "FunnelStep",
    "HeldoutPoint",
    "HistoryPoint",
    "ProbeResult",
    "ProbeSummary",
    "Risk",
    "RiskCheck",
    "RiskFit",
    "RunReport",
    "SubsetRisk",
    "Zip",
    "ZipRound",
    "render_report",
    "write_report",
]
