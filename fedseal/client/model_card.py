"""The model card (`README.md`, the Hugging Face convention) of an exported adapter.

Every figure on it comes from a record someone can check: the run plan and applied rounds the
site kept (`run_record`), the adapter's digest (the one the ledger records for the round), and the
privacy spend either from the site's own signed statements or, when whoever exports holds the
coordinator's registry, from its ledger (`ledger_facts`). What the exporter does not know is
said, never filled in. A JSON block repeats the figures for a script that checks them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fedseal.client.ledger_facts import LedgerFacts, SiteSpend
from fedseal.contract.run_plan import AdapterKind, RunPlan

__all__ = ["CARD_FORMAT", "CardFacts", "card_figures", "render_card", "usage_snippet"]

CARD_FORMAT = "fedseal-model-card/1"


@dataclass(frozen=True)
class CardFacts:
    """What the card states. `ledger` is None when only the site's own records were read."""

    site: str
    run_id: str
    registry_run_id: int | None
    plan: RunPlan
    mode: str
    scenario: str | None
    applied_round: int
    sampled: tuple[str, ...]
    adapter_digest: str
    weights_sha256: str
    base_hub_id: str
    base_package: str
    base_weights_sha256: str
    own_spend: SiteSpend | None
    scores: dict[str, float]
    checked_records: int
    checked_max_difference: float
    ledger: LedgerFacts | None = None


def card_figures(facts: CardFacts) -> dict[str, Any]:
    """The card's figures as one JSON document (the block a checking script reads)."""
    ledger = facts.ledger
    spends = ledger.spends if ledger is not None else _own(facts)
    return {
        "format": CARD_FORMAT,
        "exported_by": facts.site,
        "flower_run_id": facts.run_id,
        "registry_run_id": facts.registry_run_id,
        "base_model": facts.base_hub_id,
        "base_model_package": facts.base_package,
        "base_weights_sha256": facts.base_weights_sha256,
        "adapter": str(facts.plan.adapter),
        "labels": list(facts.plan.labels),
        "max_length": facts.plan.max_length,
        "scenario": facts.scenario,
        "mode": facts.mode,
        "rounds_planned": facts.plan.rounds,
        "round": facts.applied_round,
        "rounds_completed": None if ledger is None else ledger.rounds_completed,
        "sites": None if ledger is None else list(ledger.sites),
        "adapter_digest": facts.adapter_digest,
        "adapter_model_sha256": facts.weights_sha256,
        "privacy_source": "ledger" if ledger is not None else "site",
        "privacy": {
            site: {
                "epsilon_run": s.epsilon_run,
                "epsilon_cumulative": s.epsilon_cumulative,
                "delta": s.delta,
                "accountant": s.accountant,
                "budget": s.budget,
                "rounds_charged": s.rounds_charged,
                "rounds_declined": s.rounds_declined,
            }
            for site, s in spends.items()
        },
        "chain_head": None
        if ledger is None or ledger.chain_head is None
        else {"seq": ledger.chain_head[0], "entry_hash": ledger.chain_head[1]},
    }


def _own(facts: CardFacts) -> dict[str, SiteSpend]:
    return {} if facts.own_spend is None else {facts.site: facts.own_spend}


