"""The byte pipelines of backup, restore and verify: no database, only streams and callables.

Backup:  dump stdout → zstd → age (X25519) → sha256 → object-store writer.
Restore: object store → private spool file, hashed → (checksum checked) → age → zstd → the tool.

pyrage only offers `encrypt_io(reader, writer)`, which pulls its input. Compression therefore runs
in a producer thread that pushes the dump through a multi-threaded zstd `stream_writer` into an OS
pipe that age pulls from: zstd's `stream_writer` measured clearly faster here than its
`stream_reader` with worker threads, and the pipe bounds memory to a few buffers whatever the
size of the database.
Decryption is push-only too (`decrypt_io`), so restore mirrors it: a thread decrypts into a pipe and
the caller pulls decompressed bytes from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

import pyrage
import structlog
import zstandard as zstd
from pyrage import x25519

log = structlog.get_logger("sourcekeeper.backups.pipeline")

CHUNK = 1024 * 1024
# Measured here on a 412 MB pg_dump of order-like rows (2 cores, two zstd worker threads):
# level 1 ran at 1.2x the speed of `pg_dump -Z0 > file` and stored 101 MB (gzip's pg_dump -Fc:
# 121 MB); levels 2 and 3 were ~25% slower and, with worker threads, did not compress better.
ZSTD_LEVEL = 1
ZSTD_THREADS = 2
TICK_SECONDS = 1.0


class PipelineError(Exception):
    """A pipeline failure whose message is meant for the user (no secret, no stack)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Cancelled(PipelineError):
    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)


class ChecksumMismatch(PipelineError):
    pass


class ArtifactUnreadable(PipelineError):
    """The artifact could not be decrypted or decompressed, or is shorter than recorded."""


@dataclass
class Counters:
    """Progress shared between the pipeline's threads and the monitor (plain ints: GIL-atomic)."""

    plain_bytes: int = 0  # dump bytes read (backup) or fed to the restore tool (restore)
    stored_bytes: int = 0  # encrypted bytes written (backup) or fetched (restore)


@dataclass(frozen=True)
class Written:
    original_size: int
    size: int
    checksum_sha256: str
    seconds: float


class Monitor:
    """Calls `tick()` every `interval` seconds from its own thread while a job streams.

    `tick` writes the heartbeat and answers whether the job must stop (cancelled, or taken away
    by the reaper). Running beside the stream, it keeps heartbeats going and notices a cancel
    even while the dump tool is blocked and no byte flows. On stop it sets `stop` and runs the
    registered hooks (kill the dump process).
    """

    def __init__(self, tick: Callable[[], bool], *, interval: float = TICK_SECONDS) -> None:
        self._tick = tick
        self._interval = interval
        self.stop = threading.Event()
        self._done = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="job-monitor", daemon=True)

    def on_stop(self, hook: Callable[[], None]) -> None:
        """Run `hook` when the job must stop (at once if it already must)."""
        with self._lock:
            self._hooks.append(hook)
            stopped = self.stop.is_set()
        if stopped:
            hook()

    def request_stop(self) -> None:
        with self._lock:
            if self.stop.is_set():
                return
            self.stop.set()
            hooks = list(self._hooks)
        for hook in hooks:
            try:
                hook()
            except Exception:
                log.exception("stop_hook_failed")

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            try:
                wanted = self._tick()
            except Exception:  # a missed heartbeat is not worth killing a healthy job for
                log.exception("job_tick_failed")
                continue
            if wanted:
                self.request_stop()
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()


class _HashingSink:
    """What age writes into: hashes and counts the stored bytes on their way to the store."""

    def __init__(self, sink: BinaryIO, counters: Counters) -> None:
        self._sink = sink
        self._counters = counters
        self.sha256 = hashlib.sha256()
        self.error: BaseException | None = None  # kept: pyrage re-raises it as a bare string

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        try:
            self._sink.write(data)
        except BaseException as exc:
            self.error = exc
            raise
        self._counters.stored_bytes += len(data)
        return len(data)

    def flush(self) -> None:
        return None


def encrypt_stream(
    source: BinaryIO,
    sink: BinaryIO,
    recipients: list[str],
    *,
    counters: Counters,
    stop: threading.Event,
    abort_source: Callable[[], None],
    level: int = ZSTD_LEVEL,
    threads: int = ZSTD_THREADS,
) -> Written:
    """Compress, encrypt and hash `source` into `sink`; raise Cancelled once `stop` is set.

    `abort_source` (kill the dump) is called when the pipeline fails half-way, so the producer
    thread never waits forever on a dump nobody reads any more.
    """
    if not recipients:
        raise PipelineError("no encryption recipient: refusing to write an unencrypted backup")
    keys = [x25519.Recipient.from_str(r) for r in recipients]
    started = time.monotonic()
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with os.fdopen(write_fd, "wb", buffering=CHUNK) as pipe:
                compressor = zstd.ZstdCompressor(level=level, threads=threads, write_checksum=True)
                with compressor.stream_writer(pipe, write_size=CHUNK, closefd=False) as packer:
                    while not stop.is_set():
                        chunk = source.read(CHUNK)
                        if not chunk:
                            break
                        counters.plain_bytes += len(chunk)
                        packer.write(chunk)
                # Leaving the block ends the one frame (an extra flush would start a second).
        except BaseException as exc:  # handed to the consuming thread
            failure.append(exc)

    producer = threading.Thread(target=produce, name="backup-compress", daemon=True)
    producer.start()
    hashing = _HashingSink(sink, counters)
    try:
        with os.fdopen(read_fd, "rb", buffering=CHUNK) as pipe:
            pyrage.encrypt_io(pipe, hashing, keys)
    except BaseException as exc:
        # The read end is closed by now: a producer still writing gets EPIPE; one waiting on a
        # silent dump is released by killing the dump.
        abort_source()
        producer.join()
        if hashing.error is not None:  # the store's own error (e.g. 503 storage unavailable)
            raise hashing.error from None
        if failure and not isinstance(failure[0], BrokenPipeError):
            raise failure[0] from None
        if isinstance(exc, pyrage.EncryptError):
            raise PipelineError(f"encrypting the backup failed: {exc}") from exc
        raise
    producer.join()
    if failure:
        raise failure[0]
    if stop.is_set():
        raise Cancelled()
    return Written(
        original_size=counters.plain_bytes,
        size=counters.stored_bytes,
        checksum_sha256=hashing.sha256.hexdigest(),
        seconds=time.monotonic() - started,
    )


