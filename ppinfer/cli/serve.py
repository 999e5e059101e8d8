"""``ppinfer serve-key`` and ``ppinfer serve-model``: settings from flags and a config
file, checked, then the daemon."""

from __future__ import annotations

import argparse
from typing import Any

from ppinfer.cli.extras import require_server_extra
from ppinfer.daemons.options import KEY_SERVER_OPTIONS, MODEL_SERVER_OPTIONS, add_options

__all__ = ["add_parser"]


def _serve(args: argparse.Namespace, daemon: str) -> int:
    """serve-key or serve-model: settings from flags and --config, checked, then run."""
    require_server_extra(f"ppinfer {args.command}")
    from ppinfer.daemons.key_daemon import check_key_server, run_key_server
    from ppinfer.daemons.logs import configure_logging
    from ppinfer.daemons.model_daemon import check_model_server, run_model_server
    from ppinfer.daemons.options import resolve

    options = {"key": KEY_SERVER_OPTIONS, "model": MODEL_SERVER_OPTIONS}[daemon]
    settings = resolve(args, options)
    configure_logging(settings["log_format"], settings["log_level"])
    check, run = {
        "key": (check_key_server, run_key_server),
        "model": (check_model_server, run_model_server),
    }[daemon]
    if args.check_config:
        print(f"ppinfer {args.command}: configuration is usable: {check(settings)}")
        return 0
    return run(settings)


def _serve_key(args: argparse.Namespace) -> int:
    return _serve(args, "key")


def _serve_model(args: argparse.Namespace) -> int:
    return _serve(args, "model")


def add_parser(commands: Any) -> None:
    """Register serve-key and serve-model."""
    serve_key = commands.add_parser(
        "serve-key", help="run key server B (flags or --config FILE.toml)"
    )
    add_options(serve_key, KEY_SERVER_OPTIONS)
    serve_key.set_defaults(run=_serve_key)

    serve_model = commands.add_parser(
        "serve-model", help="run model server A (flags or --config FILE.toml)"
    )
    add_options(serve_model, MODEL_SERVER_OPTIONS)
    serve_model.set_defaults(run=_serve_model)
