"""Merge PEFT LoRA adapters into a backbone, whichever model class they were trained on.

Adapters come with the module paths of whichever class they were trained on: the causal-LM class
(``model.layers.N...``, e.g. adapters from the reference llm2vec) or the bare transformer
(``layers.N...``, where every decoder2vec stage puts its LoRA). We remap each adapter's keys onto the modules the
target model really has, so both kinds apply to either class, and fail loudly when a key fits nowhere
(PEFT alone would only warn and silently leave that LoRA weight at its initial value).
"""

from __future__ import annotations

from pathlib import Path

import torch

from decoder2vec.errors import ModelLoadError

_PEFT_PREFIX = "base_model.model."


def _remap_keys(
    state: dict[str, torch.Tensor], module_names: set[str], adapter_dir: Path
) -> dict[str, torch.Tensor]:
    remapped = {}
    for key, value in state.items():
        body = key.removeprefix(_PEFT_PREFIX)
        if ".lora_" not in body:
            raise ModelLoadError(
                f"adapter {adapter_dir} holds a non-LoRA weight '{key}'; only LoRA adapters can be merged"
            )
        module_path, leaf = body.split(".lora_", 1)
        for candidate in (module_path, module_path.removeprefix("model."), f"model.{module_path}"):
            if candidate in module_names:
                remapped[f"{_PEFT_PREFIX}{candidate}.lora_{leaf}"] = value
                break
        else:
            raise ModelLoadError(
                f"adapter {adapter_dir} targets module '{module_path}', which this model does not have"
            )
    return remapped


def merge_adapters(model: torch.nn.Module, adapter_dirs: list[str | Path]) -> torch.nn.Module:
    """Apply each LoRA adapter folder in order and merge it into the weights; returns the plain model."""
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    for adapter_dir in map(Path, adapter_dirs):
        weights = adapter_dir / "adapter_model.safetensors"
        if not (adapter_dir / "adapter_config.json").is_file() or not weights.is_file():
            raise ModelLoadError(
                f"{adapter_dir} is not a PEFT adapter folder (needs adapter_config.json and adapter_model.safetensors)"
            )
        config = PeftConfig.from_pretrained(str(adapter_dir))
        config.inference_mode = True
        module_names = {name for name, _ in model.named_modules()}
        state = _remap_keys(load_file(str(weights)), module_names, adapter_dir)
        peft_model = get_peft_model(model, config)
        result = set_peft_model_state_dict(peft_model, state)
        if result.unexpected_keys:
            raise ModelLoadError(
                f"adapter {adapter_dir} has weights this model cannot take: {result.unexpected_keys[:3]}"
            )
        model = peft_model.merge_and_unload()
    return model