def fetch_verified(
    source: BinaryIO,
    dest: Path,
    expected_sha256: str,
    *,
    counters: Counters,
    stop: threading.Event,
) -> int:
    """Copy the stored artifact to a private spool file while hashing it; raise ChecksumMismatch.

    Spooling (rather than hashing one read and restoring from a second) means the bytes that are
    restored are exactly the bytes that were checked, and S3 is read once. The spool holds the
    still-encrypted artifact, so nothing readable reaches the disk.
    """
    digest = hashlib.sha256()
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with source, os.fdopen(fd, "wb") as out:
        while chunk := source.read(CHUNK):
            if stop.is_set():
                raise Cancelled()
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
            counters.stored_bytes = size
    actual = digest.hexdigest()
    if actual != expected_sha256:
        raise ChecksumMismatch(
            "checksum mismatch: the stored artifact is damaged or was altered "
            f"(sha256 {actual[:16]}…, recorded {expected_sha256[:16]}…); it was not decrypted"
        )
    return size


class _PlainRaw(io.RawIOBase):
    """Decompressed bytes from the decrypting thread; checks cancel and the end of the stream."""

    def __init__(
        self,
        unpacker: Any,
        decrypter: threading.Thread,
        failure: list[BaseException],
        *,
        expected_size: int | None,
        counters: Counters,
        stop: threading.Event,
    ) -> None:
        self._unpacker = unpacker
        self._decrypter = decrypter
        self._failure = failure
        self._expected = expected_size
        self._counters = counters
        self._stop = stop
        self._seen = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._stop.is_set():
            raise Cancelled()
        if self._ended:
            return 0
        try:
            n = int(self._unpacker.readinto(buffer))
        except zstd.ZstdError as exc:
            raise ArtifactUnreadable(f"the artifact does not decompress: {exc}") from exc
        if n == 0:
            self._end()
            return 0
        self._seen += n
        self._counters.plain_bytes = self._seen
        return n

    def _end(self) -> None:
        self._ended = True
        self._decrypter.join()
        if self._failure:
            exc = self._failure[0]
            reason = str(exc) or type(exc).__name__
            if "No matching keys" in reason:
                reason = "none of the service's age identities matches the artifact's recipient"
            raise ArtifactUnreadable(f"the artifact does not decrypt: {reason}")
        if self._expected is not None and self._seen != self._expected:
            raise ArtifactUnreadable(
                f"the artifact decompresses to {self._seen} bytes, but the dump had "
                f"{self._expected}: it is truncated or damaged"
            )


@contextlib.contextmanager
def open_plain(
    encrypted: Path,
    identities: list[x25519.Identity],
    *,
    expected_size: int | None,
    counters: Counters,
    stop: threading.Event,
) -> Iterator[io.BufferedReader]:
    """A reader of the plain dump inside an encrypted, compressed artifact on local disk.

    Reading past the end raises ArtifactUnreadable if decryption failed or the size differs from
    the recorded one, so a damaged artifact can never pass for a short, valid dump. `peek(1)` on
    the reader decrypts the header first: a wrong key fails before anything is restored.
    """
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def decrypt() -> None:
        try:
            with open(encrypted, "rb") as src, os.fdopen(write_fd, "wb", buffering=CHUNK) as pipe:
                pyrage.decrypt_io(src, pipe, identities)
        except BaseException as exc:
            failure.append(exc)

    decrypter = threading.Thread(target=decrypt, name="restore-decrypt", daemon=True)
    decrypter.start()
    pipe = os.fdopen(read_fd, "rb", buffering=CHUNK)
    unpacker: Any = zstd.ZstdDecompressor().stream_reader(pipe, read_size=CHUNK, closefd=False)
    raw = _PlainRaw(
        unpacker, decrypter, failure, expected_size=expected_size, counters=counters, stop=stop
    )
    try:
        yield io.BufferedReader(raw, buffer_size=CHUNK)
    finally:
        # Closing the read end makes a decrypter still writing fail with EPIPE and end.
        unpacker.close()
        pipe.close()
        decrypter.join()


def drain(reader: BinaryIO) -> int:
    """Read to the end (which runs the end-of-stream checks); return the bytes read."""
    total = 0
    while chunk := reader.read(CHUNK):
        total += len(chunk)
    return total


def spool_plain(reader: BinaryIO, dest: Path) -> int:
    """Write the plain dump to a private file (for tools that need a seekable file)."""
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    total = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := reader.read(CHUNK):
            out.write(chunk)
            total += len(chunk)
    return total
