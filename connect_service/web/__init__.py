"""The hosted connect page (``/connect``)."""
from __future__ import annotations


def init_app(app) -> None:
    import importlib.util

    if importlib.util.find_spec(f"{__name__}.views") is None:
        return
    from . import views

    views.init_app(app)
