"""Mounting a Stream's ASGI app inside another ASGI framework.

Starlette (and so FastAPI) do not run a mounted app's lifespan, so the
stream's shutdown (closing its peer connections) is chained onto the host
app's own lifespan instead.

The mount claims only the stream's own paths, and yields even those to a route
the host app defines itself: FastRTC apps call ``stream.mount(app)`` and *then*
add ``@app.post("/input_hook")``, which a plain catch-all mount would shadow.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

from starlette.routing import Match, Mount
from starlette.types import Scope

__all__ = ["mount_on_starlette"]


def mount_on_starlette(app: Any, path: str, asgi_app: Any, *, on_shutdown: Callable[[], Awaitable[None]]) -> None:
    """Mount ``asgi_app`` at ``path`` on ``app`` and run ``on_shutdown`` when ``app`` shuts down."""
    router = app.router
    paths = [route.path for route in getattr(asgi_app, "routes", [])]
    router.routes.append(_StreamMount(path, asgi_app, paths, router.routes))
    inner = router.lifespan_context

    @asynccontextmanager
    async def lifespan(host: Any) -> AsyncIterator[Any]:
        try:
            async with inner(host) as state:
                yield state
        finally:
            await on_shutdown()

    router.lifespan_context = lifespan


class _StreamMount(Mount):
    """A Mount that matches only the mounted app's paths, and not those the host app routes itself."""

    def __init__(self, path: str, app: Any, paths: Iterable[str], siblings: list[Any]) -> None:
        super().__init__(path, app=app)
        self._exact = {p for p in paths if "{" not in p}
        self._prefixes = tuple(p.split("{", 1)[0] for p in paths if "{" in p)
        self._siblings = siblings

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.FULL:
            return match, child
        rest = scope["path"][len(self.path) :] or "/"
        if rest not in self._exact and not rest.startswith(self._prefixes):
            return Match.NONE, {}
        for route in self._siblings:
            if route is not self and route.matches(scope)[0] is Match.FULL:
                return Match.NONE, {}
        return match, child
