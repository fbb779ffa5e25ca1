"""``import corl`` makes MKL reproducible from run to run before torch loads it (bit-exact resume on the CPU)."""

import os
import subprocess
import sys

import pytest
import torch

MATMUL = "import corl, torch; torch.randn(16, 64) @ torch.randn(64, 64)"


def run(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "MKL_DYNAMIC", "OMP_DYNAMIC")}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True)
    return done.stdout + done.stderr


@pytest.mark.skipif("BLAS_INFO=mkl" not in torch.__config__.show(), reason="this torch build has no MKL")
def test_mkl_runs_with_conditional_reproducibility_and_a_fixed_thread_count():
    log = run(MATMUL, MKL_VERBOSE="1")
    assert "CNR:AUTO" in log and "Dyn:0" in log, log[-500:]


def test_a_value_the_user_exported_wins():
    out = run("import corl, os; print(os.environ['MKL_CBWR'], os.environ['MKL_DYNAMIC'])", MKL_CBWR="COMPATIBLE",
              MKL_DYNAMIC="TRUE")
    assert out.split() == ["COMPATIBLE", "TRUE"]
