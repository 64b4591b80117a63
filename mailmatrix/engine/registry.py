"""Task resources: Lambda functions, service integrations and the object store.

A Task's Resource resolves through the registry: ``arn:aws:states:::lambda:invoke`` with
``Parameters.FunctionName`` (a name, a partial or full ARN, optionally with a qualifier) or a
plain function ARN resolves to the callable registered under the function's name; other
resources resolve to service functions ``fn(parameters) -> dict``. Handlers run through an
invoker: ``ThreadInvoker`` calls them in this process; ``ProcessInvoker`` runs handlers
registered as ``"module:attr"`` strings in a process pool, for CPU-bound work.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import contextlib
import ctypes
import fcntl
import importlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from mailmatrix.engine.errors import TIMEOUT, StatesError
from mailmatrix.errors import EngineError

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
REGION = "eu-west-1"
ACCOUNT = "123456789012"

Handler = Callable[[Any, Any], Any]
ObjectGet = Callable[[str, str], bytes]
# A put may be handed a bytearray: the Map's ResultWriter puts its buffers without a copy.
ObjectPut = Callable[[str, str, bytes | bytearray], object]
ObjectOpen = Callable[[str, str], BinaryIO]


def function_name(reference: str) -> tuple[str, str | None]:
    """Split a FunctionName or function ARN into (name, qualifier)."""
    parts = reference.split(":")
    if reference.startswith("arn:"):
        # arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
        if len(parts) < 7 or parts[5] != "function":
            raise EngineError(f"registry: {reference!r} is not a Lambda function ARN")
        return parts[6], parts[7] if len(parts) > 7 else None
    if len(parts) >= 3 and parts[1] == "function":
        return parts[2], parts[3] if len(parts) > 3 else None
    return parts[0], parts[1] if len(parts) > 1 else None


def is_function_arn(resource: str) -> bool:
    """True for a plain Lambda function ARN used directly as a Task Resource."""
    return resource.startswith("arn:aws:lambda:") and ":function:" in resource


@dataclass
class LambdaContext:
    """The context object a Lambda handler receives (the fields powertools reads)."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline: float

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the invocation's deadline."""
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def make_context(name: str, qualifier: str | None, timeout: float) -> LambdaContext:
    """Build a Lambda-like context for one invocation."""
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return LambdaContext(
        function_name=name,
        function_version="$LATEST",
        invoked_function_arn=f"{arn}:{qualifier}" if qualifier else arn,
        memory_limit_in_mb=1024,
        aws_request_id=str(uuid.uuid4()),
        log_group_name=f"/aws/lambda/{name}",
        log_stream_name=f"local/{uuid.uuid4().hex}",
        deadline=time.monotonic() + timeout,
    )


def resolve_handler(handler: Handler | str) -> Handler:
    """Import a ``"module:attr"`` handler reference, or return a callable unchanged."""
    if callable(handler):
        return handler
    module_name, _, attr = handler.partition(":")
    if not attr:
        raise EngineError(f"registry: handler {handler!r}: expected 'module:callable'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise EngineError(f"registry: handler {handler!r}: cannot import: {exc}") from exc


def error_cause(exc: BaseException, request_id: str) -> str:
    """The Cause string Lambda reports for an unhandled exception."""
    return json.dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "requestId": request_id,
            "stackTrace": traceback.format_tb(
                exc.__traceback__.tb_next if exc.__traceback__ else None
            ),
        }
    )


def call_handler(
    handler: Handler | str, name: str, qualifier: str | None, event_json: str, timeout: float
) -> tuple[str, str | None, str | None]:
    """Run a handler on a JSON event: (result JSON, error, cause); errors never raise."""
    context = make_context(name, qualifier, timeout)
    try:
        result = resolve_handler(handler)(json.loads(event_json), context)
        return json.dumps(result), None, None
    except Exception as exc:  # every handler error becomes a task error
        # NOTE: a drill's simulated crash names the error Lambda reports for a killed
        # invocation (asl_error = "Sandbox.Timedout"); real errors use their class name.
        error = getattr(exc, "asl_error", None) or type(exc).__name__
        return "", error, error_cause(exc, context.aws_request_id)


class Invoker(Protocol):
    """Runs one handler invocation; returns (result JSON, error, cause)."""

    def invoke(
        self,
        handler: Handler | str,
        name: str,
        qualifier: str | None,
        event_json: str,
        timeout: float | None,
    ) -> tuple[str, str | None, str | None]:
        """Invoke; raise StatesError(States.Timeout) when the timeout passes."""
        ...


