"""The report's regulatory evidence map: what the audit measured, next to what reviewers ask.

It states *evidence*, never compliance: whether a device meets a guidance or a regulation is
decided by its manufacturer and its reviewers on the whole technical file, not by a tool.
The same map, with more context, is in ``docs/regulatory_evidence.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medrobust.evaluation.results import AuditDocument, as_document

#: One row per framework: what it asks (paraphrased), what this audit provides, where to look.
FRAMEWORKS: tuple[dict[str, str], ...] = (
    {
        "framework": "FDA draft guidance “Artificial Intelligence-Enabled Device Software Functions: "
        "Lifecycle Management and Marketing Submission Recommendations” (January 2025), cybersecurity",
        "asks": "Consider AI-specific cybersecurity risks, among them model evasion (inputs crafted to "
        "cause a wrong output), describe the controls and how they were tested; report performance "
        "with uncertainty (confidence intervals) on data independent of training.",
        "evidence": "Empirical evasion testing: robust accuracy under stated attacks, budgets and "
        "threat models, per-sample worst case with 95 % intervals; defenses compared with the bare "
        "model; sanity flags for masked gradients and degenerate targets; provenance hashes of model, "
        "defenses and data.",
        "where": "verdict, threat model, robust-accuracy tables, flags, provenance",
    },
    {
        "framework": "EU AI Act (Regulation (EU) 2024/1689), Article 15(5)",
        "asks": "High-risk AI systems shall be resilient against attempts to alter their outputs by "
        "exploiting vulnerabilities; technical solutions include measures to prevent, detect, "
        "respond to and control for inputs designed to cause the model to make a mistake "
        "(adversarial examples or model evasion).",
        "evidence": "Measured effect of adversarial examples (model evasion) on this model and each "
        "defense, under attackers with stated knowledge; it does not cover data or model poisoning, "
        "confidentiality attacks, or the organisational measures Art. 15 also asks for.",
        "where": "verdict, threat model, defenses vs bare model, gates",
    },
    {
        "framework": "ISO/IEC TR 24029-1:2021 (robustness of neural networks, overview)",
        "asks": "Assess robustness with statistical, formal or empirical methods; state the "
        "perturbations considered, the metrics and the test data.",
        "evidence": "Empirical and statistical assessment: attack-based robust accuracy at stated "
        "L∞/L2 budgets with confidence intervals, the attacks' settings, the audited samples and "
        "their split, per-class counts.",
        "where": "attacks and settings, statistics, what was audited",
    },
    {
        "framework": "ISO/IEC 24029-2:2023 (formal methods)",
        "asks": "Use formal methods to establish properties (e.g. local robustness) that hold for "
        "every input in a domain.",
        "evidence": "None: attacks find adversarial examples but cannot prove their absence. A high "
        "robust accuracy is an upper bound on true robustness, not a formal guarantee.",
        "where": "—",
    },
    {
        "framework": "IMDRF Good Machine Learning Practice guiding principles (testing under "
        "clinically relevant conditions; test data independent of training data)",
        "asks": "Show device performance under clinically relevant conditions, on test data "
        "independent of the training data and representative of the intended population.",
        "evidence": "Tests one clinically relevant condition (small, deliberate input perturbations "
        "within the preset's intensity range); records which split was audited and why (a source "
        "the model was trained on is audited on its held-out part), per-class counts and patients.",
        "where": "what was audited, flags (small-sample, missing-class)",
    },
)

DISCLAIMER = (
    "This map lists evidence the audit produced next to what the named documents ask for, as "
    "paraphrased here; it is not a statement of compliance, and the documents' current texts "
    "take precedence."
)


def evidence_map(results: AuditDocument | Mapping[str, Any]) -> dict[str, Any]:
    """The appendix context: rows of :data:`FRAMEWORKS` plus this audit's key numbers."""
    doc = as_document(results)
    return {
        "rows": list(FRAMEWORKS),
        "disclaimer": DISCLAIMER,
        "n": len(doc.data.labels),
        "n_attacks": len(doc.attacks),
        "threats": list(doc.threats),
        "gates": doc.verdict.gates.to_dict() if doc.verdict is not None else {},
    }