def render_card(facts: CardFacts) -> str:
    """The whole README.md: metadata, what the model is, how it was trained, what it spent."""
    plan, ledger = facts.plan, facts.ledger
    spends = ledger.spends if ledger is not None else _own(facts)
    head = plan.adapter is AdapterKind.HEAD
    tags = ["fedseal", "federated-learning", "text-classification"]
    tags += [] if head else ["lora"]
    tags += ["differential-privacy"] if spends else []
    scenario = facts.scenario or "the sites' own records"
    lines = [
        "---",
        f"base_model: {facts.base_hub_id}",
        "library_name: peft",
        "pipeline_tag: text-classification",
        "tags:",
        *(f"- {tag}" for tag in tags),
        "---",
        "",
        f"# {scenario}: federated {plan.adapter} adapter, run {facts.run_id}",
        "",
        f"A PEFT adapter for `{facts.base_hub_id}` trained by a fedseal federation: each site "
        "trained on its own records, which never left it, and only the aggregate of the sites' "
        f"updates changed the shared adapter (mode `{facts.mode}`). Exported by site "
        f"`{facts.site}` from its copy of the run's global adapter after round "
        f"{facts.applied_round}.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{facts.base_hub_id}` (fedseal `{plan.base_model}`, offline in the "
        f"package `{facts.base_package}`; weights SHA-256 `{facts.base_weights_sha256}`) |",
        f"| adapter | {_adapter_text(plan)} |",
        f"| labels | {len(plan.labels)}, in output order: "
        + ", ".join(f"`{label}`" for label in plan.labels)
        + " |",
        f"| input | at most {plan.max_length} tokens (longer texts are truncated) |",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| scenario | {scenario} |",
        f"| run | Flower run {facts.run_id}"
        + ("" if facts.registry_run_id is None else f", registry run {facts.registry_run_id}")
        + " |",
        f"| rounds | {_rounds_text(facts)} |",
        f"| sites | {_sites_text(facts)} |",
        f"| aggregation mode | `{facts.mode}` |",
        f"| local training | {plan.steps} steps a round at learning rate {plan.learning_rate:g}, "
        f"seed {plan.seed} |",
        "",
        "## Privacy",
        "",
        *_privacy_lines(facts, spends),
        "",
        "## Checking this card against the ledger",
        "",
        "| | |",
        "|---|---|",
        f"| adapter digest | `{facts.adapter_digest}`: fedseal's digest of the global adapter "
        f"(SHA-256 over its layout digest and float32 values), {_digest_source(facts)} |",
        f"| `adapter_model.safetensors` SHA-256 | `{facts.weights_sha256}` |",
        f"| ledger chain head | {_head_text(facts)} |",
        "",
        "`fl-audit verify` checks the chain, every signature and every ε of the ledger; the "
        "figures on this card, as JSON:",
        "",
        "```json",
        json.dumps(card_figures(facts), indent=2),
        "```",
        "",
        "## Usage",
        "",
        "```python",
        usage_snippet(plan, facts.base_hub_id),
        "```",
        "",
        *_limitation_lines(plan),
        "## Evaluation",
        "",
        *_score_lines(facts),
        "",
    ]
    return "\n".join(lines)


def _adapter_text(plan: RunPlan) -> str:
    if plan.adapter is AdapterKind.HEAD:
        return (
            "head: a linear layer over the frozen base model's mean-pooled, L2-normalised "
            "embeddings, saved as PEFT saves trainable modules (`classifier` in "
            "`modules_to_save`; no LoRA layers: `target_modules` is PEFT's "
            "`dummy-target-modules`)"
        )
    return (
        f"LoRA r={plan.lora_rank}, α={plan.lora_alpha:g} on the attention's query and value, "
        "and the classification head (`classifier` in `modules_to_save`)"
    )


def _rounds_text(facts: CardFacts) -> str:
    ledger = facts.ledger
    if ledger is not None:
        return (
            f"{ledger.rounds_planned} planned, {ledger.rounds_completed} completed (registry); "
            f"this adapter includes round {facts.applied_round}, the last completed"
        )
    return f"{facts.plan.rounds} planned; this adapter includes round {facts.applied_round}"


def _sites_text(facts: CardFacts) -> str:
    if facts.ledger is not None:
        names = facts.ledger.sites
        return f"{len(names)}: " + ", ".join(f"`{s}`" for s in names) + " (registry)"
    text = f"`{facts.site}`"
    others = [s for s in facts.sampled if s != facts.site]
    if others:
        text += "; sampled with it (apply messages): " + ", ".join(f"`{s}`" for s in others)
    return text + "; the registry records every contributor"


