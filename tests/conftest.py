"""Test-session settings shared by every package's tests."""

import os

# One torch thread per test process: on a small shared machine, oversubscribed intra-op
# threads make tiny-model tests many times slower (workers started by tests set their own).
os.environ.setdefault("OMP_NUM_THREADS", "1")