class ThreadInvoker:
    """Calls handlers in this process; with a timeout, in a helper thread it stops waiting on."""

    def invoke(
        self,
        handler: Handler | str,
        name: str,
        qualifier: str | None,
        event_json: str,
        timeout: float | None,
    ) -> tuple[str, str | None, str | None]:
        """Invoke the handler; States.Timeout when it runs past the timeout."""
        if timeout is None:
            return call_handler(handler, name, qualifier, event_json, 900.0)
        box: list[Any] = []
        worker = threading.Thread(
            target=lambda: box.append(call_handler(handler, name, qualifier, event_json, timeout)),
            daemon=True,
        )
        worker.start()
        worker.join(timeout)
        if not box:
            # NOTE: a thread cannot be killed; the late handler keeps running in background.
            raise StatesError(TIMEOUT, f"Task timed out after {timeout} seconds.")
        return box[0]


def _ready(_: object = None) -> int:
    """A no-op task: returns once a worker process is up."""
    return os.getpid()


# A pool worker holds an exclusive lock on a file of its own while it runs an invocation, so
# the engine can tell a worker that is busy from one that waits for a task (_stop_when_idle).
_busy_file: int | None = None


def _start_worker(engine_pid: int, busy_dir: str) -> None:
    """A pool worker's set-up: signals (_ignore_interrupts) and its busy file."""
    global _busy_file
    _ignore_interrupts(engine_pid)
    _busy_file = os.open(os.path.join(busy_dir, str(os.getpid())), os.O_CREAT | os.O_RDWR, 0o600)


def _call_in_worker(
    handler: Handler | str, name: str, qualifier: str | None, event_json: str, timeout: float
) -> tuple[str, str | None, str | None]:
    """call_handler in a pool worker, its busy file locked meanwhile."""
    if _busy_file is None:
        return call_handler(handler, name, qualifier, event_json, timeout)
    fcntl.flock(_busy_file, fcntl.LOCK_EX)
    try:
        return call_handler(handler, name, qualifier, event_json, timeout)
    finally:
        fcntl.flock(_busy_file, fcntl.LOCK_UN)


_BUSY_PREFIX = "mailmatrix-workers-"  # + the engine's pid + "-": its pools' busy folders


def _remove_orphaned_busy_dirs() -> None:
    """Remove the busy folders of engines that are gone: close() removes its own, but an
    engine killed outright (SIGKILL, out of memory) leaves them in the temporary folder."""
    root = tempfile.gettempdir()
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        pid, dash, _ = name.removeprefix(_BUSY_PREFIX).partition("-")
        if not (name.startswith(_BUSY_PREFIX) and dash and pid.isdigit()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # no such process: the engine died without close()
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        except OSError:  # alive under another user, or cannot tell: leave it
            continue


def _stop_when_idle(busy_dir: str) -> None:
    """Kill each live worker of a broken pool once it runs no invocation (its busy file is
    free: a worker that died holds no lock). Only this process's live children are killed."""
    children = {child.pid: child for child in multiprocessing.active_children()}
    for name in os.listdir(busy_dir):
        child = children.get(int(name)) if name.isdigit() else None
        if child is None:
            continue
        busy = os.open(os.path.join(busy_dir, name), os.O_RDWR)
        try:
            fcntl.flock(busy, fcntl.LOCK_EX)  # waits for the invocation it runs, if any
            child.kill()
        finally:
            os.close(busy)


# The signals that stop a local run: Ctrl-C, SIGTERM and SIGHUP (the terminal closed).
_STOPS = frozenset(
    {signal.SIGINT, signal.SIGTERM} | ({signal.SIGHUP} if hasattr(signal, "SIGHUP") else set())
)


@contextlib.contextmanager
def _stops_held() -> Iterator[None]:
    """Hold the stop signals back (pending, not lost) in this thread for the block."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _ignore_interrupts(engine_pid: int | None = None) -> None:
    """Workers leave Ctrl-C, SIGTERM and SIGHUP (the terminal closed), also sent to the whole
    process group, to the engine: the engine stops the execution, and an invocation already
    running finishes (an interrupted SendBatch would leave a claim in doubt).

    On Linux a worker is also killed when the engine's process dies (PR_SET_PDEATHSIG): an
    orphaned worker would go on sending while a redrive reruns its batch under the same name.
    """
    for stop in _STOPS:
        signal.signal(stop, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # held back while the engine forked this worker
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if engine_pid is not None and os.getppid() != engine_pid:
            os._exit(1)  # the engine died before the line above ran


_PR_SET_PDEATHSIG = 1


# What Step Functions reports for a Lambda invocation that ended without returning an error
# type (the runtime was killed, e.g. out of memory).
WORKER_DIED = "Lambda.Unknown"


class ProcessInvoker:
    """Runs ``"module:attr"`` handlers in a process pool; callables run in this process.

    ``functions`` limits the pool to those function names (others run in threads), e.g. only
    the CPU-bound SendBatch. ``start_method`` picks the multiprocessing context ("fork",
    "spawn", ...); with "fork", call start() while the process has no other threads, so the
    workers are copies of a quiet process (environment, imported modules, log handlers).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        functions: Iterable[str] | None = None,
        start_method: str | None = None,
    ) -> None:
        self._context = multiprocessing.get_context(start_method) if start_method else None
        self._workers = workers or os.cpu_count() or 1
        self._busy_of: dict[int, str] = {}  # each pool's folder of busy files, by id(pool)
        self._pool = self._new_pool()
        self._pool_lock = threading.Lock()
        self._broken: list[concurrent.futures.ProcessPoolExecutor] = []  # replaced pools
        self._functions = frozenset(functions) if functions is not None else None
        self._threads = ThreadInvoker()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        _remove_orphaned_busy_dirs()
        busy = tempfile.mkdtemp(prefix=f"{_BUSY_PREFIX}{os.getpid()}-")
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=self._context,
            initializer=_start_worker,
            initargs=(os.getpid(), busy),
        )
        self._busy_of[id(pool)] = busy
        return pool

    def start(self) -> ProcessInvoker:
        """Start every worker process now rather than at the first invocation.

        The stop signals are held back while the workers are forked: one that came then would
        run this process's handler in a worker before the worker ignores it (a traceback), or
        in this process amid the fork's own handlers (which drop its KeyboardInterrupt). It is
        taken once the workers are there."""
        with _stops_held():
            ready = self._pool.map(_ready, [None] * self._workers, chunksize=1)
        list(ready)
        return self

    def invoke(
        self,
        handler: Handler | str,
        name: str,
        qualifier: str | None,
        event_json: str,
        timeout: float | None,
    ) -> tuple[str, str | None, str | None]:
        """Invoke in a worker process when the handler is importable by name."""
        if callable(handler) or (self._functions is not None and name not in self._functions):
            return self._threads.invoke(handler, name, qualifier, event_json, timeout)
        pool = self._pool
        try:
            future = pool.submit(
                _call_in_worker, handler, name, qualifier, event_json, timeout or 900.0
            )
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise StatesError(TIMEOUT, f"Task timed out after {timeout} seconds.") from None
        except concurrent.futures.process.BrokenProcessPool:
            # A worker died (killed, out of memory): every invocation it or its pool ran
            # fails the way Step Functions reports a Lambda that ended without an answer,
            # and the next invocations get a new pool.
            with self._pool_lock:
                if self._pool is pool:
                    self._pool = self._new_pool()
                    self._broken.append(pool)  # shut down by close(), see there
            return "", WORKER_DIED, f"{name}: the process running the function died"

    def close(self) -> None:
        """Shut the pool down, once every worker has finished the invocation it runs.

        That includes the other workers of a pool that broke: their invocations were reported
        failed, but they ignore SIGTERM and go on to the end (a SendBatch cut short would leave
        a claim in doubt), so what they did is in the ledger before the run is summed up. Such
        a worker is then stopped (SIGKILL), idle: it could wait for ever for its next task,
        on the task queue's lock if the worker that died held it.
        """
        self._pool.shutdown(wait=True, cancel_futures=True)
        for pool in self._broken:
            _stop_when_idle(self._busy_of[id(pool)])
            pool.shutdown(wait=True)
        for busy in self._busy_of.values():
            shutil.rmtree(busy, ignore_errors=True)


