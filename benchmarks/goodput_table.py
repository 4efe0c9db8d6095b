"""Print benchmarks/results/goodput_compare.json as the markdown table docs/bench.md quotes.

    python -m benchmarks.goodput_table
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "goodput_compare.json"


def ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f}"


def main() -> None:
    data = json.loads(RESULTS.read_text())
    print(f"length scale 1/{data['length_scale']}, SLOs {data['slos']}\n")
    print("| scenario | topology | rate | TTFT p50 / p99 ms | TPOT p50 / p99 ms | "
          "ITL p99/p50 (after first gap) | first gap p50 ms | attainment ttft / tpot / both |")
    print("|---|---|---|---|---|---|---|---|")
    for name, sc in data["scenarios"].items():
        for topo, runs in sc["runs"].items():
            for r in runs:
                after = (r["itl_after_first_p99_s"] / r["itl_after_first_p50_s"]
                         if r.get("itl_after_first_p50_s") else None)
                ratio = r["itl_p99_over_p50"]
                att = r["attainment"]
                print(f"| {name} | {topo} | {r['rate_rps'] or 'trace'} | "
                      f"{ms(r['ttft_p50_s'])} / {ms(r['ttft_p99_s'])} | "
                      f"{ms(r['tpot_p50_s'])} / {ms(r['tpot_p99_s'])} | "
                      f"{ratio:.1f} ({after:.1f}) | {ms(r.get('first_itl_p50_s'))} | "
                      f"{att['ttft']:.0%} / {att['tpot']:.0%} / {att['both']:.0%} |"
                      if ratio is not None and after is not None else
                      f"| {name} | {topo} | {r['rate_rps']} | (no ITL) |")
        print(f"| {name} | goodput req/s | | {json.dumps(sc['goodput_rps'])} | | | | |")


if __name__ == "__main__":
    main()
