"""The HTTP/1.1 protocol `nico-api serve` gives uvicorn (its `http=` setting): uvicorn's
httptools protocol, with its head bounded as uvicorn bounds h11's, and h11 for a request whose
method httptools does not know.

httptools parses a request in C: a task GET costs about 200 us less than with h11, uvicorn's
pure-Python parser (docs/performance.md). h11 is what uvicorn bounds a head with
(`h11_max_incomplete_event_size`) and what reads any method token, as production's server does;
this protocol keeps both behaviours (docs/framework.md, "uvicorn")."""

from __future__ import annotations

from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# uvicorn's words for a request its parser refuses (both parsers'), answered 400 and closed.
INVALID_REQUEST = "Invalid HTTP request received."


class BoundedHeadProtocol(HttpToolsProtocol):
    """httptools' protocol, bounded and lenient as h11's.

    - A head (request line and headers) still incomplete after more than
      `h11_max_incomplete_event_size` bytes is refused with uvicorn's 400, and the connection
      closed. Bytes are counted a read at a time, so the check may come up to one read late.
    - A request httptools reads no further (a method it does not know, where any token is a
      method in HTTP and production's router answers 405; or an upgrade) is handed, with its
      connection, to uvicorn's h11 protocol, as uvicorn hands an upgrade to its WebSocket
      protocol. Sent before the requests ahead of it were answered (pipelined), it is refused
      once they are, with uvicorn's 400: h11 would answer it ahead of them, and where it begins
      in a read that holds another request is unknown."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.head_limit: int | None = config.h11_max_incomplete_event_size
        self.head_bytes = 0
        self.reading_head = True
        # The reads of the head being read, from its first byte; None where it began mid-read.
        self.head_reads: list[bytes] | None = None
        # No byte of a message has been read since the last one ended (or the connection began).
        self.between_messages = True
        self.read_starts_a_message = True
        self.refusing = False

    def data_received(self, data: bytes) -> None:
        if self.refusing:
            return  # the parser has failed; the answers before the refusal are being sent
        if self.timeout_keep_alive_task is not None:
            # A kept-alive connection in use again, as uvicorn's own `data_received` does.
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        self.read_starts_a_message = self.between_messages
        if self.between_messages:
            self.head_reads = []
        if self.reading_head:
            self.head_bytes += len(data)
            if self.head_reads is not None:
                self.head_reads.append(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserInvalidMethodError, httptools.HttpParserUpgrade):
            if self.head_reads is not None and self.answered():
                # Blank lines before a request line are skipped, as httptools skipped them.
                self.read_with_h11(b"".join(self.head_reads).lstrip(b"\r\n"))
            else:
                self.refuse_when_answered()
            return
        except httptools.HttpParserError:
            self.refuse()
            return
        if self.reading_head and self.head_limit and self.head_bytes > self.head_limit:
            self.refuse()

    def refuse(self) -> None:
        """uvicorn's answer to a request its parser refuses, the connection closed."""
        if self.transport.is_closing():
            return
        self.logger.warning(INVALID_REQUEST)
        self.send_400_response(INVALID_REQUEST)

    def refuse_when_answered(self) -> None:
        """The refusal, once the requests read before it are answered (`on_response_complete`)."""
        self.refusing = True
        if self.answered():
            self.refuse()

    def answered(self) -> bool:
        """Whether every request read so far is answered: uvicorn's `cycle` is the last one
        read, its `pipeline` those read but not yet begun."""
        return not self.pipeline and (self.cycle is None or self.cycle.response_complete)

    def read_with_h11(self, data: bytes) -> None:
        """This connection served from here on by uvicorn's h11 protocol, from `data`, which
        starts the request httptools could not read."""
        self.connections.discard(self)
        h11 = H11Protocol(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        h11.connection_made(self.transport)  # type: ignore[arg-type]
        self.transport.set_protocol(h11)
        h11.data_received(data)

    def on_message_begin(self) -> None:
        if not self.read_starts_a_message:
            self.head_reads = None  # it began after another message's last byte in this read
        self.between_messages = self.read_starts_a_message = False
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.reading_head = False
        if not self.parser.should_upgrade():
            super().on_headers_complete()
        # else h11 reads it (`data_received`)

    def on_message_complete(self) -> None:
        if not self.parser.should_upgrade():
            super().on_message_complete()
        self.reading_head = True
        self.head_bytes = 0
        self.between_messages = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.refusing and self.answered():
            self.refuse()
