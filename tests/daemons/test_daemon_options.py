"""Daemon settings: flags, TOML keys and their merge; the shipped example configs."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ppinfer.daemons.options import (
    KEY_SERVER_OPTIONS,
    MODEL_SERVER_OPTIONS,
    Option,
    add_options,
    resolve,
)
from ppinfer.errors import ConfigError

SYSTEMD = Path(__file__).resolve().parents[2] / "servers" / "systemd"


def _parse(options: list[Option], *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_options(parser, options)
    return parser.parse_args(argv)


def test_every_option_is_a_flag_and_a_key() -> None:
    for options in (KEY_SERVER_OPTIONS, MODEL_SERVER_OPTIONS):
        names = [option.name for option in options]
        assert len(names) == len(set(names))
        settings = resolve(_parse(options), options)
        assert set(settings) == set(names)


def test_flags_override_the_file_which_overrides_defaults(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text('model = ["m.ppi"]\nworkers = 8\nkey_server_wait = 5\ninsecure = true\n')
    settings = resolve(
        _parse(MODEL_SERVER_OPTIONS, "--config", str(config), "--workers", "16",
               "--no-insecure"),
        MODEL_SERVER_OPTIONS,
    )  # fmt: skip
    assert settings["workers"] == 16  # flag
    assert settings["key_server_wait"] == 5.0  # file (an int where a float is due)
    assert settings["model"] == [str(tmp_path / "m.ppi")]  # relative to the file
    assert settings["insecure"] is False
    assert settings["max_sessions"] == 48  # default
    flagged = resolve(
        _parse(MODEL_SERVER_OPTIONS, "--config", str(config), "--model", "x.ppi"),
        MODEL_SERVER_OPTIONS,
    )
    assert flagged["model"] == ["x.ppi"]  # a repeated flag replaces the file's list


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers = true\n", "workers must be int"),
        ("nonsense = 1\n", "unknown key(s) nonsense"),
        ("workers = [\n", "not valid TOML"),
        ('randomizers = "fast"\n', "randomizers must be one of short, full, not 'fast'"),
        ('log_format = "xml"\n', "log_format must be one of text, json"),
    ],
)
def test_bad_files_are_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "b.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(_parse(KEY_SERVER_OPTIONS, "--config", str(config)), KEY_SERVER_OPTIONS)


def test_a_flag_outside_its_choices_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _parse(KEY_SERVER_OPTIONS, "--log-level", "loud")
    assert exited.value.code == 2
    assert "invalid choice: 'loud'" in capsys.readouterr().err


def test_shipped_configs_use_known_keys_only() -> None:
    for name, options in (
        ("key-server.toml", KEY_SERVER_OPTIONS),
        ("model-server.toml", MODEL_SERVER_OPTIONS),
    ):
        settings = resolve(_parse(options, "--config", str(SYSTEMD / name)), options)
        folder = f"/etc/ppinfer/{name.removesuffix('.toml')}/"  # each party its own
        assert settings["tls_cert"].startswith(folder) and settings["tls_key"].startswith(folder)
        assert settings["insecure"] is False
    for unit in ("ppinfer-key-server.service", "ppinfer-model-server.service"):
        text = (SYSTEMD / unit).read_text()
        assert "--check-config" in text and "KillSignal=SIGTERM" in text


@pytest.mark.parametrize("unit", ["ppinfer-key-server.service", "ppinfer-model-server.service"])
def test_the_systemd_units_verify_and_keep_the_parties_apart(tmp_path: Path, unit: str) -> None:
    """Issue 22, item 5: both daemons ran as one user on a shared layout, so A could read
    B's Paillier secret key and B A's plans. Each unit now has its own user, its own
    folders, and the other party's folders inaccessible; systemd-analyze accepts them."""
    text = (SYSTEMD / unit).read_text()
    own, other = ("key", "model") if "key" in unit else ("model", "key")
    assert f"User=ppinfer-{own}\n" in text
    inaccessible = next(line for line in text.splitlines() if line.startswith("Inaccessible"))
    assert f"/etc/ppinfer/{other}-server" in inaccessible
    assert ("/var/lib/ppinfer/models" if other == "model" else "/var/lib/ppinfer/keys") in (
        inaccessible
    )
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    # the units name /usr/local/bin/ppinfer; verify them against this install's script
    script = Path(sys.executable).with_name("ppinfer")
    (tmp_path / unit).write_text(text.replace("/usr/local/bin/ppinfer", str(script)))
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