class ResourceRegistry:
    """Maps Task resources to Python: Lambda handlers, service integrations, object store."""

    def __init__(self, invoker: Invoker | None = None) -> None:
        self.lambdas: dict[str, Handler | str] = {}
        self.services: dict[str, Callable[[dict[str, Any]], Any]] = {}
        self.object_get: ObjectGet | None = None
        self.object_put: ObjectPut | None = None
        self.object_open: ObjectOpen | None = None
        self.invoker: Invoker = invoker or ThreadInvoker()

    def register_lambda(self, name: str, handler: Handler | str) -> None:
        """Register a handler under a function name (or an ARN whose name is used)."""
        self.lambdas[function_name(name)[0]] = handler

    def register_service(self, resource: str, fn: Callable[[dict[str, Any]], Any]) -> None:
        """Register a service integration, e.g. ``arn:aws:states:::sns:publish``."""
        self.services[resource] = fn

    def set_object_store(
        self, get: ObjectGet, put: ObjectPut, open: ObjectOpen | None = None
    ) -> None:
        """Set how ItemReader reads and ResultWriter writes objects.

        ``open(bucket, key)`` returns a binary stream; when given, ItemReader reads through it
        item by item instead of getting the whole object.
        """
        self.object_get = get
        self.object_put = put
        self.object_open = open

    def lambda_handler(self, reference: str) -> tuple[Handler | str, str, str | None]:
        """The handler for a FunctionName or function ARN, with its name and qualifier."""
        name, qualifier = function_name(reference)
        if name not in self.lambdas:
            known = ", ".join(sorted(self.lambdas)) or "none"
            raise StatesError(
                "Lambda.ResourceNotFoundException",
                f"Function not found: {reference} (registered: {known})",
            )
        return self.lambdas[name], name, qualifier

    def service(self, resource: str) -> Callable[[dict[str, Any]], Any]:
        """The function registered for a service resource."""
        if resource not in self.services:
            raise StatesError(
                "States.Runtime", f"resource {resource} is not registered with the local engine"
            )
        return self.services[resource]
