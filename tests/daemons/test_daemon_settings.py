"""Daemon settings as operators give them: config files, TLS files, key sizes, busy ports,
check-config, secret files' permissions, SIGHUP reloads."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from daemon_helpers import Daemons, Keypair, wait_for
from deployment import Deployment, client_tls, dev_certificates

from ppinfer.errors import PPInferError
from ppinfer.paillier import generate_keypair, save_keypair
from ppinfer.protocol.x25519_keyfile import save_x25519
from ppinfer.rpc.dev_certificates import CA_FILE, DevTls, make_dev_certificates
from ppinfer.rpc.tls import ChannelTls, ServerTls

# --- config files -----------------------------------------------------------------------


def _ppinfer(*arguments: str) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "ppinfer", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_config_file_check_and_override(tmp_path: Path, keypair_512: Keypair) -> None:
    public, private = keypair_512
    save_keypair(tmp_path / "keys", public, private)
    save_x25519(tmp_path / "keys", X25519PrivateKey.generate())
    make_dev_certificates(tmp_path / "tls")
    config = tmp_path / "b.toml"
    config.write_text(
        'keys = "keys"\nlisten = "127.0.0.1:0"\npool = 128\n'
        'tls_cert = "tls/key-server.crt"\ntls_key = "tls/key-server.key"\n'
        'client_ca = "tls/ca.crt"\nlog_format = "json"\n'
    )
    small = _ppinfer("serve-key", "--config", str(config), "--check-config")
    assert small.returncode == 1 and "--allow-small-keys" in small.stderr
    config.write_text(config.read_text() + "allow_small_keys = true\n")
    good = _ppinfer("serve-key", "--config", str(config), "--check-config")
    assert good.returncode == 0, good.stderr
    assert "512-bit Paillier key" in good.stdout

    config.write_text(config.read_text() + "pool_size = 3\n")
    unknown = _ppinfer("serve-key", "--config", str(config), "--check-config")
    assert unknown.returncode == 1 and "unknown key(s) pool_size" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    config.write_text('keys = "keys"\npool = "many"\nallow_small_keys = true\n')
    typed = _ppinfer("serve-key", "--config", str(config), "--check-config")
    assert typed.returncode == 1 and "pool must be int" in typed.stderr

    config.write_text('keys = "keys"\nallow_small_keys = true\n')  # no TLS files, no --insecure
    bare = _ppinfer("serve-key", "--config", str(config), "--check-config")
    assert bare.returncode == 1 and "--insecure" in bare.stderr
    insecure = _ppinfer("serve-key", "--config", str(config), "--check-config", "--insecure")
    assert insecure.returncode == 0 and "no TLS" in insecure.stderr  # the warning

    model = _ppinfer(
        "serve-model", "--model", str(tmp_path / "missing.ppi"), "--key-server", "x:1",
        "--insecure", "--check-config",
    )  # fmt: skip
    assert model.returncode == 1 and "missing.ppi" in model.stderr


def test_server_tls_files_are_checked(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(PPInferError, match="not a PEM certificate"):
        ServerTls.from_files(tmp_path / "cert.pem", tmp_path / "key.pem")
    with pytest.raises(PPInferError, match="cannot read"):
        ChannelTls.from_files(tmp_path / "absent.pem")
    with pytest.raises(PPInferError, match="needs its key"):
        ChannelTls.from_files(client_tls_path(), cert=tmp_path / "cert.pem")
    certs = tmp_path / "certs"
    make_dev_certificates(certs)
    assert (certs / "model-server.key").stat().st_mode & 0o777 == 0o600
    assert (certs / "ca.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(PPInferError, match="exist"):
        make_dev_certificates(certs)
    assert client_tls().ca is not None


def client_tls_path() -> Path:
    return dev_certificates() / CA_FILE


def _key_server_settings(folder: Path, **overrides: Any) -> dict[str, Any]:
    from ppinfer.daemons.options import KEY_SERVER_OPTIONS

    settings = {option.name: option.default for option in KEY_SERVER_OPTIONS}
    settings.update(keys=str(folder), insecure=True, listen="127.0.0.1:0", pool=4, **overrides)
    return settings


@pytest.mark.parametrize("kind", ["short", "full"])
def test_the_randomizers_setting_reaches_the_key_server_at_start_and_on_sighup(
    tmp_path: Path, keypair_1024: Keypair, kind: str
) -> None:
    """Finding 7: randomizers = "full" was parsed and then never used."""
    from ppinfer.daemons.key_daemon import key_server_from_settings
    from ppinfer.paillier.fixedbase import FixedBaseRandomizers

    public, private = keypair_1024
    save_keypair(tmp_path, public, private)
    save_x25519(tmp_path, X25519PrivateKey.generate())
    settings = _key_server_settings(tmp_path, randomizers=kind, allow_small_keys=True)
    running, keys = key_server_from_settings(settings)
    try:
        cores = [keys.current]
        new_public, new_private = generate_keypair(1024)
        save_keypair(tmp_path, new_public, new_private, overwrite=True)
        assert running.reload is not None
        running.reload()  # what SIGHUP does
        cores.append(keys.current)
        assert cores[1].key_id == new_public.key_id
        for core in cores:
            assert isinstance(core.pool.generator, FixedBaseRandomizers) == (kind == "short")
    finally:
        running.stop(0)


def test_small_keys_are_served_only_when_asked(tmp_path: Path, keypair_1024: Keypair) -> None:
    from ppinfer.daemons.key_daemon import build_key_server, check_key_server

    public, private = keypair_1024
    save_keypair(tmp_path, public, private)
    save_x25519(tmp_path, X25519PrivateKey.generate())
    with pytest.raises(PPInferError, match="at least 2048"):
        build_key_server(private, X25519PrivateKey.generate())
    with pytest.raises(PPInferError, match="allow-small-keys"):
        check_key_server(_key_server_settings(tmp_path))
    assert "1024-bit" in check_key_server(_key_server_settings(tmp_path, allow_small_keys=True))


def test_a_busy_port_is_refused_by_both_daemons(small_deployment: Deployment) -> None:
    """Issue 22, item 1: gRPC's default SO_REUSEPORT let a second daemon start on a busy
    port, and the kernel split the clients between the two."""
    from deployment import model_server_tls

    from ppinfer.daemons.key_daemon import build_key_server
    from ppinfer.daemons.model_daemon import build_model_server

    busy = small_deployment.key_address
    with pytest.raises(PPInferError, match=f"cannot listen on {busy}: address in use"):
        build_key_server(
            small_deployment.private,
            small_deployment.static,
            small_deployment.key_address,
            allow_small_keys=True,
        )
    serving, to_key_server = model_server_tls()
    with pytest.raises(PPInferError, match="address in use"):
        build_model_server(
            small_deployment.plans,
            small_deployment.key_address,
            small_deployment.address,
            tls=serving,
            key_server_tls=to_key_server,
            allow_small_keys=True,
        )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--listen", "localhost"], "listen must be HOST:PORT with a port number"),
        (["--max-sessions", "-1"], "max_sessions must be at least 1"),
        (["--workers", "0"], "workers must be at least 1"),
        (["--pool", "-5"], "pool must be at least 0"),
        (["--insecure"], "--insecure contradicts tls_cert, tls_key, client_ca"),
        (["--tls-key", "{tls}/model-server.key"], "does not belong to the certificate"),
    ],
)
def test_check_config_refuses_what_the_daemon_could_not_serve(
    tmp_path: Path, keypair_512: Keypair, flags: list[str], message: str
) -> None:
    """Issue 22, items 7 and 8: --check-config passed each of these; the daemon then took
    port 443, served no session, crashed on a traceback, or served with the wrong key."""
    public, private = keypair_512
    save_keypair(tmp_path / "keys", public, private)
    save_x25519(tmp_path / "keys", X25519PrivateKey.generate())
    tls = DevTls.create(tmp_path / "tls")
    base = [
        "serve-key", "--keys", str(tmp_path / "keys"), "--listen", "127.0.0.1:0",
        "--allow-small-keys", *tls.key_server_flags(), "--check-config",
    ]  # fmt: skip
    assert _ppinfer(*base).returncode == 0
    result = _ppinfer(*base, *[flag.format(tls=tls.folder) for flag in flags])
    assert result.returncode == 1, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("loosen", "message"),
    [
        ("keys/paillier.key.json", "Paillier secret key"),
        ("keys/x25519.key.json", "X25519 secret key"),
        ("tls/key-server.key", "TLS private key"),
        ("keys", "anyone may replace files there"),
    ],
)
def test_secret_files_others_may_read_are_refused(
    tmp_path: Path, keypair_512: Keypair, loosen: str, message: str
) -> None:
    """Issue 22, item 6: these were served without a word."""
    public, private = keypair_512
    save_keypair(tmp_path / "keys", public, private)
    save_x25519(tmp_path / "keys", X25519PrivateKey.generate())
    tls = DevTls.create(tmp_path / "tls")
    target = tmp_path / loosen
    target.chmod(0o777 if target.is_dir() else 0o644)
    command = [
        "serve-key", "--keys", str(tmp_path / "keys"), "--listen", "127.0.0.1:0",
        "--allow-small-keys", *tls.key_server_flags(), "--check-config",
    ]  # fmt: skip
    refused = _ppinfer(*command)
    assert refused.returncode == 1 and message in refused.stderr
    assert str(target) in refused.stderr and "Traceback" not in refused.stderr
    assert _ppinfer(*command, "--allow-loose-permissions").returncode == 0


def test_sighup_is_logged_by_a_and_its_workers_die_with_it(daemons: Daemons) -> None:
    """Issue 22, item 11: SIGHUP killed A without a log line, and a killed A left its
    worker processes (about 100 MB) behind."""
    from benchmarks.procfs import tree

    model = daemons.model.process
    model.send_signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP ignored" in (daemons.folder / "a.log").read_text(), "the log")
    assert model.poll() is None
    workers = tree(model.pid) - {model.pid}
    assert workers  # the forkserver and its linear-algebra workers
    model.kill()
    model.wait()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers", 15)


def test_a_failed_sighup_reload_keeps_the_key_and_is_counted(
    tmp_path: Path, keypair_1024: Keypair
) -> None:
    """Issue 22, item 5: a reload that cannot read the new key files (made by root, or
    left readable by others) used to leave only a log line; B keeps its key and counts it."""
    from ppinfer.daemons.key_daemon import key_server_from_settings

    public, private = keypair_1024
    save_keypair(tmp_path, public, private)
    save_x25519(tmp_path, X25519PrivateKey.generate())
    running, keys = key_server_from_settings(_key_server_settings(tmp_path, allow_small_keys=True))
    try:
        new_public, new_private = generate_keypair(1024)
        save_keypair(tmp_path, new_public, new_private, overwrite=True)
        (tmp_path / "paillier.key.json").chmod(0o644)
        assert running.reload is not None
        running.reload()
        assert keys.current.key_id == public.key_id
        assert keys.stats()["key_reload_failures"] == 1
    finally:
        running.stop(0)
