"""Transport adapters: WebRTC (aiortc), WebSocket, Twilio Media Streams and the Litestar app."""

#: Reply audio already queued in a session's output is converted to the wire's rate in
#: pieces of up to this many ms (``encode(catch_up_ms=)``), not one 20 ms frame at a time.
OUTPUT_CATCH_UP_MS = 200.0
