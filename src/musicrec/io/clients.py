"""S3 and GCS clients with bounded timeouts and logged retries, and one-line errors for every backend's failures.

Library defaults leave an unreachable endpoint hanging for minutes, silently. Here every S3 and GCS request has
bounded connect and read timeouts and at most ``CLIENT_ATTEMPTS`` tries, each retry logged at WARNING, so an
unreachable endpoint fails within ``FAIL_WITHIN_SECONDS``; :func:`with_retries` redoes, above the clients, what
they cannot (a download cut off mid-stream) and never a request they already gave up on. Every failure
surfaces as a :class:`StorageError` with one line naming the URI and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import logging
import random
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from musicrec.errors import StorageError

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Library defaults leave an unreachable endpoint hanging for minutes, silently (botocore: 60 s timeouts per
# attempt; google-cloud-storage: 60 s timeouts, retried for 120 s). These bound every S3 and GCS request so that
# it fails within FAIL_WITHIN_SECONDS: at worst CLIENT_ATTEMPTS x READ_TIMEOUT_SECONDS plus backoff (< 1.5 s).
FAIL_WITHIN_SECONDS = 15.0  # the promise; GCS also starts no retry past it
CONNECT_TIMEOUT_SECONDS = 3.0  # a reachable endpoint completes the TCP handshake in milliseconds
READ_TIMEOUT_SECONDS = 4.0  # the longest silence while awaiting bytes; S3 and GCS answer in well under 1 s
CLIENT_ATTEMPTS = 3  # tries of one request, the first included; each retry is logged at WARNING
GCS_BACKOFF_SECONDS = 0.5  # GCS sleeps up to this before its 1st retry, twice it before the 2nd (botocore: ~0)


def _describe(error: BaseException) -> str:
    """A short cause for the common failures of the three backends, with the retries a client already made."""
    gave_up = _gave_up(error)
    if gave_up is not None:
        network = _network_failure(error)
        if network:
            return (f"endpoint {gave_up.endpoint} unreachable after {gave_up.attempts} attempt"
                    f"{'s' if gave_up.attempts > 1 else ''} in {gave_up.seconds:.1f} s ({network})")  # fmt: skip
        if gave_up.attempts > 1 and is_transient(error):
            return f"{_cause(error)} (gave up after {gave_up.attempts} attempts)"
    return _cause(error)


def _cause(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError):
        return "not found"
    if isinstance(error, IsADirectoryError):
        return "is a directory, expected a file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, NotADirectoryError):
        return "a file is in the way of a directory"
    if isinstance(error, OSError) and error.errno == errno.EROFS:
        return "read-only file system"
    if isinstance(error, gzip.BadGzipFile | zlib.error):
        return f"corrupt gzip data ({error})"
    if isinstance(error, EOFError):
        return "truncated gzip file"
    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:  # botocore ClientError
        code = response["Error"].get("Code", "")
        if code in ("NoSuchKey", "404", "NotFound"):
            return "not found"
        if code == "NoSuchBucket":
            return "bucket not found"
        if code in ("AccessDenied", "403", "Forbidden"):
            return "access denied"
        return f"S3 error {code}: {response['Error'].get('Message', '')}".strip()
    code = getattr(error, "code", None)  # google.api_core exceptions carry an HTTP status
    if code == 404:
        return "not found"
    if code == 403:
        return "access denied"
    return f"{type(error).__name__}: {error}".splitlines()[0]


@contextlib.contextmanager
def translate_errors(uri: str, verb: str = "read") -> Iterator[None]:
    """Re-raise any I/O failure inside the block as one line, ``cannot <verb> <uri>: <cause>``."""
    try:
        yield
    except StorageError:
        raise
    except Exception as error:  # every backend raises its own family; the message keeps the cause
        raise StorageError(f"cannot {verb} {uri}: {_describe(error)}") from error


# --- writable stores (push, lineage) ---------------------------------------------------------------------
_TRANSIENT_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "ThrottlingException",
     "RequestTimeTooSkewed", "ConditionalRequestConflict"}
)  # fmt: skip
_TRANSIENT_NAMES = frozenset(
    {"EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
     "ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout", "ChunkedEncodingError",
     "ResponseStreamingError"}
)  # fmt: skip
RETRY_ATTEMPTS = 5
RETRY_BASE_SECONDS = 0.2


def error_status(error: BaseException) -> int | None:
    """The HTTP status of a botocore or google.api_core error, when it carries one."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    code = getattr(error, "code", None)
    return code if isinstance(code, int) else None


