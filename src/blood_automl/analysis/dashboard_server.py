"""optuna-dashboard's web application and the server that runs it, made here alone.

``optuna_dashboard.run_server`` cannot hide the server's request log; blood-automl builds
the WSGI application with ``optuna_dashboard.wsgi`` and runs it with bottle, the web
framework optuna-dashboard is written in (not a documented part of it).
``tests/test_private_apis.py`` answers a request through the application, so an upgrade
that changes either fails one test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from optuna.storages import BaseStorage

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def dashboard_app(storage: BaseStorage, artifact_store: Any) -> WsgiApp:
    """optuna-dashboard's WSGI application on ``storage``, its images read from ``artifact_store``.

    ``optuna_dashboard.wsgi`` builds the bottle application ``run_server`` would serve;
    ``artifact_store`` needs Optuna's artifact-store methods (``open_reader``, ``write``,
    ``remove``).
    """
    import optuna_dashboard

    app: WsgiApp = optuna_dashboard.wsgi(storage, artifact_store=artifact_store)
    return app


def serve_app(app: WsgiApp, host: str, port: int, quiet: bool) -> None:
    """Serve ``app`` on ``host:port`` until Ctrl-C, as ``optuna_dashboard.run_server`` does.

    ``bottle.run`` with bottle's wsgiref server (IPv6 when the host has a colon) is what
    optuna-dashboard uses inside ``run_server``; called here it passes ``quiet`` through.
    Raises ``OSError`` when the address cannot be bound.
    """
    import bottle

    bottle.run(app, host=host, port=port, quiet=quiet)  # returns on Ctrl-C
