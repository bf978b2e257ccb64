"""A trained adapter as a PEFT adapter folder that `PeftModel.from_pretrained` loads.

The LoRA adapter already is a PEFT model. The head adapter is a linear head over the frozen base
model's mean-pooled, L2-normalised embeddings; a sequence classifier's own head reads BERT's
pooled [CLS] output instead, and no PEFT mechanism makes its forward pool by mean. So the head
travels as PEFT saves trainable modules: a LoRA config with no LoRA layers (PEFT's
`dummy-target-modules`) and the head, as `classifier`, in `modules_to_save`. It loads with
PEFT's own loader onto the base sequence classifier; its predictions are `classifier` applied to
the mean-pooled embeddings (`head_logits`), not the model's `logits`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.utils.constants import DUMMY_TARGET_MODULES

from fedseal.models._quiet import quiet_transformers
from fedseal.models.base_models import get_base_model, load_classifier
from fedseal.models.features import FeatureHead, mean_pooled

__all__ = ["head_as_peft", "head_logits", "save_peft_adapter"]


def head_as_peft(base: str, head: FeatureHead) -> PeftModel:
    """The base sequence classifier wrapped by PEFT with `head`'s weights as its classifier."""
    spec = get_base_model(base)
    layer = head.classifier
    with torch.random.fork_rng():  # the classifier's own head is replaced: leave the RNG alone
        model = load_classifier(spec.name, int(layer.out_features), "cpu")
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        target_modules=DUMMY_TARGET_MODULES,
        modules_to_save=[spec.classifier_module],
    )
    with quiet_transformers():
        peft_model = get_peft_model(model, config)
    trained = peft_model.base_model.model.get_submodule(spec.classifier_module)
    with torch.no_grad():
        copy = trained.modules_to_save["default"]
        copy.weight.copy_(layer.weight.detach().cpu())
        copy.bias.copy_(layer.bias.detach().cpu())
    return peft_model.eval()


def save_peft_adapter(model: PeftModel, base: str, folder: Path) -> None:
    """`adapter_config.json` and `adapter_model.safetensors` in `folder`, naming the base model
    by its Hub id (where it has one) rather than this machine's folder."""
    spec = get_base_model(base)
    config = model.peft_config["default"]
    config.base_model_name_or_path = spec.hub_id or spec.name
    # the embeddings are frozen in every adapter fedseal trains, so PEFT need not look the base
    # model up on the Hub to decide whether to save them (offline it only warns that it could not)
    model.save_pretrained(str(folder), save_embedding_layers=False)


def head_logits(
    model: PeftModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """An exported head adapter's logits: its classifier on the mean-pooled embeddings."""
    inner = model.get_base_model()
    states = inner.base_model(input_ids=input_ids, attention_mask=attention_mask)
    return inner.classifier(mean_pooled(states.last_hidden_state, attention_mask))
