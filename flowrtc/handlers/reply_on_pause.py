"""``ReplyOnPause``: FastRTC's turn-taking handler, as a prebuilt graph.

::

    decode | vad | pause_gate | reply(fn, layout) | interrupt | encode

:meth:`ReplyOnPause.graph` returns that graph for a ``Stream``, ``flowrtc.testing``
or your own composition. For code that drives a handler by hand, FastRTC's
methods are here too (``receive``, ``emit``, ``start_up``, ``reset``,
``trigger_response``, ``shutdown``, ``copy``); they run the same graph in a
private :class:`~flowrtc.session.Session`.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any, Callable, Literal

import anyio
import anyio.from_thread

from flowrtc.errors import ConfigurationError
from flowrtc.events import AdditionalOutputs, CloseStream, PauseDetected
from flowrtc.graph import Graph
from flowrtc.handlers.options import AlgoOptions, SileroVadOptions
from flowrtc.media import AudioChunk
from flowrtc.operators.codec import decode, encode
from flowrtc.operators.core import Pipe
from flowrtc.operators.interrupt import interrupt
from flowrtc.operators.pause_gate import turn_taking
from flowrtc.operators.reply import reply
from flowrtc.session import Session, current_session

__all__ = ["ReplyOnPause"]

#: How long a sync ``emit()`` waits for output before returning ``None`` (FastRTC's ``wait_for_item``).
EMIT_TIMEOUT_S = 0.1
_PLACEHOLDER = "__webrtc_value__"


#: Audio already queued that a session behind its caller joins into one step (see
#: ``decode(catch_up_ms=)``): five VAD windows scored in one trip to the engine. A
#: session that keeps up gets every frame as it came, so this adds no latency.
CATCH_UP_MS = 160.0


class ReplyOnPause:
    """Call ``fn`` with the user's audio each time they pause; play what it yields.

    Args:
        fn: ``fn((rate, int16 array (1, n)), *extra)``: plain, async, generator or
            async generator. It yields audio (``(rate, array)`` in any FastRTC shape,
            any rate), ``AdditionalOutputs``, ``CloseStream``, or pairs of them.
        startup_fn: called once when the session starts (with the extra inputs
            only); what it yields plays first.
        algo_options: :class:`~flowrtc.handlers.options.AlgoOptions` (turn start/end).
        model_options: :class:`~flowrtc.handlers.options.SileroVadOptions`.
        can_interrupt: speech while a reply plays (or is still being made) cuts it
            at once; ``False``: the reply plays out and the next turn is answered after.
        expected_layout: ``"mono"`` or ``"stereo"`` input.
        output_sample_rate: rate in Hz of the audio sent (replies are resampled to it).
        output_frame_size: deprecated and ignored (frames are always 20 ms).
        input_sample_rate: rate in Hz of the audio handed to ``fn``.
        model: ``None`` (Silero v6, batched across sessions), a
            :class:`~flowrtc.models.silero.SileroVAD`, or any FastRTC
            ``PauseDetectionModel`` (scored on ``audio_chunk_duration`` chunks).
        needs_args: ``fn`` wants the client's extra inputs even though it has one
            parameter (with more than one it always does).
        early_pause_ms: start ``fn`` once a pause has lasted this long (shorter than
            the pause that ends a turn, 448 ms by default), run it up to its first
            yield and hold that until the turn ends; if the user goes on, close it
            unheard. A slow ``fn`` (speech recognition, a language model, a voice)
            then answers sooner by up to the difference, but is called, and closed,
            for pauses inside a turn too: keep once-per-turn side effects after its
            first yield. ``None`` (default): ``fn`` is called when the turn ends, as
            in FastRTC.
    """

    #: FastRTC's per-frame internals. A FastRTC subclass could override them; here turn-taking
    #: is the graph's ``vad | pause_gate`` and a Stream never calls them, so an override is refused.
    _FASTRTC_INTERNALS = ("determine_pause", "process_audio", "async_iterate", "receive", "emit")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = [name for name in ReplyOnPause._FASTRTC_INTERNALS if name in vars(cls)]
        if overridden:
            raise ConfigurationError(
                f"{cls.__name__} overrides {', '.join(overridden)}: in flowrtc ReplyOnPause is a graph "
                "(vad | pause_gate | reply | interrupt), and a Stream never calls these methods. Choose "
                "when a turn ends with algo_options/model_options/model=, or compose the operators with "
                "a stage of your own (docs/turn-taking.md); shape the reply in fn."
            )

    def __init__(
        self,
        fn: Callable[..., Any],
        startup_fn: Callable[..., Any] | None = None,
        algo_options: AlgoOptions | None = None,
        model_options: SileroVadOptions | None = None,
        can_interrupt: bool = True,
        expected_layout: Literal["mono", "stereo"] = "mono",
        output_sample_rate: int = 24000,
        output_frame_size: int | None = None,
        input_sample_rate: int = 48000,
        model: Any = None,
        needs_args: bool = False,
        early_pause_ms: float | None = None,
    ) -> None:
        if output_frame_size is not None:
            warnings.warn(
                "output_frame_size is deprecated and ignored: output frames are always 20 ms",
                DeprecationWarning,
                stacklevel=2,
            )
        if expected_layout not in ("mono", "stereo"):
            raise ConfigurationError(f"expected_layout must be 'mono' or 'stereo', got {expected_layout!r}")
        for name, rate in (("output_sample_rate", output_sample_rate), ("input_sample_rate", input_sample_rate)):
            if not isinstance(rate, int) or rate <= 0:
                raise ConfigurationError(f"{name} must be a positive integer in Hz, got {rate!r}")
        self.fn = fn
        self.startup_fn = startup_fn
        self.algo_options = algo_options or AlgoOptions()
        self.model_options = model_options or SileroVadOptions()
        self.can_interrupt = can_interrupt
        self.expected_layout = expected_layout
        self.output_sample_rate = output_sample_rate
        self.output_frame_size = output_sample_rate // 50
        self.input_sample_rate = input_sample_rate
        self.model = model
        self.needs_args = needs_args
        self.early_pause_ms = early_pause_ms
        if early_pause_ms is not None:
            turn_taking(self.algo_options, self.model_options, model=self.model, early_pause_ms=early_pause_ms)  # checks it
        self._phone_mode = False
        self._latest_args: list[Any] = [_PLACEHOLDER]
        self._driver: _Driver | None = None
        self._startup_done = False
        if model is not None and not hasattr(model, "infer") and callable(getattr(model, "warmup", None)):
            model.warmup()

    # -- the graph -------------------------------------------------------------------
    def graph(self, *, startup: bool = True) -> Graph:
        """The per-session graph: ``decode | vad | pause_gate | reply | interrupt | encode``.

        The VAD scores a mono mix at its own rate whatever comes in, so the turn's
        audio is converted to ``expected_layout`` and ``input_sample_rate`` once,
        when ``reply`` hands it to ``fn``, not frame by frame. A session that has
        fallen behind its caller catches up ``CATCH_UP_MS`` of audio at a time.
        """
        pipe = (
            decode(catch_up_ms=CATCH_UP_MS)
            | turn_taking(self.algo_options, self.model_options, model=self.model, early_pause_ms=self.early_pause_ms)
            | self._answer(startup=startup)
        )
        return Graph(audio=pipe, name=type(self).__name__, modality="audio")

    def _answer(self, *, startup: bool) -> Pipe:
        """``reply | interrupt | encode``: how each finished turn is answered (shared by subclasses)."""
        return (
            reply(
                self.fn,
                needs_args=True if self.needs_args else None,
                sample_rate=self.input_sample_rate,
                output_sample_rate=self.output_sample_rate,
                startup_fn=self.startup_fn if startup else None,
                layout=self.expected_layout,
            )
            | interrupt(can_interrupt=self.can_interrupt)
            | encode(sample_rate=self.output_sample_rate, frame_ms=20)
        )

    def copy(self) -> ReplyOnPause:
        """A new handler with the same settings (the model is shared)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._driver = None
        clone._latest_args = [_PLACEHOLDER]
        clone._startup_done = False
        return clone

    # -- FastRTC attributes ------------------------------------------------------------
    @property
    def phone_mode(self) -> bool:
        """Whether the session is a phone call (no client to ask for inputs)."""
        session = self._session()
        return session.phone_mode if session is not None else self._phone_mode

    @phone_mode.setter
    def phone_mode(self, value: bool) -> None:
        self._phone_mode = bool(value)

    @property
    def latest_args(self) -> list[Any]:
        """FastRTC's view of the extra inputs: ``["__webrtc_value__", *inputs]``."""
        session = self._session()
        if session is not None:
            return [_PLACEHOLDER, *session.latest_args]
        return self._latest_args

    @latest_args.setter
    def latest_args(self, value: list[Any]) -> None:
        self._latest_args = list(value)

    def set_args(self, args: list[Any]) -> None:
        """Set the extra inputs the next turn sees (FastRTC's ``set_args``)."""
        self._latest_args = [_PLACEHOLDER, *args]
        if self._driver is not None and self._driver.session is not None:
            self._driver.session.set_input(*args)

    def _session(self) -> Session | None:
        if self._driver is not None and self._driver.session is not None:
            return self._driver.session
        return current_session()

    # -- driving the handler by hand ------------------------------------------------
    def receive(self, frame: Any) -> None:
        """Feed one input frame, ``(rate, array)`` (blocking: a private event-loop thread runs the graph)."""
        self._sync_driver().call(self._driver_send, frame)

    def emit(self) -> Any:
        """The next output, FastRTC-shaped: ``(rate, array)``, ``AdditionalOutputs`` or ``CloseStream``.

        Sync ``emit`` waits at most ``EMIT_TIMEOUT_S`` (0.1 s) for output and
        returns ``None`` if there was none, like FastRTC's ``wait_for_item``
        idiom, so a loop calling it sleeps instead of spinning. Events that are
        not FastRTC outputs (logs, interrupts) are skipped.
        """
        return self._sync_driver().call(self._driver_next, EMIT_TIMEOUT_S)

    def start_up(self) -> None:
        """Start the private session; ``startup_fn``'s reply is the first output."""
        self._sync_driver()

    def trigger_response(self) -> None:
        """Answer now with the audio collected so far (possibly none), as if the user paused."""
        driver = self._driver
        if driver is not None and driver.portal is None:
            driver.trigger_soon()
        else:
            self._sync_driver().call(self._driver_send, PauseDetected())

    def reset(self) -> None:
        """Drop the collected audio and any running reply; the next frame starts afresh."""
        self.shutdown()
        self._startup_done = True

    def shutdown(self) -> None:
        """End the private session (if any) and its thread."""
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.close_sync()

    async def areceive(self, frame: Any) -> None:
        """Feed one input frame from async code (the graph runs on the caller's event loop)."""
        await (await self._async_driver()).send(frame)

    async def aemit(self) -> Any:
        """Await the next FastRTC-shaped output; ``None`` once the session has ended."""
        return await (await self._async_driver()).next_output(None)

    async def astart_up(self) -> None:
        """Start the private session on the caller's event loop."""
        await self._async_driver()

    async def ashutdown(self) -> None:
        """End a private session started from async code."""
        driver, self._driver = self._driver, None
        if driver is not None:
            await driver.aclose()

    def _sync_driver(self) -> _SyncCalls:
        if self._driver is None:
            self._driver = _Driver(self.graph(startup=not self._startup_done), self._latest_args[1:])
            self._driver.start_in_thread()
        if self._driver.portal is None:
            raise ConfigurationError("this handler is driven from async code: use areceive/aemit")
        return _SyncCalls(self._driver)

    async def _async_driver(self) -> _Driver:
        if self._driver is None:
            self._driver = _Driver(self.graph(startup=not self._startup_done), self._latest_args[1:])
            await self._driver.start()
        elif self._driver.portal is not None:
            raise ConfigurationError("this handler is driven from sync code: use receive/emit")
        return self._driver

    async def _driver_send(self, driver: _Driver, frame: Any) -> None:
        await driver.send(frame)

    async def _driver_next(self, driver: _Driver, timeout_s: float) -> Any:
        return await driver.next_output(timeout_s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self.fn, '__name__', self.fn)!r}, can_interrupt={self.can_interrupt})"