def is_transient(error: BaseException) -> bool:
    """Whether retrying may help: dropped connections, timeouts, throttling and 5xx answers."""
    if isinstance(error, ConnectionError | TimeoutError) or type(error).__name__ in _TRANSIENT_NAMES:
        return True
    response = getattr(error, "response", None)
    if isinstance(response, dict) and response.get("Error", {}).get("Code") in _TRANSIENT_S3_CODES:
        return True
    return error_status(error) in _TRANSIENT_STATUS


def with_retries(operation: Callable[[], T], what: str, attempts: int = RETRY_ATTEMPTS) -> T:
    """Run ``operation``, retrying transient failures with exponential backoff and jitter.

    This is the layer above the clients' own retries (:func:`s3_client`, :func:`gcs_request_options`): it redoes
    what they cannot, such as a download cut off mid-stream, and never retries a request they already gave up on.

    Raises:
        StorageError: at once for a permanent failure (permission, missing bucket...), or after ``attempts``
            transient ones; the message names ``what`` and the cause.
    """
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except StorageError:
            raise
        except Exception as error:  # each backend raises its own family
            if not is_transient(error) or _gave_up(error) is not None:  # the client's own retries are spent
                raise StorageError(f"cannot {what}: {_describe(error)}") from error
            if attempt == attempts:
                raise StorageError(
                    f"cannot {what}: {_describe(error)} (gave up after {attempts} attempts)"
                ) from error
            delay = RETRY_BASE_SECONDS * 2 ** (attempt - 1) * (1 + random.random())
            logger.warning("%s failed (%s); retry %d of %d in %.1f s", what, _describe(error), attempt,
                           attempts - 1, delay)  # fmt: skip
            time.sleep(delay)
    raise AssertionError("unreachable")


# --- clients: bounded timeouts, bounded and logged retries -------------------------------------------------
@dataclass(frozen=True)
class _GaveUp:
    """Attached to the last error of a request its client already retried: no layer above retries it again."""

    endpoint: str
    attempts: int
    seconds: float


_GAVE_UP = "_musicrec_gave_up"  # the attribute holding a _GaveUp on a library exception
_REQUEST = "musicrec_request"  # the key of an _S3Request in botocore's per-call context


def _mark_gave_up(error: BaseException, endpoint: str, attempts: int, seconds: float) -> None:
    with contextlib.suppress(AttributeError):  # an exception type with __slots__ keeps its plain message
        setattr(error, _GAVE_UP, _GaveUp(endpoint, attempts, seconds))