def _privacy_lines(facts: CardFacts, spends: dict[str, SiteSpend]) -> list[str]:
    if facts.ledger is not None:
        source = (
            f"From the coordinator's privacy ledger (registry run {facts.ledger.registry_run_id}): "
            "every site's signed entries of this run."
        )
        missing = [s for s in facts.ledger.sites if s not in spends]
        if missing:
            source += " No entries (trained without DP): " + ", ".join(missing) + "."
    elif spends:
        source = (
            f"From the statements site `{facts.site}` signed for this run; the other sites' "
            "figures are in the coordinator's privacy ledger (`fl-audit`), not known here."
        )
    else:
        return [
            f"Site `{facts.site}` signed no privacy statement for this run: it trained without "
            "differential privacy. The other sites' figures are in the coordinator's privacy "
            "ledger (`fl-audit`), not known here."
        ]
    rows = [
        source,
        "",
        "| site | ε this run | ε cumulative | δ | accountant | budget | charged | declined |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for site, s in spends.items():
        rows.append(
            f"| `{site}` | {s.epsilon_run:.6g} | {s.epsilon_cumulative:.6g} | {s.delta:.6g} | "
            f"{s.accountant} | {s.budget:g} | {s.rounds_charged} | {s.rounds_declined} |"
        )
    rows += [
        "",
        "ε this run composes the run's charged DP-SGD steps (σ, q, steps of each entry); "
        "ε cumulative is the figure each site signed in its last entry of the run: every step "
        "it ever charged on these records, earlier runs included.",
    ]
    return rows


def _digest_source(facts: CardFacts) -> str:
    if facts.ledger is not None:
        return (
            f"equal to the registry's `global_digest` of round {facts.applied_round}, the run's "
            "last completed round"
        )
    return (
        f"as site `{facts.site}` reported it on applying round {facts.applied_round}; the "
        "registry records the round's `global_digest` and each site's reported digest"
    )


def _head_text(facts: CardFacts) -> str:
    ledger = facts.ledger
    if ledger is None:
        return "not known at the site: the coordinator's registry holds the chain"
    if ledger.chain_head is None:
        return "the chain was empty"
    seq, entry_hash = ledger.chain_head
    return f"entry {seq}, hash `{entry_hash}` (when this card was written)"


def usage_snippet(plan: RunPlan, base_hub_id: str) -> str:
    """Python that loads the adapter with transformers and PEFT and classifies texts as the
    site's model does (`base_model` and `adapter` are the two lines to change)."""
    labels = json.dumps(list(plan.labels), ensure_ascii=False)
    lines = [
        "import torch",
        "from peft import PeftModel",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        f'base_model = "{base_hub_id}"  # or the folder of an offline copy',
        'adapter = "."  # this folder',
        f"labels = {labels}",
        "",
        "tokenizer = AutoTokenizer.from_pretrained(base_model)",
        "base = AutoModelForSequenceClassification.from_pretrained(",
        "    base_model,",
        "    num_labels=len(labels),",
        "    id2label=dict(enumerate(labels)),",
        "    label2id={label: i for i, label in enumerate(labels)},",
        ")",
        "# transformers reports the classifier as newly initialised: the adapter replaces it",
        "model = PeftModel.from_pretrained(base, adapter).eval()",
        "",
        "",
        "@torch.no_grad()",
        "def classify(texts):",
        "    batch = tokenizer(",
        f"        texts, padding=True, truncation=True, max_length={plan.max_length}, "
        'return_tensors="pt"',
        "    )",
    ]
    if plan.adapter is AdapterKind.HEAD:
        lines += [
            "    # the head reads mean-pooled, L2-normalised embeddings, not the [CLS] pooler",
            "    inner = model.get_base_model()",
            "    states = inner.base_model(**batch).last_hidden_state",
            '    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)',
            "    pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)",
            "    logits = inner.classifier(torch.nn.functional.normalize(pooled, dim=-1))",
        ]
    else:
        lines += ["    logits = model(**batch).logits"]
    lines += ["    return [labels[i] for i in logits.argmax(-1).tolist()], logits"]
    return "\n".join(lines)


def _limitation_lines(plan: RunPlan) -> list[str]:
    if plan.adapter is not AdapterKind.HEAD:
        return []
    return [
        "**Limitation.** The head was trained on mean-pooled embeddings (the pooling the base "
        "model was trained for). `model(**batch).logits` applies it to BERT's pooled [CLS] "
        "output instead and does not give this model's predictions; classify as above. "
        'Pipelines that call the model\'s forward (`pipeline("text-classification")`) are '
        "affected the same way.",
        "",
    ]


def _score_lines(facts: CardFacts) -> list[str]:
    lines = [
        f"Checked at export: the folder, loaded with `PeftModel.from_pretrained` and classifying "
        f"as above, gave the site's model's logits on {facts.checked_records} of the site's test "
        f"records (largest difference {facts.checked_max_difference:.2g}).",
    ]
    own = _score_line(facts.scores, "eval", f"site `{facts.site}`'s held-out test records")
    overall = _score_line(facts.scores, "global", "the global test set")
    for line in (own, overall):
        if line:
            lines += ["", line + " (as the site reported for the round)."]
    return lines


def _score_line(scores: dict[str, float], prefix: str, where: str) -> str:
    """`On WHERE (n records): accuracy a, ROC AUC b`, or "" when the site did not score it."""
    if f"{prefix}-accuracy" not in scores:
        return ""
    line = (
        f"On {where} ({int(scores.get(f'{prefix}-examples', 0))} records): accuracy "
        f"{scores[f'{prefix}-accuracy']:.4f}"
    )
    if f"{prefix}-auc" in scores:
        line += f", ROC AUC {scores[f'{prefix}-auc']:.4f}"
    return line