def _fastrtc_output(item: Any) -> Any:
    if isinstance(item, AudioChunk):
        return item.to_tuple()
    if isinstance(item, (AdditionalOutputs, CloseStream)):
        return item
    return None


class _Driver:
    """A private session running a handler's graph, for ``receive``/``emit`` callers."""

    def __init__(self, graph: Graph, args: list[Any]) -> None:
        self.graph = graph
        self.args = args
        self.session: Session | None = None
        self.portal: anyio.from_thread.BlockingPortal | None = None
        self._portal_cm: Any = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stop: asyncio.Event | None = None
        self._ended = False

    async def start(self) -> None:
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        await self._ready.wait()

    async def _run(self) -> None:
        assert self._stop is not None
        async with Session(self.graph, initial_args=self.args or None) as session:
            self.session = session
            self._ready.set()
            await self._stop.wait()

    def start_in_thread(self) -> None:
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self.portal.call(self.start)

    async def send(self, item: Any) -> None:
        assert self.session is not None
        await self.session.send(item)

    def trigger_soon(self) -> None:
        assert self.session is not None
        asyncio.get_running_loop().create_task(self.session.send(PauseDetected()))

    async def next_output(self, timeout_s: float | None) -> Any:
        assert self.session is not None
        with anyio.move_on_after(timeout_s):
            while not self._ended:
                try:
                    item = await self.session.receive()
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    self._ended = True
                    break
                out = _fastrtc_output(item)
                if out is not None:
                    return out
            if timeout_s is not None:
                await anyio.sleep(timeout_s)  # ended: still pace a polling caller
        return None

    async def aclose(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            await self._task

    def close_sync(self) -> None:
        if self.portal is not None:
            self.portal.call(self.aclose)
            self._portal_cm.__exit__(None, None, None)
            self.portal = None


class _SyncCalls:
    """Run a driver coroutine on its portal thread."""

    __slots__ = ("driver",)

    def __init__(self, driver: _Driver) -> None:
        self.driver = driver

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self.driver.portal is not None
        return self.driver.portal.call(fn, self.driver, *args)
