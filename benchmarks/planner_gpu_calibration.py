"""The planner against our engine on a GPU: the runs `scripts/gpu_planner_calibration.sh`
made there (a 1 prefill + 1 decode cluster, the chat workload at a few Poisson rates),
replayed in the simulator on the profile measured there.

Only the bare profile is simulated (the calibration's `profile` variant: the measured
steps, the KV handoff at the CPU-measured TCP link, no serving terms fitted), because
these runs carry no probe to fit serving terms on: it says how far the measured steps
alone carry on a GPU, where every step is launch-bound (docs/planner.md).

    PYTHONPATH=. python benchmarks/planner_gpu_calibration.py FILES_DIR \
        --out benchmarks/results/gpu_h200/planner_gpu_calibration.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.calibration import replay
from benchmarks.calibration.report import errors, stats
from benchmarks.calibration.setup import Setup
from benchmarks.calibration.variants import DEFAULT_LINK
from splitserve.bench.report import write_json
from splitserve.planner.profile_format import load_profile

SLO = (2.0, 0.1)  # the goodput benchmark's "both": TTFT s, TPOT s


def summary(ttft: np.ndarray, tpot: np.ndarray, finished: np.ndarray) -> dict[str, Any]:
    """The calibration's statistics (`report.stats`) at `SLO`, with the request counts."""
    out = stats(ttft, tpot, finished, SLO, sweep=())
    out.pop("attainment_sweep")
    return {"num": int(len(ttft)), "num_finished": int(finished.sum()), **out}


def compare(records: list[dict[str, Any]], profile: dict[str, Any],
            setup: Setup) -> dict[str, Any]:
    """One run: the real client-side statistics beside the simulated replay's."""
    rows = replay.sent(records)  # the order the replay's arrays follow

    def arr(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)

    sim = replay.replay(setup, "1P1D", records, profile, DEFAULT_LINK)
    r = summary(arr("ttft_s"), arr("tpot_s"), np.array([bool(x["success"]) for x in rows]))
    s = summary(sim["ttft_s"], sim["tpot_s"], sim["finished"])
    err = errors({**r, "attainment_sweep": {}}, {**s, "attainment_sweep": {}})
    return {"real": r, "simulated": s, "errors": err, "real_stages": stages(rows)}


STAGES = ("prefill.queue_s", "decode.kv_transfer_s", "decode.queue_s")


def stages(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Median and p90 seconds of the router timeline's stages (runs made with `bench
    --timeline`; None without): where a request's time went on the real cluster."""
    timelines = [r["timeline"] for r in rows if r.get("timeline")]
    if not timelines:
        return None
    out: dict[str, Any] = {}
    for key in STAGES:
        values = [t[key] for t in timelines if t.get(key) is not None]
        if values:
            out[key] = {"p50": float(np.median(values)), "p90": float(np.quantile(values, 0.9)),
                        "num": len(values)}
    prompt = [v for v in (replay.prompt_stage_s(r) for r in rows) if v is not None]
    if prompt:
        out["prompt_stage_s"] = {"p50": float(np.median(prompt)),
                                 "p90": float(np.quantile(prompt, 0.9)), "num": len(prompt)}
    return out


def runs_in(bench_dir: Path) -> list[tuple[float, list[dict[str, Any]]]]:
    """(rate, records) of every `rate_<R>.jsonl` a sweep wrote, by rate."""
    out = []
    for path in bench_dir.glob("rate_*.jsonl"):
        rate = float(re.fullmatch(r"rate_(.+)\.jsonl", path.name).group(1))  # type: ignore[union-attr]
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out.append((rate, records))
    return sorted(out, key=lambda x: x[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", help="the folder holding profile.json and bench.tar.gz")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    files = Path(args.files)
    profile = load_profile(files / "profile.json")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(files / "bench.tar.gz") as tar:
            tar.extractall(tmp, filter="data")
        runs = runs_in(Path(tmp) / "bench")
    if not runs:
        raise SystemExit(f"no rate_*.jsonl in {files / 'bench.tar.gz'}")
    setup = Setup()  # the engine limits the script served with (512 tokens, 64 seqs)
    result: dict[str, Any] = {"profile": {k: profile.get(k) for k in ("hardware", "model", "measured_at",
                                                        "torch_version")},
              "slo": list(SLO), "link": dataclasses.asdict(DEFAULT_LINK),
              "runs": [{"rate_rps": rate, **compare(records, profile, setup)}
                       for rate, records in runs]}
    print(f"{profile['model']['name']} on {profile['hardware']['name']}: simulated (bare "
          "profile) against real, 1P1D")
    for run in result["runs"]:
        r, s, e = run["real"], run["simulated"], run["errors"]
        print(f"  {run['rate_rps']:g} req/s ({r['num']} requests): p90 TTFT "
              f"{r['p90_ttft_s'] * 1e3:.0f} vs {s['p90_ttft_s'] * 1e3:.0f} ms "
              f"({e['p90_ttft_rel_err']:+.0%}), p90 TPOT {r['p90_tpot_s'] * 1e3:.1f} vs "
              f"{s['p90_tpot_s'] * 1e3:.1f} ms ({e['p90_tpot_rel_err']:+.0%}), attainment "
              f"{r['attainment']:.1%} vs {s['attainment']:.1%}")
        for key, v in (run["real_stages"] or {}).items():
            print(f"    real {key}: p50 {v['p50'] * 1e3:.0f} ms, p90 {v['p90'] * 1e3:.0f} ms")
    if args.out:
        write_json(args.out, result)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
