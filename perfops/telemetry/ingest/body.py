"""Read an ingest request body in bounded memory, inflating gzip without letting a bomb explode."""

from __future__ import annotations

import zlib

from django.http import HttpRequest

_CHUNK = 256 * 1024


class IngestError(Exception):
    """A request-level refusal: the HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def media_type(request: HttpRequest) -> str:
    """The Content-Type without parameters, lower-cased ('' when absent)."""
    return (request.META.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()


def read_body(request: HttpRequest, max_bytes: int) -> bytes:
    """The request body, decompressed when Content-Encoding is gzip; at most `max_bytes` after inflating.

    Raises IngestError 413 when the body (compressed or inflated) is larger than allowed, 415 for
    an encoding other than gzip, and 400 for a corrupt or truncated gzip stream.
    """
    encoding = (request.META.get("HTTP_CONTENT_ENCODING") or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise IngestError(415, f"Content-Encoding '{encoding}' is not supported; send gzip or no encoding.")
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared:
        try:
            length = int(declared)
        except ValueError:
            raise IngestError(400, "Content-Length is not a number.") from None
        if length < 0:
            raise IngestError(400, "Content-Length is negative.")
        if length > max_bytes:
            raise IngestError(413, f"The body is {length} bytes; the limit is {max_bytes} bytes.")
        # The length is known and allowed: one read (a chunked loop costs a copy per chunk).
        raw = request.read(length)
        if len(raw) < length:
            raise IngestError(400, f"The body ended after {len(raw)} of {length} bytes.")
    else:
        raw = _read_bounded(request, max_bytes)
    if encoding == "identity":
        return raw
    return _gunzip_bounded(raw, max_bytes)


def _read_bounded(request: HttpRequest, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = request.read(min(_CHUNK, max_bytes + 1 - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise IngestError(413, f"The body is larger than the limit of {max_bytes} bytes.")
    return b"".join(parts)


def _gunzip_bounded(data: bytes, max_bytes: int) -> bytes:
    """Inflate one or more concatenated gzip members, stopping as soon as the output passes the limit."""
    out: list[bytes] = []
    size = 0
    remaining = data
    while remaining:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = remaining
        try:
            while pending:
                chunk = inflater.decompress(pending, max_bytes + 1 - size)
                size += len(chunk)
                if size > max_bytes:
                    raise IngestError(413, f"The body inflates to more than the limit of {max_bytes} bytes.")
                out.append(chunk)
                pending = inflater.unconsumed_tail
                if inflater.eof:
                    break
            if not inflater.eof:
                tail = inflater.flush()
                size += len(tail)
                if size > max_bytes:
                    raise IngestError(413, f"The body inflates to more than the limit of {max_bytes} bytes.")
                out.append(tail)
                raise IngestError(400, "The gzip body is truncated.")
        except zlib.error as exc:
            raise IngestError(400, f"The body is not valid gzip ({exc}).") from None
        remaining = inflater.unused_data
        if remaining and not remaining.strip(b"\x00"):
            break  # zero padding after the last member (tar-style writers add it): not another member
    return b"".join(out)