def _gave_up(error: BaseException) -> _GaveUp | None:
    """How a client gave up on ``error``'s request after its own retries, if it did."""
    mark = getattr(error, _GAVE_UP, None)
    if isinstance(mark, _GaveUp):
        return mark
    response = getattr(error, "response", None)  # a botocore ClientError: an answer, retried by standard mode
    metadata = response.get("ResponseMetadata", {}) if isinstance(response, dict) else {}
    if metadata.get("MaxAttemptsReached"):
        return _GaveUp("", int(metadata.get("RetryAttempts", 0)) + 1, 0.0)
    return None


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and what it wraps: causes, contexts, urllib3 reasons, botocore's and requests' inner errors."""
    found: list[BaseException] = []
    pending: list[object] = [error]
    while pending and len(found) < 32:
        current = pending.pop()
        if not isinstance(current, BaseException) or any(current is seen for seen in found):
            continue
        found.append(current)
        inner = getattr(current, "kwargs", None)
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args,
                    inner.get("error") if isinstance(inner, dict) else None]  # fmt: skip
    return found


def _network_failure(error: BaseException) -> str | None:
    """Why no answer came (refused, timed out...), or ``None`` if ``error`` is not a failure to get one."""
    chain = _chain(error)
    names = {type(e).__name__ for e in chain}
    if not names & _TRANSIENT_NAMES and not any(isinstance(e, ConnectionError | TimeoutError) for e in chain):
        return None
    if names & {"ConnectTimeoutError", "ConnectTimeout"}:
        return f"no connection within {CONNECT_TIMEOUT_SECONDS:g} s"
    if names & {"ReadTimeoutError", "ReadTimeout"}:
        return f"no answer within {READ_TIMEOUT_SECONDS:g} s"
    for cause in reversed(chain):  # the innermost OS error says it best: connection refused, no route to host
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[0].lower() + cause.strerror[1:]
    return "connection failed"


def _short_cause(error: BaseException) -> str:
    return _network_failure(error) or _cause(error)


def _log_retry(what: str, attempt: int, cause: str) -> None:
    logger.warning("%s: attempt %d of %d failed (%s); retrying", what, attempt, CLIENT_ATTEMPTS, cause)


@dataclass
class _S3Request:
    what: str
    started: float
    failure: str = ""


def _s3_started(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
    """On ``before-parameter-build``: note what one S3 call is about, for its log lines and errors."""
    key = params.get("Key") or params.get("Prefix") or ""
    context[_REQUEST] = _S3Request(f"{model.name} s3://{params.get('Bucket', '')}/{key}", time.monotonic())


def _s3_failed(attempts: int, response: Any, caught_exception: BaseException | None, request_dict: dict[str, Any],
               endpoint: Any, **_: Any) -> None:  # fmt: skip
    """On ``needs-retry``: note why the attempt failed (botocore's standard retry handler decides on a retry)."""
    request = request_dict.get("context", {}).get(_REQUEST)
    if request is None:
        return
    if caught_exception is not None:
        request.failure = _short_cause(caught_exception)
        _mark_gave_up(caught_exception, endpoint.host, attempts, time.monotonic() - request.started)
    elif response is not None:
        http, parsed = response
        request.failure = f"HTTP {http.status_code} {parsed.get('Error', {}).get('Code', '')}".strip()


def _s3_retrying(request: Any, **_: Any) -> None:
    """On ``request-created``: a request for an attempt after the first is a retry; log it."""
    attempt = request.context.get("retries", {}).get("attempt", 1)
    noted = request.context.get(_REQUEST)
    if attempt > 1 and noted is not None:
        _log_retry(noted.what, attempt - 1, noted.failure)


def s3_client() -> Any:
    """A boto3 S3 client from the standard environment, with bounded timeouts and bounded, logged retries."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
                    retries={"total_max_attempts": CLIENT_ATTEMPTS, "mode": "standard"})  # fmt: skip
    client = boto3.client("s3", config=config)
    client.meta.events.register("before-parameter-build.s3", _s3_started)
    client.meta.events.register("needs-retry.s3", _s3_failed)
    client.meta.events.register("request-created.s3", _s3_retrying)
    return client


def gcs_client() -> Any:
    """A google-cloud-storage client from the standard environment; see :func:`gcs_request_options`."""
    from google.cloud import storage

    return storage.Client()


@functools.cache
def _bounded_retry_type() -> type:
    """google-api-core's ``Retry``, limited to ``CLIENT_ATTEMPTS`` tries of each request and logging each retry.

    Built on first use, like the clients, so that importing this module does not import Google's libraries.
    """
    from google.api_core.retry import Retry

    class BoundedRetry(Retry):
        def __init__(self, what: str, endpoint: str, predicate: Callable[[Exception], bool]) -> None:
            super().__init__(predicate=predicate, initial=GCS_BACKOFF_SECONDS, maximum=2 * GCS_BACKOFF_SECONDS,
                             multiplier=2.0, timeout=FAIL_WITHIN_SECONDS)  # fmt: skip
            self.what, self.endpoint = what, endpoint

        def __call__(
            self, func: Callable[..., T], on_error: Callable[[Exception], Any] | None = None
        ) -> Callable[..., T]:
            # The library calls this once per HTTP request (a page, a chunk): count that request's attempts only.
            @functools.wraps(func)
            def one_request(*args: Any, **kwargs: Any) -> T:
                started, failures = time.monotonic(), []

                def should_retry(error: Exception) -> bool:
                    failures.append(error)
                    return self._predicate(error) and len(failures) < CLIENT_ATTEMPTS

                def retrying(error: Exception) -> None:
                    _log_retry(self.what, len(failures), _short_cause(error))
                    if on_error is not None:
                        on_error(error)

                retry = Retry(predicate=should_retry, initial=self._initial, maximum=self._maximum,
                              multiplier=self._multiplier, timeout=self._timeout, on_error=retrying)  # fmt: skip
                try:
                    return retry(func)(*args, **kwargs)
                except Exception as error:  # the last failure, or a RetryError wrapping it when time ran out
                    if failures:
                        _mark_gave_up(error, self.endpoint, len(failures), time.monotonic() - started)
                    raise

            return one_request

    return BoundedRetry


def gcs_request_options(what: str, client: Any) -> dict[str, Any]:
    """``timeout`` and ``retry`` arguments that bound one google-cloud-storage call about ``what``.

    ``what`` names the call in the log lines of its retries, as in ``read gs://bucket/key``.
    """
    from google.cloud.storage.retry import DEFAULT_RETRY

    transient = DEFAULT_RETRY._predicate  # the library's own test of a transient error (429, 5xx, dropped link)
    retry = _bounded_retry_type()(what, client.api_endpoint, transient)
    return {"timeout": (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS), "retry": retry}
