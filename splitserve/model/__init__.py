"""splitserve.model: HF checkpoint loading and a transformer forward over a paged KV cache.

Public API (what the engine step loop calls):

    config, model = load_model(model_dir, dtype="auto", device="cpu")
    kv_caches = allocate_kv_caches(config, num_blocks, block_size, device=device)
    batch = ForwardBatch.build([(token_ids, start_position, block_table), ...],
                               block_size, logits_for=[...], device=device)
    logits = model(batch, kv_caches)          # [N, vocab] float32
    data = export_blocks(kv_caches, layer, block_ids)
    import_blocks(kv_caches, layer, block_ids, data)
"""

from splitserve.model.config import ModelConfig
from splitserve.model.forward_batch import ForwardBatch
from splitserve.model.kv_cache import (
    allocate_kv_caches,
    bytes_per_block_per_layer,
    export_blocks,
    import_blocks,
    num_blocks_for_memory,
)
from splitserve.model.llama import LlamaForCausalLM
from splitserve.model.loader import load_model
from splitserve.model.registry import MODEL_REGISTRY

__all__ = [
    "MODEL_REGISTRY",
    "ForwardBatch",
    "LlamaForCausalLM",
    "ModelConfig",
    "allocate_kv_caches",
    "bytes_per_block_per_layer",
    "export_blocks",
    "import_blocks",
    "load_model",
    "num_blocks_for_memory",
]
