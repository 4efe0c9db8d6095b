"""Build (or find) the cached demo checkpoint: tokenizer, trained Llama, model card.

A build happens in a hidden temporary folder beside the destination and becomes visible
only by one rename once every file, the completion marker last, is written; an
interrupted build therefore never leaves a folder that looks complete. Concurrent builders
(several workers starting at once) serialise on a lock file, and the loser finds the
winner's folder complete and returns it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from splitserve.demo.card import SAMPLE_PROMPT, model_card
from splitserve.demo.spec import (
    DEFAULT_MAX_STEPS,
    DEFAULT_TRAIN_SECONDS,
    DEMO_DIR_NAME,
    DemoSpec,
)

COMPLETE_MARKER = ".splitserve-demo-complete"
REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "build_info.json",
    "README.md",
)
_SAMPLE_NEW_TOKENS = 40


def default_cache_dir() -> Path:
    """`$SPLITSERVE_CACHE`, else `~/.cache/splitserve`."""
    env = os.environ.get("SPLITSERVE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "splitserve"


def default_demo_dir() -> Path:
    return default_cache_dir() / DEMO_DIR_NAME


def is_complete(model_dir: Path) -> bool:
    """Whether model_dir holds a finished demo build (marker and every required file)."""
    return (model_dir / COMPLETE_MARKER).is_file() and all(
        (model_dir / name).is_file() for name in REQUIRED_FILES
    )


def build_demo_model(
    out_dir: Path | str | None = None,
    *,
    train_seconds: float | None = DEFAULT_TRAIN_SECONDS,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    seed: int = 0,
    force: bool = False,
    num_threads: int | None = None,
    spec: DemoSpec | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Return the demo checkpoint folder, building it first unless already complete.

    out_dir defaults to `default_demo_dir()`. `spec` overrides the model shape (tests use a
    tiny one); train_seconds, max_steps and seed always override the spec's. An existing
    complete folder is returned as is, whatever recipe made it, unless force is set.
    num_threads caps torch's threads (default: every core this process may run on); a
    time-bounded run may use fewer when the machine is busy (see threads.py).
    """
    if num_threads is not None and num_threads <= 0:
        raise ValueError(f"num_threads must be positive, got {num_threads}")
    spec = (spec or DemoSpec()).replace(train_seconds=train_seconds, max_steps=max_steps, seed=seed)
    target = Path(out_dir).expanduser() if out_dir is not None else default_demo_dir()
    if not force and is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target):
        if not force and is_complete(target):
            return target  # another process finished it while we waited
        _remove_stale_temps(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would make the cached model private by accident
        try:
            _build_into(
                tmp, target.name, spec, num_threads or _num_cores(), log or (lambda _msg: None)
            )
            _replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _build_lock(target: Path) -> Iterator[None]:
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): builds are not serialised
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _remove_stale_temps(target: Path) -> None:
    """Delete temp folders of builds that died (we hold the lock, so none is live)."""
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _replace_dir(new: Path, target: Path) -> None:
    """Move the finished build into place; an old folder (incomplete or forced) goes first."""
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-old-", dir=target.parent))
        os.replace(target, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(new, target)


def _add_legacy_config_keys(config_path: Path, spec: DemoSpec) -> None:
    """Also write the transformers-4 spellings `rope_theta` and `torch_dtype`.

    transformers 5 saves them as `rope_parameters` and `dtype`; most checkpoints in the
    wild (and loaders written against them) use the old keys, and transformers 5 reads
    both, so the folder carries both.
    """
    config = json.loads(config_path.read_text())
    config.setdefault("rope_theta", spec.rope_theta)
    config.setdefault("torch_dtype", "float32")
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    """No progress bars from save/load (they would interleave with our log lines)."""
    hf_logging = transformers.utils.logging
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _num_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _build_into(
    tmp: Path, name: str, spec: DemoSpec, num_threads: int, log: Callable[[str], None]
) -> None:
    import tokenizers
    import torch
    import transformers

    from splitserve.demo.corpus import load_demo_corpus
    from splitserve.demo.tokenizer import render_chat, train_tokenizer, write_tokenizer_files
    from splitserve.demo.train import greedy_sample, make_model, token_stream, train_model

    start_s = time.monotonic()
    corpus = load_demo_corpus(spec.corpus_max_chars)
    chats = [
        render_chat(
            [{"role": "user", "content": ex.question}, {"role": "assistant", "content": ex.answer}],
            add_generation_prompt=False,
        )
        for ex in corpus.chat_examples
    ]
    tokenizer = train_tokenizer(corpus.documents + chats, spec.vocab_size)
    write_tokenizer_files(tokenizer, spec, tmp)
    log(f"corpus {corpus.num_chars} chars; tokenizer of {tokenizer.get_vocab_size()} tokens")

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = make_model(spec, tokenizer)
            result = train_model(model, spec, token_stream(tokenizer, corpus, spec.seed), log)
        with _quiet_transformers(transformers):
            model.save_pretrained(tmp)
        if not (tmp / "model.safetensors").is_file():
            raise RuntimeError(f"save_pretrained wrote no model.safetensors in {tmp}")
        _add_legacy_config_keys(tmp / "config.json", spec)
        # The sample comes from the files just written, so it also proves they load.
        with _quiet_transformers(transformers):
            reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp)
            hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp)
        completion = greedy_sample(reloaded, hf_tokenizer, SAMPLE_PROMPT, _SAMPLE_NEW_TOKENS)
    finally:
        torch.set_num_threads(previous_threads)

    info: dict[str, Any] = {
        "name": name,
        "spec": spec.to_dict(),
        "training": result.__dict__,
        "dtype": "float32",
        "sample": {"prompt": SAMPLE_PROMPT, "completion": completion},
        "build_s": time.monotonic() - start_s,
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
    }
    (tmp / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    (tmp / "README.md").write_text(model_card(info))
    (tmp / COMPLETE_MARKER).write_text("complete\n")
    log(f"trained {result.num_steps} steps, loss {result.train_loss:.3f}; sample: {completion!r}")
