"""corl: CoRL (co-reinforcement learning) for unified multimodal models."""

import os

# Bit-exact runs on the CPU. Left dynamic, MKL picks each call's thread count at run time, and a matmul
# split over another count rounds differently in the last bit: a resumed run then drifts from the
# uninterrupted one (Intel names fixed counts, MKL_DYNAMIC and OMP_DYNAMIC FALSE, as the conditions for
# run-to-run reproducible results). Set before torch loads MKL; a value the user exported wins.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
os.environ.setdefault("OMP_DYNAMIC", "FALSE")
