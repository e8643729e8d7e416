"""Hostile and odd inputs for diip-run, generated here: each case checks the one-line error,
the exit code (0 done, 1 some inputs failed, 2 usage or model error, 130 interrupted),
and that nothing partial, overwritten or lost is left behind."""

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import copy_export
from images import save, smooth_image
from PIL import Image

from diip_deploy.runtime.commands.cli import main as diip_run

FAST = ["--max-iters", "2", "--quiet", "--tile", "16"]


def run(args):
    return CliRunner().invoke(diip_run, [str(a) for a in args], catch_exceptions=False)


def error_lines(output):
    return [line for line in output.splitlines() if ": error:" in line]


def no_partial_files(folder: Path) -> bool:
    """No temporary file, no lock, and every PNG has its JSON and the other way round."""
    if not folder.exists():
        return True
    names = [p for p in folder.rglob("*") if p.is_file()]
    if any(p.name.startswith(".") for p in names):
        return False
    pngs = {
        p.with_suffix("") for p in names if p.suffix == ".png" and not p.stem.endswith(("_curves", "_before_after"))
    }
    jsons = {p.with_suffix("") for p in names if p.suffix == ".json"}
    return pngs == jsons


def _png_bytes(a, mode="RGB"):
    buf = io.BytesIO()
    Image.fromarray((a * 255).astype(np.uint8)).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _huge_header_png(w, h):
    """A valid PNG signature and IHDR claiming w x h, with a tiny IDAT: a decompression bomb's header."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ---- files that cannot be decoded: one error line, exit 1, the good image still restored ----

BAD_FILES = {
    "truncated.png": lambda: _png_bytes(smooth_image(32, 32))[:200],
    "truncated.jpg": lambda: (lambda b: b[: len(b) // 2])(_jpeg_bytes()),
    "garbage.png": lambda: b"\x89PNG\r\n\x1a\n" + os.urandom(300),
    "empty.png": lambda: b"",
    "text.jpg": lambda: b"this is not a photo\n" * 20,
    "corrupt_middle.png": lambda: (lambda b: b[:60] + bytes(40) + b[100:])(_png_bytes(smooth_image(32, 32))),
    "bomb.png": lambda: _huge_header_png(40000, 40000),
    "wide_bomb.png": lambda: _huge_header_png(2**31 - 1, 1),
    "tiny.png": lambda: _png_bytes(smooth_image(1, 1)),
    "thin.png": lambda: _png_bytes(smooth_image(4, 100)),
    "nan.tif": lambda: _tiff_float(np.full((16, 16), np.nan, np.float32)),
    "zero_header.png": lambda: _huge_header_png(0, 0),
}


def _jpeg_bytes():
    buf = io.BytesIO()
    Image.fromarray((smooth_image(32, 32) * 255).astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _tiff_float(a):
    buf = io.BytesIO()
    Image.fromarray(a, mode="F").save(buf, format="TIFF")
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_undecodable_file_is_one_line_and_the_batch_goes_on(tiny_export, tmp_path, name):
    bad = tmp_path / name
    bad.write_bytes(BAD_FILES[name]())
    good = save(tmp_path / "good.png", smooth_image(16, 16))
    out = tmp_path / "o"
    r = run([bad, good, "--model", tiny_export, "--out", out, *FAST])
    assert r.exit_code == 1, r.output
    errs = error_lines(r.output)
    assert len(errs) == 1 and name in errs[0] and "Traceback" not in r.output
    assert sorted(p.name for p in out.iterdir()) == ["good.json", "good.png"] and no_partial_files(out)


# ---- odd but valid images: decoded correctly, and the report says what was converted ----


def _gray16(tmp):
    a = (np.linspace(0, 1, 32 * 32).reshape(32, 32) * 65535).astype(np.uint16)
    p = tmp / "gray16.png"
    Image.fromarray(a).save(p)
    return p, 0.5, "16-bit"


def _float_tiff(tmp):
    p = tmp / "float.tif"
    p.write_bytes(_tiff_float(np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)))
    return p, 0.5, "float"


def _float_tiff_wide(tmp):
    p = tmp / "float_wide.tif"
    p.write_bytes(_tiff_float(np.linspace(0, 4000, 32 * 32, dtype=np.float32).reshape(32, 32)))
    return p, 0.5, "scaled"


def _bilevel(tmp):
    p = tmp / "bilevel.png"
    Image.fromarray((smooth_image(32, 32)[..., 0] > 0.5).astype(np.uint8) * 255).convert("1").save(p)
    return p, None, None


def _cmyk(tmp):
    p = tmp / "cmyk.jpg"
    Image.fromarray((smooth_image(32, 32) * 255).astype(np.uint8)).convert("CMYK").save(p)
    return p, None, None


def _la(tmp):
    p = tmp / "la.png"
    Image.fromarray((smooth_image(32, 32) * 255).astype(np.uint8)).convert("LA").save(p)
    return p, None, "white"


def _gif(tmp):
    p = tmp / "anim.gif"
    frames = [Image.fromarray((smooth_image(32, 32, s) * 255).astype(np.uint8)).convert("P") for s in range(3)]
    frames[0].save(p, save_all=True, append_images=frames[1:])
    return p, None, None


def _bmp(tmp):
    return save(tmp / "x.bmp", smooth_image(32, 32)), None, None


def _webp(tmp):
    return save(tmp / "x.webp", smooth_image(32, 32)), None, None


@pytest.mark.parametrize(
    "make",
    [_gray16, _float_tiff, _float_tiff_wide, _bilevel, _cmyk, _la, _gif, _bmp, _webp],
    ids=lambda f: f.__name__.strip("_"),
)
def test_odd_modes_and_depths_decode_correctly(tiny_export, tmp_path, make):
    src, mean, note = make(tmp_path)
    out = tmp_path / "o"
    r = run([src, "--model", tiny_export, "--out", out, *FAST])
    assert r.exit_code == 0, r.output
    stem = src.stem
    rep = json.loads((out / f"{stem}.json").read_text())
    img = np.asarray(Image.open(out / f"{stem}.png"), dtype=np.float64) / 255
    assert img.shape == (32, 32, 3)
    if mean is not None:  # not all white, not all black: the ramp's mean survives decoding
        from diip_deploy.runtime.images.codec import load_image

        assert abs(load_image(src).mean() - mean) < 0.02
    if note:
        assert note in json.dumps(rep["decoding"])


def test_exif_orientation_is_applied(tiny_export, tmp_path):
    im = Image.fromarray((smooth_image(16, 40) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    r = run([tmp_path / "phone.jpg", "--model", tiny_export, "--out", tmp_path / "o", *FAST])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "o" / "phone.png").size == (16, 40)  # width x height after rotation
    assert json.loads((tmp_path / "o" / "phone.json").read_text())["decoding"]["exif_orientation_applied"] == 6


def test_max_pixels_refuses_from_the_header(tiny_export, tmp_path):
    big = save(tmp_path / "big.png", smooth_image(100, 100))
    r = run([big, "--model", tiny_export, "--out", tmp_path / "o", "--max-pixels", 5000, *FAST])
    assert r.exit_code == 1 and "over --max-pixels 5000" in error_lines(r.output)[0]


# ---- outputs: never overwrite an input, never collide, never half-written ----


def test_same_stem_inputs_both_survive(tiny_export, tmp_path):
    a_png = save(tmp_path / "a.png", smooth_image(16, 16, 1))
    a_jpg = save(tmp_path / "a.jpg", smooth_image(16, 16, 2))
    out = tmp_path / "o"
    r = run([a_png, a_jpg, "--model", tiny_export, "--out", out, *FAST])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.json", "a.jpg.png", "a.json", "a.png"]
    assert "warning" in r.output and "a.jpg.png" in r.output
    assert json.loads((out / "a.jpg.json").read_text())["input"].endswith("a.jpg")


def test_out_equal_to_input_folder_refused_before_compute(tiny_export, tmp_path):
    src = save(tmp_path / "photo.png", smooth_image(16, 16))
    before = src.read_bytes()
    r = run([src, "--model", tiny_export, "--out", tmp_path, *FAST])
    assert r.exit_code == 2 and "is an input file" in error_lines(r.output)[0]
    assert src.read_bytes() == before and not (tmp_path / "photo.json").exists()


def test_folder_input_refuses_to_overwrite_itself(tiny_export, tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    src = save(d / "x.png", smooth_image(16, 16))
    before = src.read_bytes()
    r = run([d, "--model", tiny_export, "--out", d, *FAST])
    assert r.exit_code == 2 and src.read_bytes() == before


@pytest.mark.parametrize("kind", ["file", "under_file", "proc"])
def test_unusable_out_refused_before_compute(tiny_export, tmp_path, kind):
    src = save(tmp_path / "a.png", smooth_image(16, 16))
    f = tmp_path / "afile"
    f.write_text("x")
    out = {"file": f, "under_file": f / "sub", "proc": Path("/proc/diip-no-such-dir")}[kind]
    t0 = time.perf_counter()
    r = run([src, "--model", tiny_export, "--out", out, "--max-iters", "50", "--stop", "none", "--quiet"])
    assert r.exit_code == 2 and len(error_lines(r.output)) == 1 and "--out" in r.output
    assert time.perf_counter() - t0 < 20  # refused before the 50 iterations
    assert f.read_text() == "x"


def test_folder_inputs_mirror_their_layout(tiny_export, tmp_path):
    d = tmp_path / "album"
    (d / "2024" / "june").mkdir(parents=True)
    save(d / "top.png", smooth_image(16, 16))
    save(d / "2024" / "june" / "beach.jpg", smooth_image(16, 16, 3))
    (d / "notes.txt").write_text("not an image")
    out = tmp_path / "o"
    r = run([d, "--model", tiny_export, "--out", out, *FAST])
    assert r.exit_code == 0, r.output
    assert (out / "top.png").exists() and (out / "2024" / "june" / "beach.png").exists()
    assert no_partial_files(out)


def test_empty_folder_and_missing_input_are_one_line_each(tiny_export, tmp_path):
    (tmp_path / "empty").mkdir()
    good = save(tmp_path / "good.png", smooth_image(16, 16))
    r = run(
        [tmp_path / "empty", tmp_path / "missing.png", good, "--model", tiny_export, "--out", tmp_path / "o", *FAST]
    )
    assert r.exit_code == 1
    errs = error_lines(r.output)
    assert len(errs) == 2 and "holds no images" in errs[0] and "no such file or folder" in errs[1]
    assert (tmp_path / "o" / "good.png").exists()


def test_report_records_the_png_hash(tiny_export, tmp_path):
    from diip_deploy.manifest import sha256_file

    src = save(tmp_path / "a.png", smooth_image(16, 16))
    run([src, "--model", tiny_export, "--out", tmp_path / "o", *FAST])
    rep = json.loads((tmp_path / "o" / "a.json").read_text())
    assert rep["complete"] is True and rep["png_sha256"] == sha256_file(tmp_path / "o" / "a.png")


# ---- manifests: one line naming the file and the field, exit 2 ----

MANIFEST_BREAKS = {
    "no_channels": (lambda m: m["model"].pop("channels"), "model.channels"),
    "multiple_zero": (lambda m: m["model"].__setitem__("size_multiple", 0), "model.size_multiple"),
    "lr_text": (lambda m: m["defaults"].__setitem__("lr", "fast"), "defaults.lr"),
    "max_iters_zero": (lambda m: m["defaults"].__setitem__("max_iters", 0), "defaults.max_iters"),
    "bad_stop": (lambda m: m["defaults"].__setitem__("stop", "sometimes"), "defaults.stop"),
    "tile_not_multiple": (lambda m: m.__setitem__("tiling", {"tile_size": 15}), "tiling.tile_size"),
    "graph_without_hash": (lambda m: m["graphs"]["unet"].pop("sha256"), "graphs"),
    "clamp_text": (lambda m: m["chain"].__setitem__("clamp", "yes"), "chain.clamp"),
    "schema_2": (lambda m: m.__setitem__("schema", 2), "schema"),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_BREAKS))
def test_broken_manifest_names_file_and_field(tiny_export, tmp_path, case):
    m = copy_export(tiny_export, tmp_path / "m")
    man = json.loads((m / "manifest.json").read_text())
    breaker, field = MANIFEST_BREAKS[case]
    breaker(man)
    (m / "manifest.json").write_text(json.dumps(man))
    src = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([src, "--model", m, "--out", tmp_path / "o", *FAST])
    errs = error_lines(r.output)
    assert r.exit_code == 2 and len(errs) == 1, r.output
    assert "manifest.json" in errs[0] and field in errs[0]
    assert not (tmp_path / "o").exists()


def test_manifest_that_is_a_list(tiny_export, tmp_path):
    m = copy_export(tiny_export, tmp_path / "m")
    (m / "manifest.json").write_text("[1, 2]")
    r = run([save(tmp_path / "a.png", smooth_image(16, 16)), "--model", m, "--out", tmp_path / "o", *FAST])
    assert r.exit_code == 2 and "schema" in error_lines(r.output)[0]


# ---- options: ranges enforced by click, the option named, exit 2 ----

BAD_OPTIONS = [
    ("--eps", "-1"),
    ("--k-min", "-1"),
    ("--seed", "-1"),
    ("--threads", "-1"),
    ("--threads", "0"),
    ("--lr", "0"),
    ("--lr", "-0.1"),
    ("--lr", "inf"),
    ("--lr", "nan"),
    ("--batch", "0"),
    ("--max-iters", "0"),
    ("--tile", "-16"),
    ("--tile-overlap", "-2"),
    ("--slope-window", "0"),
    ("--max-pixels", "0"),
    ("--steps-per-report", "0"),
]


@pytest.mark.parametrize("opt,value", BAD_OPTIONS, ids=[f"{o}={v}" for o, v in BAD_OPTIONS])
def test_numeric_option_out_of_range(tiny_export, tmp_path, opt, value):
    src = save(tmp_path / "a.png", smooth_image(16, 16))
    r = run([src, "--model", tiny_export, "--out", tmp_path / "o", opt, value])
    errs = error_lines(r.output)
    assert r.exit_code == 2 and len(errs) == 1 and opt in errs[0], r.output
    assert not (tmp_path / "o").exists()


# ---- interrupted batches and resume ----


def _launch(args, env=None):
    """diip-run in a child process, as a terminal starts it: SIGINT at its default whatever
    the test runner inherited (a job a shell puts in the background ignores SIGINT, and
    so would its children), and faulthandler on, so that SIGABRT makes it print where it is."""
    return subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "diip_deploy.runtime.commands.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_exits_130_keeps_finished_and_resume_redoes_nothing(tiny_export, tmp_path):
    # p0 is one tile and finishes fast; p1 and p2 are 64 tiles each and take much longer
    srcs = [save(tmp_path / f"p{i}.png", smooth_image(*((16, 16) if i == 0 else (128, 128)), i)) for i in range(3)]
    out = tmp_path / "o"
    args = [
        *srcs,
        "--model",
        tiny_export,
        "--out",
        out,
        "--tile",
        "16",
        "--max-iters",
        "300",
        "--stop",
        "none",
        "--quiet",
        "--threads",
        "1",
    ]
    p = _launch(args)
    deadline = time.time() + 120
    while not (out / "p0.json").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert (out / "p0.json").exists(), p.communicate()[1]
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # say where the child is, not only that it did not stop
        p.send_signal(signal.SIGABRT)
        pytest.fail("no exit 60 s after SIGINT; the child's stacks:\n" + p.communicate(timeout=30)[1][-4000:])
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert no_partial_files(out)
    done = sorted(x.name for x in out.iterdir())
    assert "p0.png" in done and "p2.png" not in done
    mtime = (out / "p0.png").stat().st_mtime_ns
    # resume: the finished image is skipped, the rest restored (shorter now, to keep the test quick)
    r = run([*srcs, "--model", tiny_export, "--out", out, "--tile", "16", "--max-iters", "2", "--skip-existing"])
    assert r.exit_code == 0, r.output
    assert "p0.png is complete, skipped" in r.output
    assert (out / "p0.png").stat().st_mtime_ns == mtime
    assert all((out / f"p{i}.png").exists() for i in range(3)) and no_partial_files(out)


def test_skip_existing_redoes_a_result_whose_hash_does_not_match(tiny_export, tmp_path):
    src = save(tmp_path / "a.png", smooth_image(16, 16))
    out = tmp_path / "o"
    run([src, "--model", tiny_export, "--out", out, *FAST])
    (out / "a.png").write_bytes(_png_bytes(np.zeros((16, 16, 3))))  # another run's PNG beside this JSON
    r = run([src, "--model", tiny_export, "--out", out, *FAST[:-2], "--skip-existing", "--tile", "16"])
    assert r.exit_code == 0 and "skipped" not in r.output
    from diip_deploy.manifest import sha256_file

    assert json.loads((out / "a.json").read_text())["png_sha256"] == sha256_file(out / "a.png")


def test_save_plots_without_matplotlib_loses_no_work(tiny_export, tmp_path):
    """matplotlib made unimportable: refused up front with the install hint, nothing computed."""
    src = save(tmp_path / "a.png", smooth_image(16, 16))
    code = (
        "import sys\nclass B:\n    def find_spec(self, n, p=None, t=None):\n"
        "        if n.split('.')[0] == 'matplotlib': raise ImportError(n)\n"
        "sys.meta_path.insert(0, B())\nfrom diip_deploy.runtime.commands.cli import main\nmain()"
    )
    p = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(src),
            "--model",
            str(tiny_export),
            "--out",
            str(tmp_path / "o"),
            "--save-plots",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2 and "pip install" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_dead_writers_temporaries_go_at_the_next_write_a_live_ones_stay(tmp_path):
    """A writer killed mid-write leaves a hidden temporary beside its output; the next write
    of that pair deletes it, but never one whose writer still holds its lock."""
    import fcntl

    from diip_deploy.runtime.images.outputs import Job, write_result

    out = tmp_path / "o"
    out.mkdir()
    dead_png, dead_json, live = out / ".a.png.k1ll3d.tmp", out / ".a.json.k1ll3d.tmp", out / ".a.png.l1ve.tmp"
    dead_png.write_bytes(b"\x89PNG half")
    dead_json.write_text('{"complete": ')
    live.write_bytes(b"")
    other = out / ".b.png.k1ll3d.tmp"  # another output's: not this write's business
    other.write_bytes(b"")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a writer in another process holds it
    try:
        job = Job(source=tmp_path / "a.jpg", png=out / "a.png", json=out / "a.json")
        write_result(job, np.full((8, 8, 3), 0.5, np.float32), {"stop_iteration": 3})
    finally:
        os.close(fd)
    assert not dead_png.exists() and not dead_json.exists() and live.exists() and other.exists()
    assert json.loads(job.json.read_text())["complete"] and Image.open(job.png).size == (8, 8)
    assert sorted(p.name for p in out.iterdir()) == sorted([".a.png.l1ve.tmp", ".b.png.k1ll3d.tmp", "a.json", "a.png"])
