"""The runtime, and diip-run, work in a process where importing torch fails."""

import subprocess
import sys
from pathlib import Path

BLOCK_TORCH = "import sys; sys.modules['torch'] = None; sys.modules['diffusers'] = None; "


def test_runtime_imports_without_torch():
    code = BLOCK_TORCH + ("import diip_deploy.runtime, diip_deploy.runtime.cli, diip_deploy.runtime.backends.tensorrt; "
                          "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_diip_run_without_torch(tiny_export, tmp_path):
    from PIL import Image
    import numpy as np

    img = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(img)
    code = BLOCK_TORCH + "from diip_deploy.runtime.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code, str(img), "--model", str(tiny_export), "--out", str(tmp_path / "o"),
                          "--max-iters", "3", "--quiet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "o" / "in.png").exists() and (tmp_path / "o" / "in.json").exists()
