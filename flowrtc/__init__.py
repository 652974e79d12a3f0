"""flowrtc: real-time audio and video for Python, as composable asyncio stream operators.

The public surface is listed in ``__all__`` and documented in ``docs/api.md``.
"""

from flowrtc.errors import (
    ConfigurationError,
    FlowRTCError,
    GraphError,
    LimitExceeded,
    MediaError,
    MissingExtraError,
    ProtocolError,
    SessionClosed,
    WebRTCError,
)
from flowrtc.events import (
    AdditionalOutputs,
    ClientMessage,
    CloseStream,
    Dtmf,
    Error,
    Event,
    Interrupt,
    Log,
    Message,
    PauseDetected,
    PlaybackMark,
    ReplyEnded,
    ReplyStarted,
    SpeechStarted,
    SpeechStopped,
    StopWord,
    Transcript,
    Utterance,
    Warning,
)
from flowrtc.graph import Graph, Ports
from flowrtc.media import AudioChunk, VideoFrame
from flowrtc.models.stt import get_stt_model
from flowrtc.models.tts import get_tts_model
from flowrtc.operators import (
    Flow,
    Pipe,
    decode,
    encode,
    handler,
    mulaw_decode,
    mulaw_encode,
    operator,
    pace,
    rechunk,
    resample,
)
from flowrtc.context import Context, get_current_context
from flowrtc.handlers.base import (
    AsyncAudioVideoStreamHandler,
    AsyncStreamHandler,
    AudioVideoStreamHandler,
    StreamHandler,
    StreamHandlerBase,
)
from flowrtc.handlers.options import AlgoOptions, SileroVadOptions
from flowrtc.handlers.reply_on_pause import ReplyOnPause
from flowrtc.handlers.reply_on_stopwords import ReplyOnStopWords
from flowrtc.handlers.video import VideoStreamHandler
from flowrtc.inputs import Checkbox, Dropdown, Number, Slider, Text, Textbox
from flowrtc.operators.video import fps, skip_frames
from flowrtc.session import Session, current_session, get_current_session
from flowrtc.stream import Stream
from flowrtc.utils import (
    aggregate_bytes_to_16bit,
    async_aggregate_bytes_to_16bit,
    audio_to_bytes,
    audio_to_file,
    wait_for_item,
)

__version__ = "0.1.0"

__all__ = [
    "AdditionalOutputs",
    "AlgoOptions",
    "AsyncAudioVideoStreamHandler",
    "AsyncStreamHandler",
    "AudioChunk",
    "AudioVideoStreamHandler",
    "Checkbox",
    "ClientMessage",
    "CloseStream",
    "ConfigurationError",
    "Context",
    "Dropdown",
    "Dtmf",
    "Error",
    "Event",
    "Flow",
    "FlowRTCError",
    "Graph",
    "GraphError",
    "Interrupt",
    "LimitExceeded",
    "Log",
    "MediaError",
    "Message",
    "MissingExtraError",
    "Number",
    "PauseDetected",
    "Pipe",
    "PlaybackMark",
    "Ports",
    "ProtocolError",
    "ReplyEnded",
    "ReplyOnPause",
    "ReplyOnStopWords",
    "ReplyStarted",
    "Session",
    "SessionClosed",
    "SileroVadOptions",
    "Slider",
    "SpeechStarted",
    "SpeechStopped",
    "StopWord",
    "Stream",
    "StreamHandler",
    "StreamHandlerBase",
    "Text",
    "Textbox",
    "Transcript",
    "Utterance",
    "VideoFrame",
    "VideoStreamHandler",
    "Warning",
    "WebRTCError",
    "aggregate_bytes_to_16bit",
    "async_aggregate_bytes_to_16bit",
    "audio_to_bytes",
    "audio_to_file",
    "current_session",
    "decode",
    "encode",
    "fps",
    "get_current_context",
    "get_current_session",
    "get_stt_model",
    "get_tts_model",
    "handler",
    "mulaw_decode",
    "mulaw_encode",
    "operator",
    "pace",
    "rechunk",
    "resample",
    "skip_frames",
    "wait_for_item",
]
