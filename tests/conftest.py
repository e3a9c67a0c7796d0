"""Shared helpers: compose the real Hydra config, run the real entry script, build tiny data on the CPU."""
import os
import subprocess
import sys

import pytest
import torch

from fullbatch.config.paths import compose_config  # noqa: F401  (the tests' one way to compose a config)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "config")
ENTRY = os.path.join(ROOT, "train_with_gradient_descent.py")

# a run small enough for a test: 256 synthetic images, blocks of 64 (one uneven: 256 = 3*80 + 16 with 80)
TINY = ["data=synthetic", "data.size=256", "data.test_size=128", "data.batch_size=64", "model=resnet20",
        "model.width=4", "impl.device=cpu", "impl.threads=1", "hyp.warmup=1"]


def run_entry(overrides, cwd, check=True, extra_env=None):
    """Run train_with_gradient_descent.py in a subprocess inside `cwd`; return the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **(extra_env or {}))
    env.pop("HYDRA_FULL_ERROR", None)
    result = subprocess.run([sys.executable, ENTRY, *overrides], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"entry script failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _inside_tmp_path(tmp_path, monkeypatch):
    """Runs write `tables/` and `outputs/` under the working directory: keep it inside the test's folder."""
    monkeypatch.chdir(tmp_path)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run where CUDA is available and are skipped elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
