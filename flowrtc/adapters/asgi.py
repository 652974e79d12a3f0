"""Mounting a Stream's ASGI app inside another ASGI framework.

Starlette (and so FastAPI) do not run a mounted app's lifespan, so the
stream's shutdown (closing its peer connections) is chained onto the host
app's own lifespan instead.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

__all__ = ["mount_on_starlette"]


def mount_on_starlette(app: Any, path: str, asgi_app: Any, *, on_shutdown: Callable[[], Awaitable[None]]) -> None:
    """``app.mount(path, asgi_app)`` and run ``on_shutdown`` when ``app`` shuts down."""
    app.mount(path, asgi_app)
    router = app.router
    inner = router.lifespan_context

    @asynccontextmanager
    async def lifespan(host: Any) -> AsyncIterator[Any]:
        try:
            async with inner(host) as state:
                yield state
        finally:
            await on_shutdown()

    router.lifespan_context = lifespan
