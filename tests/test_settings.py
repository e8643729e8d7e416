"""One declaration per option: the CLI, the manifest's validation, resolution and the
report all read ``RestoreSettings``; an option added there reaches each of them."""

import json
from dataclasses import make_dataclass

import pytest
from click.testing import CliRunner
from conftest import copy_export
from images import save, smooth_image

from diip_deploy.manifest import ManifestError, load_manifest, read_data, set_defaults, write_manifest
from diip_deploy.settings import RestoreSettings, SettingsError, manifest_defaults, option, specs


def with_dummy():
    """RestoreSettings plus one option, declared the way every option is."""
    return make_dataclass(
        "WithDummy",
        [("dummy", int, option(3, "optimisation", "A test option.", min=1))],
        bases=(RestoreSettings,),
        frozen=True,
    )


def test_an_added_option_reaches_the_cli_the_manifest_and_the_report(tiny_export, tmp_path):
    from diip_deploy.runtime.commands.cli import build_command

    cls = with_dummy()
    command = build_command(cls)
    runner = CliRunner()
    help_text = runner.invoke(command, ["-h"]).output
    optimisation = help_text.split("Optimisation:")[1].split("Stopping:")[0]
    assert "--dummy" in optimisation and "A test option. Default: the export's, else 3." in " ".join(
        optimisation.split()
    )

    export = copy_export(tiny_export, tmp_path / "export")
    data = read_data(export)
    data["defaults"]["dummy"] = 0  # below its declared minimum
    write_manifest(export, data)
    with pytest.raises(ManifestError, match="dummy must be an integer >= 1"):
        load_manifest(export, settings_class=cls)
    with pytest.raises(ManifestError, match="unknown default 'dummy'"):
        load_manifest(export)  # the plain settings do not know it
    data["defaults"]["dummy"] = 5
    write_manifest(export, data)
    assert load_manifest(export, settings_class=cls).settings().dummy == 5

    png = save(tmp_path / "a.png", smooth_image(16, 16))
    for given, expected in ((["--dummy", "7"], 7), ([], 5)):
        out = tmp_path / f"out{expected}"
        r = runner.invoke(
            command, [str(png), "--model", str(export), "--out", str(out), "--max-iters", "2", "--quiet", *given]
        )
        assert r.exit_code == 0, r.output
        assert json.loads((out / "a.json").read_text())["settings"]["dummy"] == expected
    r = runner.invoke(command, [str(png), "--model", str(export), "--out", str(tmp_path / "bad"), "--dummy", "0"])
    assert r.exit_code == 2 and "--dummy" in r.output and not (tmp_path / "bad").exists()


def test_unknown_names_are_errors_that_name_the_nearest():
    with pytest.raises(SettingsError, match=r"unknown option 'max_iter' \(did you mean 'max_iters'\?\)"):
        RestoreSettings.resolve({}, max_iter=5)
    with pytest.raises(SettingsError, match="unknown option 'colour'"):
        RestoreSettings.resolve({"colour": 1})


def test_restorer_refuses_an_unknown_option(tiny_export):
    from diip_deploy.runtime.restorer import Restorer

    with pytest.raises(SettingsError, match="did you mean 'max_iters'"):
        Restorer(tiny_export, "ort-cpu", max_iter=5)


def test_values_are_checked_by_their_declaration():
    with pytest.raises(SettingsError, match="lr must be a number > 0"):
        RestoreSettings(lr=0)
    with pytest.raises(SettingsError, match="stop must be auto, slope, laplacian, none or paper-auto"):
        RestoreSettings(stop="sometimes")
    with pytest.raises(SettingsError, match="residual_guard must be a number in 0..1"):
        RestoreSettings(residual_guard=1.5)
    with pytest.raises(SettingsError, match="max_iters must be an integer"):
        RestoreSettings(max_iters=2.5)
    with pytest.raises(SettingsError, match="lr must be a number"):
        RestoreSettings(lr=float("nan"))
    assert RestoreSettings(max_iters=4.0).max_iters == 4 and RestoreSettings(tile=None).tile is None


def test_resolution_order_and_what_an_export_may_set():
    s = RestoreSettings.resolve({"lr": 0.05, "max_iters": 9}, lr=0.2, max_iters=None)
    assert (s.lr, s.max_iters, s.eps) == (0.2, 9, RestoreSettings().eps)  # user, then export, then the class
    written = manifest_defaults(gradient="exact")
    assert written["gradient"] == "exact" and "seed" not in written and "tile" not in written
    assert set(written) == {n for n, sp in specs(RestoreSettings).items() if sp.manifest}
    data = {"defaults": {"lr": 0.1}}
    with pytest.raises(SettingsError, match="unknown default 'tile'"):
        set_defaults(data, {"tile": 32})
    set_defaults(data, {"eps": 1e-4})
    assert data["defaults"] == {"lr": 0.1, "eps": 1e-4}


def test_ray_payload_round_trips_the_settings():
    s = RestoreSettings(lr=0.3, stop="slope", tile=32, stop_scope="tile")
    assert RestoreSettings(**s.as_dict()) == s
    assert RestoreSettings.resolve({}, **s.as_dict()) == s


def test_issue_26_settings_reach_the_cli_the_manifest_and_the_report(tiny_export, tmp_path):
    """--clamp-gradient, --lr-final and --init: in diip-run's help, settable as an export's
    defaults, overridden by the command line, and recorded in the report."""
    from diip_deploy.runtime.commands.cli import main as diip_run

    runner = CliRunner()
    help_text = " ".join(runner.invoke(diip_run, ["-h"]).output.split())
    assert "--clamp-gradient [mask|straight]" in help_text and "--lr-final" in help_text
    assert "--init [noise|noised]" in help_text and "--init-strength" in help_text
    export = copy_export(tiny_export, tmp_path / "export")
    data = read_data(export)
    set_defaults(data, {"clamp_gradient": "straight", "lr_final": 0.5, "init": "noised", "init_strength": 2.0})
    write_manifest(export, data)
    png = save(tmp_path / "a.png", smooth_image(16, 16))
    cases = (
        ([], ("straight", 0.5, "noised", 2.0)),
        (["--clamp-gradient", "mask", "--lr-final", "1", "--init", "noise"], ("mask", 1.0, "noise", 2.0)),
    )
    for given, expected in cases:
        out = tmp_path / f"out{len(given)}"
        r = runner.invoke(
            diip_run, [str(png), "--model", str(export), "--out", str(out), "--max-iters", "3", "--quiet", *given]
        )
        assert r.exit_code == 0, r.output
        settings = json.loads((out / "a.json").read_text())["settings"]
        assert tuple(settings[k] for k in ("clamp_gradient", "lr_final", "init", "init_strength")) == expected
