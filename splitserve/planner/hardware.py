"""Accelerator profiles: the peaks the roofline divides by, and the price the search minimises.

Numbers are per GPU, dense (no 2:4 sparsity), taken from the vendors' spec sheets:

- A100-80GB SXM: NVIDIA A100 Tensor Core GPU datasheet (nvidia.com/content/dam/en-zz/
  Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf):
  BF16/FP16 312 TFLOPS, HBM2e 2,039 GB/s, 80 GB, NVLink 600 GB/s; no FP8.
- H100-SXM: NVIDIA H100 Tensor Core GPU datasheet (resources.nvidia.com/en-us-tensor-core/
  nvidia-tensor-core-gpu-datasheet): BF16 989 TFLOPS, FP8 1,979 TFLOPS (dense = half the
  "with sparsity" figure), HBM3 3.35 TB/s, 80 GB, NVLink 900 GB/s.
- H200 (SXM): NVIDIA H200 product page / datasheet (nvidia.com/en-us/data-center/h200/):
  same tensor cores as H100 (BF16 989, FP8 1,979 TFLOPS dense), HBM3e 4.8 TB/s, 141 GB,
  NVLink 900 GB/s.
- L40S: NVIDIA L40S datasheet (nvidia.com/en-us/data-center/l40s/): BF16 362 TFLOPS,
  FP8 733 TFLOPS dense, GDDR6 864 GB/s, 48 GB, no NVLink (PCIe Gen4 x16, 64 GB/s).
- B200 (HGX): NVIDIA DGX B200 / HGX B200 datasheet (nvidia.com/en-us/data-center/hgx/):
  BF16 2.25 PFLOPS, FP8 4.5 PFLOPS dense, HBM3e 8 TB/s, 180 GB, NVLink 5 1.8 TB/s.

Network (used for the KV handoff between pools on different nodes): one NIC per GPU as in
the DGX/HGX reference designs: ConnectX-6 HDR 200 Gb/s for A100, ConnectX-7 NDR 400 Gb/s
for H100/H200/B200, 200 Gb/s assumed for L40S servers.

Prices are indicative on-demand USD per GPU-hour (public cloud list prices, late 2024 to
2025, rounded); override them with `--price-per-hour`. They only scale the cost columns: the
saving of one layout against another on the same accelerator does not depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

_TERA = 1e12
_GIGA = 1e9


@dataclass(frozen=True)
class HardwareProfile:
    """One accelerator. Bandwidths are one direction, bytes per second."""

    name: str
    peak_flops: dict[str, float]  # dtype name -> dense FLOP/s
    memory_bw_bytes_s: float
    memory_bytes: float
    interconnect_bw_bytes_s: float  # intra-node GPU-GPU (tensor parallel, local KV handoff)
    interconnect_latency_s: float
    network_bw_bytes_s: float  # per-GPU NIC (KV handoff between nodes)
    network_latency_s: float
    price_per_hour: float
    source: str = ""
    aliases: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.peak_flops:
            raise ValueError(f"hardware {self.name!r}: peak_flops is empty")
        for dtype, flops in self.peak_flops.items():
            if flops <= 0:
                raise ValueError(f"hardware {self.name!r}: peak_flops[{dtype!r}] must be > 0")
        for name in (
            "memory_bw_bytes_s",
            "memory_bytes",
            "interconnect_bw_bytes_s",
            "network_bw_bytes_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"hardware {self.name!r}: {name} must be > 0")
        for name in ("interconnect_latency_s", "network_latency_s", "price_per_hour"):
            if getattr(self, name) < 0:
                raise ValueError(f"hardware {self.name!r}: {name} must be >= 0")

    def flops_for(self, dtype: str) -> float:
        """Dense peak for `dtype`; FP8 falls back to BF16 on parts without FP8 units."""
        key = _DTYPE_KEYS.get(dtype, dtype)
        if key in self.peak_flops:
            return self.peak_flops[key]
        if key == "fp8" and "bf16" in self.peak_flops:
            return self.peak_flops["bf16"]
        raise ValueError(
            f"hardware {self.name!r} has no peak for dtype {dtype!r} "
            f"(known: {sorted(self.peak_flops)})"
        )


_DTYPE_KEYS = {
    "bfloat16": "bf16",
    "float16": "bf16",
    "fp16": "bf16",
    "half": "bf16",
    "bf16": "bf16",
    "float8": "fp8",
    "float8_e4m3fn": "fp8",
    "fp8": "fp8",
    "float32": "fp32",
    "fp32": "fp32",
}

_NDR_400G = 50 * _GIGA  # 400 Gb/s
_HDR_200G = 25 * _GIGA

_PROFILES = (
    HardwareProfile(
        name="a100-80gb",
        peak_flops={"bf16": 312 * _TERA, "fp32": 19.5 * _TERA},
        memory_bw_bytes_s=2039 * _GIGA,
        memory_bytes=80 * _GIGA,
        interconnect_bw_bytes_s=300 * _GIGA,  # 600 GB/s NVLink 3 total = 300 each way
        interconnect_latency_s=8e-6,
        network_bw_bytes_s=_HDR_200G,
        network_latency_s=10e-6,
        price_per_hour=1.80,
        source="NVIDIA A100 datasheet (80GB SXM)",
        aliases=("a100",),
    ),
    HardwareProfile(
        name="h100-sxm",
        peak_flops={"bf16": 989 * _TERA, "fp8": 1979 * _TERA, "fp32": 67 * _TERA},
        memory_bw_bytes_s=3350 * _GIGA,
        memory_bytes=80 * _GIGA,
        interconnect_bw_bytes_s=450 * _GIGA,  # 900 GB/s NVLink 4 total
        interconnect_latency_s=6e-6,
        network_bw_bytes_s=_NDR_400G,
        network_latency_s=8e-6,
        price_per_hour=3.00,
        source="NVIDIA H100 Tensor Core GPU datasheet (SXM5)",
        aliases=("h100",),
    ),
    HardwareProfile(
        name="h200",
        peak_flops={"bf16": 989 * _TERA, "fp8": 1979 * _TERA, "fp32": 67 * _TERA},
        memory_bw_bytes_s=4800 * _GIGA,
        memory_bytes=141 * _GIGA,
        interconnect_bw_bytes_s=450 * _GIGA,
        interconnect_latency_s=6e-6,
        network_bw_bytes_s=_NDR_400G,
        network_latency_s=8e-6,
        price_per_hour=3.80,
        source="NVIDIA H200 datasheet (SXM)",
        aliases=("h200-sxm",),
    ),
    HardwareProfile(
        name="l40s",
        peak_flops={"bf16": 362 * _TERA, "fp8": 733 * _TERA, "fp32": 91.6 * _TERA},
        memory_bw_bytes_s=864 * _GIGA,
        memory_bytes=48 * _GIGA,
        interconnect_bw_bytes_s=32 * _GIGA,  # PCIe Gen4 x16, one direction
        interconnect_latency_s=15e-6,
        network_bw_bytes_s=_HDR_200G,
        network_latency_s=10e-6,
        price_per_hour=1.00,
        source="NVIDIA L40S datasheet",
        aliases=(),
    ),
    HardwareProfile(
        name="b200",
        peak_flops={"bf16": 2250 * _TERA, "fp8": 4500 * _TERA, "fp32": 80 * _TERA},
        memory_bw_bytes_s=8000 * _GIGA,
        memory_bytes=180 * _GIGA,
        interconnect_bw_bytes_s=900 * _GIGA,  # 1.8 TB/s NVLink 5 total
        interconnect_latency_s=5e-6,
        network_bw_bytes_s=_NDR_400G,
        network_latency_s=8e-6,
        price_per_hour=6.00,
        source="NVIDIA HGX/DGX B200 datasheet",
        aliases=(),
    ),
)

HARDWARE: dict[str, HardwareProfile] = {p.name: p for p in _PROFILES}


def get_hardware(name: str, *, price_per_hour: float | None = None) -> HardwareProfile:
    """Look a profile up by name or alias (case-insensitive); ValueError if unknown."""
    key = name.strip().lower()
    for profile in _PROFILES:
        if key == profile.name or key in profile.aliases:
            if price_per_hour is not None:
                return replace(profile, price_per_hour=price_per_hour)
            return profile
    known = sorted(n for p in _PROFILES for n in (p.name, *p.aliases))
    raise ValueError(f"unknown hardware {name!r}; known: {', '.join(known)}")
