"""splitserve.planner: cost model, discrete-event simulator and pool sizing (no torch).

Public API: hardware profiles (`get_hardware`), model shapes (`load_model_spec`), latency
models (`RooflineLatencyModel`, `ProfileLatencyModel`), workloads (`generate`,
`load_trace`), the simulator (`simulate`) and the search (`run_plan`).
"""

from splitserve.planner.cost_model import Efficiency, LatencyModel, RooflineLatencyModel
from splitserve.planner.fleet import Pool, SchedulerConfig, TransferConfig
from splitserve.planner.hardware import HARDWARE, HardwareProfile, get_hardware
from splitserve.planner.host_share import HostShare
from splitserve.planner.model_spec import ModelSpec, load_model_spec
from splitserve.planner.overhead import OverheadLatencyModel, ServingOverhead
from splitserve.planner.plan import run_plan
from splitserve.planner.profile_format import ProfileLatencyModel, load_profile
from splitserve.planner.results import SimResult, Slo
from splitserve.planner.search import Layout, PlanSetup
from splitserve.planner.simulator import simulate
from splitserve.planner.workload import Requests, fixed_workload, generate, get_workload, load_trace

__all__ = [
    "HARDWARE",
    "Efficiency",
    "HardwareProfile",
    "HostShare",
    "LatencyModel",
    "Layout",
    "ModelSpec",
    "OverheadLatencyModel",
    "PlanSetup",
    "Pool",
    "ProfileLatencyModel",
    "Requests",
    "RooflineLatencyModel",
    "SchedulerConfig",
    "ServingOverhead",
    "SimResult",
    "Slo",
    "TransferConfig",
    "fixed_workload",
    "generate",
    "get_hardware",
    "get_workload",
    "load_model_spec",
    "load_profile",
    "load_trace",
    "run_plan",
    "simulate",
]
