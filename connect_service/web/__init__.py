"""The hosted connect page (``/connect``): routes in ``views``, rendering in ``render``, forms in ``forms``."""
from __future__ import annotations

from . import views


def init_app(app) -> None:
    views.init_app(app)
