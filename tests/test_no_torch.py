"""The runtime, and diip-run, work in a process where torch is absent.

Two guards: a plain import must not load torch at all (whatever catches an ImportError
would hide it under the blocking guard), and with torch made unimportable, every
attempt to import it is recorded and fails the test.
"""

import subprocess
import sys

RUNTIME_MODULES = (
    "diip_deploy.settings, diip_deploy.manifest, diip_deploy.cli_common, "
    "diip_deploy.runtime, diip_deploy.runtime.commands.cli, diip_deploy.runtime.restorer, "
    "diip_deploy.runtime.commands.ray_runner, diip_deploy.runtime.optimise.joint, "
    "diip_deploy.runtime.backends.tensorrt, diip_deploy.runtime.images.outputs, diip_deploy.runtime.images.tiling, "
    "diip_deploy.runtime.backends.openvino, diip_deploy.runtime.backends.cpu_variants, "
    "diip_deploy.runtime.commands.progress"
)

# A meta-path finder that records every attempt to import torch or diffusers and refuses it.
BLOCK_TORCH = (
    "import sys, atexit\n"
    "attempts = []\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'diffusers'):\n"
    "            attempts.append(name)\n"
    "            raise ImportError(f'blocked: {name}')\n"
    "sys.meta_path.insert(0, Block())\n"
    "atexit.register(lambda: attempts and print('TORCH IMPORT ATTEMPTED:', attempts, file=sys.stderr))\n"
    "atexit.register(lambda: attempts and sys.stderr.flush() or None)\n"
)


def test_plain_import_loads_no_torch():
    code = (
        f"import sys; import {RUNTIME_MODULES}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_runtime_imports_with_torch_blocked_and_never_asks_for_it():
    out = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + f"import {RUNTIME_MODULES}\nprint('ok')"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert "TORCH IMPORT ATTEMPTED" not in out.stderr


def test_the_guard_itself_catches_an_import_attempt():
    """The guard would fail a module that tries torch and swallows the ImportError."""
    code = BLOCK_TORCH + "try:\n    import torch\nexcept ImportError:\n    pass\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "TORCH IMPORT ATTEMPTED: ['torch']" in out.stderr


def test_diip_run_without_torch(tiny_export, tmp_path):
    import numpy as np
    from PIL import Image

    img = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(img)
    code = BLOCK_TORCH + "from diip_deploy.runtime.commands.cli import main\nmain()"
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(img),
            "--model",
            str(tiny_export),
            "--out",
            str(tmp_path / "o"),
            "--max-iters",
            "3",
            "--quiet",
            "--tile",
            "16",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "TORCH IMPORT ATTEMPTED" not in out.stderr
    assert (tmp_path / "o" / "in.png").exists() and (tmp_path / "o" / "in.json").exists()
