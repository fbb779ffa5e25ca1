"""corl: CoRL (co-reinforcement learning) for unified multimodal models."""

import os

# Bit-exact runs on the CPU, a resumed run included. By default MKL may split a matmul over another
# number of threads from call to call (MKL_DYNAMIC) and take code paths that depend on how the data
# happen to be aligned in memory (conditional numerical reproducibility off); either rounds the last
# bit differently in a new process. Intel's conditions for run-to-run reproducible results are a
# fixed thread count, MKL_DYNAMIC and OMP_DYNAMIC FALSE, and MKL_CBWR set (AUTO: the CPU's own fastest
# reproducible path). Set before torch loads MKL; a value the user exported wins.
os.environ.setdefault("MKL_CBWR", "AUTO")
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("OMP_DYNAMIC", "FALSE")
