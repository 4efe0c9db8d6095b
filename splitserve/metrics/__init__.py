"""splitserve.metrics: per-phase utilization accounting (no torch)."""
