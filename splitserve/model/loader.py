"""Strict safetensors loader: every checkpoint tensor must map to a parameter, and back.

Parameter names are the Hugging Face names, so no name table is needed; the only
special cases are the rotary `inv_freq` buffers some exports carry (ignored: we recompute
them) and tied embeddings (`lm_head.weight` absent from the file, shared with the embedding).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from splitserve.model.config import ModelConfig
from splitserve.model.llama import LlamaForCausalLM
from splitserve.model.registry import model_class

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def resolve_dtype(dtype: str | torch.dtype, config: ModelConfig, device: torch.device) -> str:
    """`"auto"` -> the checkpoint's dtype, except float16 on CPU -> float32."""
    name = str(dtype).removeprefix("torch.")
    if name == "auto":
        name = config.dtype
        if device.type == "cpu" and name == "float16":
            name = "float32"
    if name not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; use auto, {', '.join(_DTYPES)}")
    if device.type == "cpu" and name == "float16":
        raise ValueError("dtype float16 is not supported on CPU; use float32 or bfloat16")
    return name


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint: sharded (via the index) or single."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no 'weight_map'")
        files = [model_dir / name for name in sorted(set(weight_map.values()))]
    else:
        files = [model_dir / "model.safetensors"]
    for path in files:
        if not path.is_file():
            raise ValueError(f"checkpoint file missing: {path}")
    return files


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    setattr(module, leaf, nn.Parameter(tensor, requires_grad=False))


def load_model(
    model_dir: str | Path,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "cpu",
) -> tuple[ModelConfig, LlamaForCausalLM]:
    """Load config.json + safetensors into an eval-mode model on `device`.

    Returns the config with `dtype` set to the loaded dtype, and the model with
    `model.identity` set (config + checkpoint tensor names/shapes hash). Raises ValueError
    naming every missing, unexpected or misshapen tensor.
    """
    model_dir = Path(model_dir)
    device = torch.device(device)
    config = ModelConfig.from_dir(model_dir)
    config = config.with_dtype(resolve_dtype(dtype, config, device))
    torch_dtype = _DTYPES[config.dtype]
    with torch.device("meta"):
        model = model_class(config)(config)
    # named_parameters drops the tied duplicate, so a tied lm_head is not expected.
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    tied_head = "lm_head.weight" if config.tie_word_embeddings else None
    found: dict[str, tuple[int, ...]] = {}
    misshapen: set[str] = set()
    problems: list[str] = []
    for path in checkpoint_files(model_dir):
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():
                if name.endswith(_IGNORED_SUFFIXES) or name == tied_head:
                    continue
                shape = tuple(f.get_slice(name).get_shape())
                if name in found:
                    problems.append(f"duplicate tensor {name!r} (again in {path.name})")
                    continue
                if name not in expected:
                    problems.append(f"unexpected tensor {name!r} {shape} in {path.name}")
                    continue
                if shape != expected[name]:
                    problems.append(f"tensor {name!r} has shape {shape}, expected {expected[name]}")
                    misshapen.add(name)
                    continue
                found[name] = shape
                tensor = f.get_tensor(name).to(device=device, dtype=torch_dtype)
                _set_parameter(model, name, tensor)
    problems += [
        f"missing tensor {name!r} {expected[name]}"
        for name in expected
        if name not in found and name not in misshapen
    ]
    if problems:
        raise ValueError(
            f"checkpoint {model_dir} does not match {config.architecture}: " + "; ".join(problems)
        )
    model.tie_weights()
    model.rotary_emb.to(device)
    model.identity = config.model_identity(found)
    model.eval()
    return config, model
