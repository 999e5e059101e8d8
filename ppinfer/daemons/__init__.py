"""The two daemons as an operator runs them: settings, secret files, logs, metrics,
signals, and a launcher for running them as child processes."""

__all__: list[str] = []
