"""Where one engine step's time goes: `torch.profiler` over the same fabricated steps
`splitserve profile` times (ModelRunner.forward + greedy sample), top ops by host and by
device time.

    PYTHONPATH=. python -m benchmarks.engine_step_trace MODEL_DIR --device cuda \
        --dtype bfloat16 --cell decode,1,0 --cell prefill,16,0 --out trace.txt

A step whose host time far exceeds its device time is launch-bound (Python and kernel
launches), which no roofline prices: see docs/gpu.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from splitserve.engine.engine_config import EngineConfig
    from splitserve.engine.model_runner import ModelRunner
    from splitserve.engine.profiler import _cell_sequences
    from splitserve.engine.sampler import sample
    from splitserve.engine.sampling_params import SamplingParams

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--cell", action="append", required=True,
                        help="table,rows,cols as in a profile, e.g. decode,1,0")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps per cell")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=None, help="also write the tables here")
    args = parser.parse_args(argv)

    config = EngineConfig(model=args.model, dtype=args.dtype, device=args.device,
                          num_blocks=2048, enable_prefix_caching=False)
    runner = ModelRunner(config)
    greedy = SamplingParams(temperature=0.0, max_tokens=1)
    cuda = runner.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    report = []
    for text in args.cell:
        table, rows, cols = text.split(",")
        seqs = _cell_sequences((table, int(rows), int(cols)), 16, runner.vocab_size)

        def step(seqs: list = seqs) -> None:
            sample(runner.forward(seqs, seqs), [greedy] * len(seqs), [0] * len(seqs), None, ())
            if cuda:
                torch.cuda.synchronize(runner.device)

        for _ in range(3):
            step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall_ms = (time.perf_counter() - t0) / args.steps * 1e3
        with profile(activities=activities) as prof:
            for _ in range(args.steps):
                step()
        averages = prof.key_averages()
        sort = "cuda_time_total" if cuda else "cpu_time_total"
        lines = [f"== {text}: {wall_ms:.2f} ms per step (wall, unprofiled)",
                 averages.table(sort_by="self_cpu_time_total", row_limit=args.top)]
        if cuda:
            lines.append(averages.table(sort_by=sort, row_limit=args.top))
        report.append("\n".join(lines))
    text_out = "\n\n".join(report)
    print(text_out)
    if args.out:
        Path(args.out).write_text(text_out + "\n")


if __name__ == "__main__":
    main()
