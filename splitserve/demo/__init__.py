"""splitserve.demo: the bundled demo checkpoint (a small Llama with a trained tokenizer).

`build_demo_model()` builds or finds it; `default_model_dir()` is what the verbs call when
no MODEL is given. Importing this package does not import torch (build imports it lazily).
"""

from splitserve.demo.build import (
    build_demo_model,
    default_cache_dir,
    default_demo_dir,
    is_complete,
)
from splitserve.demo.cli import default_model_dir
from splitserve.demo.spec import DEMO_DIR_NAME, DemoSpec

__all__ = [
    "DEMO_DIR_NAME",
    "DemoSpec",
    "build_demo_model",
    "default_cache_dir",
    "default_demo_dir",
    "default_model_dir",
    "is_complete",
]
