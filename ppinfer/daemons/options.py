"""The daemons' settings: one table per daemon gives each CLI flag and its TOML config key.

``ppinfer serve-key --config b.toml`` reads a TOML file whose keys are the flags' names
with underscores (``--pool`` is ``pool``, ``--tls-cert`` is ``tls_cert``); a flag given on
the command line overrides the file, and the file overrides the defaults. Unknown keys and
wrong types are refused with the key's name. Relative paths in a file are relative to the
file's folder, so a config can sit beside its keys and certificates.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppinfer.errors import ConfigError

__all__ = [
    "KEY_SERVER_OPTIONS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "MODEL_SERVER_OPTIONS",
    "RANDOMIZERS",
    "Option",
    "add_options",
    "resolve",
]


@dataclass(frozen=True)
class Option:
    name: str
    kind: type
    default: Any
    help: str
    metavar: str | None = None
    path: bool = False  # a file or folder: relative to the config file's folder
    many: bool = False  # a list: the flag repeats, the key is a TOML array
    choices: tuple[str, ...] = ()  # the only values allowed, if any

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


#: B's kinds of encryption randomness (docs/PROTOCOL.md section 2).
RANDOMIZERS = ("short", "full")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _common(listen: str, metrics: str) -> list[Option]:
    return [
        Option("listen", str, listen, "address to listen on", "HOST:PORT"),
        Option("workers", int, 64, "gRPC worker threads (also the most calls at once)", "N"),
        Option("tls_cert", str, None, "this server's TLS certificate (PEM)", "FILE", path=True),
        Option("tls_key", str, None, "its private key (PEM, mode 0600)", "FILE", path=True),
        Option("insecure", bool, False, "listen and connect without TLS (development only; warns)"),
        Option("max_sessions", int, 48, "most sessions at once; more get RESOURCE_EXHAUSTED", "N"),
        Option(
            "drain_seconds",
            float,
            30.0,
            "on SIGTERM, how long calls in flight may take to finish",
            "SECONDS",
        ),
        Option(
            "metrics_listen",
            str,
            metrics,
            "Prometheus metrics endpoint, HOST:PORT ('' for none)",
            "HOST:PORT",
        ),
        Option(
            "log_format",
            str,
            "text",
            "log lines as text or json",
            "FORMAT",
            choices=LOG_FORMATS,
        ),
        Option(
            "log_level",
            str,
            "info",
            "the least severe lines logged",
            "LEVEL",
            choices=LOG_LEVELS,
        ),
        Option(
            "allow_small_keys",
            bool,
            False,
            "serve Paillier keys below 2048 bits (tests and load runs only)",
        ),
        Option(
            "allow_loose_permissions",
            bool,
            False,
            "serve secret key files that others may read (refused by default)",
        ),
    ]


KEY_SERVER_OPTIONS: list[Option] = [
    Option("keys", str, None, "folder from keygen (Paillier and X25519 keys)", "DIR", path=True),
    Option("pool", int, 4096, "precomputed encryption randomizers to keep", "N"),
    Option(
        "max_entries",
        int,
        2048,
        "request entries to hold for the model servers' stores (about 31 KB each for a "
        "784-128-128-10 MLP); more are refused",
        "N",
    ),
    Option(
        "randomizers",
        str,
        "short",
        "encryption randomness: 'short' (secret fixed base, 512-bit exponents, DJN; about "
        "20x cheaper) or 'full' (textbook r^n)",
        "KIND",
        choices=RANDOMIZERS,
    ),
    *_common("127.0.0.1:50052", ""),
    Option(
        "client_ca", str, None, "CA that signed the model server's certificate", "FILE", path=True
    ),
    Option(
        "client_name",
        str,
        "ppinfer-model-server",
        "common name the model server's certificate must bear",
        "NAME",
    ),
]

MODEL_SERVER_OPTIONS: list[Option] = [
    Option("model", str, None, "compiled plan (repeat to serve several)", "PLAN", True, True),
    Option("key_server", str, None, "key server B", "HOST:PORT"),
    Option(
        "key_server_wait", float, 30.0, "how long to wait for the key server at start", "SECONDS"
    ),
    *_common("127.0.0.1:50051", ""),
    Option("key_server_ca", str, None, "CA that signed the key server's certificate", "FILE", True),
    Option(
        "key_server_name",
        str,
        "ppinfer-key-server",
        "name the key server's certificate must bear",
        "NAME",
    ),
    Option(
        "store_size",
        int,
        64,
        "request entries per model made ahead of any request (0: each request makes its "
        "own); about 196 KB each at A for a 784-128-128-10 MLP",
        "N",
    ),
    Option(
        "store_low_water",
        int,
        -1,
        "refill the store when it falls to this many entries (-1: three quarters full)",
        "N",
    ),
    Option(
        "fill_workers",
        int,
        0,
        "worker processes that make entries and run misses (0: one per core); they run "
        "at niceness 10, below the requests' own work",
        "N",
    ),
    Option("max_sessions_per_peer", int, 32, "most sessions from one client address", "N"),
    Option(
        "max_inflight_bytes_per_peer",
        int,
        64 * 1024 * 1024,
        "most request bytes held for one client address",
        "BYTES",
    ),
    Option("health_interval", float, 1.0, "seconds between checks of the key server", "SECONDS"),
    Option(
        "open_timeout",
        float,
        10.0,
        "a session stream that sends no open within this is ended",
        "SECONDS",
    ),
    Option(
        "idle_timeout",
        float,
        600.0,
        "an open session that sends nothing and waits for nothing this long is closed",
        "SECONDS",
    ),
    Option("open_rate_per_peer", float, 4.0, "sessions a client address may open a second", "N"),
    Option("open_burst_per_peer", int, 32, "sessions a client address may open at once", "N"),
    Option(
        "allow_client_aided",
        bool,
        False,
        "accept client-aided sessions: BENCHMARKING ONLY, the mode trusts the client's "
        "Paillier key and a malformed one lets the client read the weights",
    ),
    Option(
        "admin_listen",
        str,
        "",
        "operators' gRPC listener serving GetStats, HOST:PORT ('' for none; TLS as the "
        "client port); keep it off the clients' network",
        "HOST:PORT",
    ),
]


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """A flag per option (no argparse defaults: :func:`resolve` merges them), and the
    --config and --check-config flags."""
    parser.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="check the settings and the files they name, then exit (0: fine)",
    )
    for option in options:
        default = "" if option.default is None else f" (default: {option.default})"
        if option.kind is bool:
            parser.add_argument(
                option.flag,
                dest=option.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=option.help,
            )
        else:
            parser.add_argument(
                option.flag,
                dest=option.name,
                type=option.kind,
                default=None,
                action="append" if option.many else "store",
                metavar=option.metavar,
                choices=option.choices or None,
                help=option.help + default,
            )


def _checked(option: Option, value: Any, origin: str) -> Any:
    def one(item: Any) -> Any:
        if option.kind is float and isinstance(item, int) and not isinstance(item, bool):
            return float(item)
        if not isinstance(item, option.kind) or (option.kind is int and isinstance(item, bool)):
            raise ConfigError(
                f"{origin}: {option.name} must be {option.kind.__name__}, "
                f"not {type(item).__name__} {item!r}"
            )
        if option.choices and item not in option.choices:
            raise ConfigError(
                f"{origin}: {option.name} must be one of {', '.join(option.choices)}, not {item!r}"
            )
        return item

    if option.many:
        if not isinstance(value, list):
            value = [value]
        return [one(item) for item in value]
    return one(value)


def _read_config(path: Path, options: Sequence[Option]) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from error
    known = {option.name: option for option in options}
    unknown = sorted(set(document) - set(known))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    settings = {}
    for name, value in document.items():
        option = known[name]
        value = _checked(option, value, str(path))
        if option.path:
            base = path.parent
            value = [str(base / item) for item in value] if option.many else str(base / value)
        settings[name] = value
    return settings


def resolve(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """Defaults, then the config file, then the flags given: one value per option."""
    settings = {option.name: option.default for option in options}
    if args.config:
        settings.update(_read_config(Path(args.config), options))
    for option in options:
        value = getattr(args, option.name, None)
        if value is not None:
            settings[option.name] = value
    return settings
