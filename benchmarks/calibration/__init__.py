"""Planner calibration against our own engine (benchmarks/planner_calibration.py runs it).

setup: what is measured (model, workload, engine and router flags, topologies);
measure: the step profile and the real cluster runs (a calibration probe, then the
validation runs); fit: serving overheads from the probe only; replay: the same requests
through the planner's simulator; report: statistics, errors and tables.
"""
