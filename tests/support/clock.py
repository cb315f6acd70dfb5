"""A host clock that runs ahead of the database's, for tests that prove times come from the database."""
from __future__ import annotations

import datetime
import sys


def skew_host_clock(monkeypatch, delta: datetime.timedelta) -> None:
    """Make ``models.utcnow`` run ``delta`` ahead wherever connect_service imported it.

    Patches every loaded ``connect_service`` module holding the real ``utcnow``, so
    the test does not depend on which module of the service asks for the time.
    """
    from connect_service import models

    real = models.utcnow
    skewed = lambda: real() + delta  # noqa: E731
    for name, module in list(sys.modules.items()):
        if (name == "connect_service" or name.startswith("connect_service.")) \
                and getattr(module, "utcnow", None) is real:
            monkeypatch.setattr(module, "utcnow", skewed)
