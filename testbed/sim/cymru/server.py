"""Team Cymru IP-to-ASN whois simulator (``python -m testbed.sim.cymru``).

Speaks the bulk interface of shared/protocols/cymru-whois.md: ``begin`` (option flags may
stand on its line), option keywords in any case, LF or CRLF, a ``Bulk mode;`` banner, one
padded row per origin AS in input order, ``NA`` rows for unrouted and private space,
``Error: no ASN or IP match on line N.`` with N counted from ``begin``, 5-column ``AS<n>``
answers, and the connection closed after ``end``. Single queries (``-v 8.8.8.8``) get a header
and one answer. Answers stream as lines arrive.

Faults (``--fault``, on a ``--fault-rate`` share of sessions): ``drop`` closes the connection
halfway through the session's answers, ``stall`` stops answering halfway, ``garbage`` mixes
junk lines into the answers, ``garble`` puts a junk line in place of every third answer,
``refuse`` resets the connection before the banner, ``silent`` accepts and reads the session
but never sends a byte (a service that hangs: the client's read timeout and breaker end it),
``first-then-stall`` answers the first line of every session, then stalls (a service that
half-answers: each session ends in the client's read timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from testbed.sample.world import World
from testbed.sim.common import (
    CYMRU_FAULTS,
    HOST,
    FaultPlan,
    RequestLog,
    announce,
    parse_faults,
)
from testbed.sim.cymru.answers import GARBAGE_LINES, Options, answer, header

FAULTS = CYMRU_FAULTS


class CymruSimulator:
    """An asyncio TCP server answering from a `World`."""

    def __init__(
        self,
        world: World,
        *,
        latency_ms: float = 0.0,
        chunk_latency_ms: float = 0.0,
        faults: FaultPlan | None = None,
        log: RequestLog | None = None,
        bulk_header: bool = False,
        stall_seconds: float = 3600.0,
    ) -> None:
        self.world = world
        self.latency = latency_ms / 1000
        self.chunk_latency = chunk_latency_ms / 1000
        self.faults = faults or FaultPlan(None, 0.0, 0)
        self.log = log or RequestLog(None)
        self.bulk_header = bulk_header
        self.stall_seconds = stall_seconds
        self.sessions = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one TCP session."""
        self.sessions += 1
        session = self.sessions
        fault = self.faults.draw()
        queries: list[str] = []
        mode = "single"
        ended = False
        try:
            if fault == "refuse":
                _reset(writer)
                return
            if fault == "silent":
                mode = "silent"
                async for raw, _ in _lines(reader):  # until the client gives up
                    text = raw.decode("ascii", "replace").strip()
                    if text and text.lower() not in ("begin", "verbose", "end"):
                        queries.append(text)
                while await reader.read(65536):  # after "end" too: never a byte, never EOF
                    pass
                return
            mode, ended = await self._converse(reader, writer, fault, queries)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.log.record(session=session, mode=mode, queries=queries, fault=fault, ended=ended)
            if not writer.is_closing():
                writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _converse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        fault: str | None,
        queries: list[str],
    ) -> tuple[str, bool]:
        options = Options()
        line_number = 0
        bulk = False
        answered = 0
        first_answer = True
        loop = asyncio.get_running_loop()
        due = 0.0
        async for raw, arrived in _lines(reader):
            line_number += 1
            text = raw.decode("ascii", "replace").strip()
            if not bulk:
                bulk = await self._open(text.split(), options, writer, queries)
                if not bulk:
                    return "single", True
                continue
            if not text:
                continue
            lowered = text.lower()
            if lowered == "end":
                if fault == "first-then-stall":  # no more answers, until the client gives up
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(_drain(reader), self.stall_seconds)
                    return "bulk", False
                return "bulk", True
            if options.apply(lowered):
                continue
            queries.append(text)
            if fault == "first-then-stall" and answered:
                continue
            # Each answer is due `latency` after the later of its line's arrival and the
            # previous answer, on the loop clock, so sleep overheads do not add up.
            delay = self.latency + (self.chunk_latency if first_answer else 0.0)
            first_answer = False
            if delay:
                due = max(arrived, due) + delay
                await asyncio.sleep(max(0.0, due - loop.time()))
            answered += 1
            if not await self._answer(writer, text, line_number, answered, fault, options):
                return "bulk", False
        return ("bulk" if bulk else "single"), False

    async def _open(
        self,
        words: list[str],
        options: Options,
        writer: asyncio.StreamWriter,
        queries: list[str],
    ) -> bool:
        """A session's first line: True for ``begin`` (bulk mode), else answer it as a single
        query and return False."""
        for word in words[:-1]:
            options.apply(word)
        if words and words[-1].lower() == "begin":
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S +0000")
            await self._send(writer, [f"Bulk mode; whois.cymru.com [{stamp}]"])
            if self.bulk_header:
                await self._send(writer, [header(options)])
            return True
        if words:
            queries.append(words[-1])
            await self._send(writer, [header(options), *answer(self.world, words[-1], 1, options)])
        return False

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        text: str,
        line_number: int,
        answered: int,
        fault: str | None,
        options: Options,
    ) -> bool:
        """Answer bulk query ``text`` (fault applied); False when the fault ends the session."""
        if fault in ("drop", "stall") and answered > 3 and answered % 2 == 0:
            if fault == "drop":
                _reset(writer)
            else:
                await asyncio.sleep(self.stall_seconds)
            return False
        lines = answer(self.world, text, line_number, options)
        if fault == "garbage" and answered % 3 == 1:
            lines = [GARBAGE_LINES[answered % len(GARBAGE_LINES)], *lines]
        elif fault == "garble" and answered % 3 == 1:  # a garbled line in its place
            lines = [GARBAGE_LINES[answered % len(GARBAGE_LINES)]]
        await self._send(writer, lines)
        return True

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, lines: list[str]) -> None:
        writer.write("".join(line + "\n" for line in lines).encode("utf-8"))
        await writer.drain()


async def _lines(reader: asyncio.StreamReader) -> AsyncIterator[tuple[bytes, float]]:
    """Lines with their arrival time (loop clock); a final ``end`` without its newline counts
    too (ipwhois sends it that way)."""
    loop = asyncio.get_running_loop()
    buffer = b""
    while chunk := await reader.read(65536):
        arrived = loop.time()
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line, arrived
        if buffer.strip().lower() == b"end":
            yield buffer, arrived
            return
    if buffer:
        yield buffer, loop.time()


async def _drain(reader: asyncio.StreamReader) -> None:
    """Read (and drop) whatever comes, up to EOF."""
    while await reader.read(65536):
        pass


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP reset (what a dropped or null-routed session looks like)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def serve(simulator: CymruSimulator, port: int) -> None:
    """Listen on 127.0.0.1 until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await asyncio.start_server(simulator.handle, HOST, port, limit=1 << 20)
    announce(server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()
    simulator.log.close()


def run(
    port: int,
    seed: int = 1,
    latency_ms: float = 0.0,
    chunk_latency_ms: float = 0.0,
    fault: str | None = None,
    fault_rate: float = 1.0,
    log: Path | None = None,
    bulk_header: bool = False,
) -> None:
    """Serve the Team Cymru simulator on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    simulator = CymruSimulator(
        World(seed),
        latency_ms=latency_ms,
        chunk_latency_ms=chunk_latency_ms,
        faults=FaultPlan(parse_faults(fault, FAULTS), fault_rate, seed),
        log=RequestLog(log),
        bulk_header=bulk_header,
    )
    asyncio.run(serve(simulator, port))
