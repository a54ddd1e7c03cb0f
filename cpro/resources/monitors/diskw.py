"""diskw: the first params['size'] bytes of params['object'] (a block device or a file) can be read.

params['method']: 'read' (plain read; the object's cached pages are dropped
first with posix_fadvise so that the read reaches the device) or 'odirect'
(O_DIRECT, bypassing the page cache; the buffer is page-aligned anonymous
memory and the length is rounded up to a multiple of 4096, which every logical
block size divides). A short read at the end of a small file is not an error.
The error text names the operation, the path and the errno.

The I/O runs in a thread. A read stuck in the kernel (a dead disk) cannot be
interrupted: a cancelled check abandons it, and later checks wait on that same
read (L{SingleFlight}) instead of tying up one more thread each, so they time
out too until the device answers again.
"""

import errno
import mmap
import os

from zope.interface import implementer

from cpro.config.monitors import all_parameters
from cpro.config.schema import MonitorSchema, Param
from cpro.interfaces import IMonitor
from cpro.plugins import MONITOR_TYPES
from cpro.resources.monitors._threads import SingleFlight
from cpro.system.runners import thread_runner
from cpro.resources.monitors.base import CheckResult

METHODS = ("read", "odirect")
_ALIGN = 4096
_CHUNK = 1 << 20  # bytes read per system call: bounds the buffer for a large size


class DiskReadError(Exception):
    def __init__(self, operation, path, error):
        name = errno.errorcode.get(error.errno, f"errno {error.errno}")
        super().__init__(f"{operation} of {path} failed: {name} ({error.strerror})")
        self.errno = error.errno


def read_object(path, size, method):
    """Read up to size bytes from the start of path. Blocking: call it in a thread.

    @return: the number of bytes read.
    @raise DiskReadError: naming the operation ('open', 'read'), path and errno.
    """
    direct = method == "odirect"
    flags = os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECT if direct else 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise DiskReadError("open", path, e) from e
    try:
        if direct:
            length = max(_ALIGN, -(-size // _ALIGN) * _ALIGN)
        else:
            length = size
            try:
                os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass  # only a hint
        chunk = min(length, _CHUNK)
        buffer = mmap.mmap(-1, max(_ALIGN, -(-chunk // _ALIGN) * _ALIGN))  # anonymous memory: page-aligned
        try:
            total = _read_into(fd, buffer, chunk, length)
        finally:
            try:
                buffer.close()
            except BufferError:
                pass  # a traceback still holds a view of it; it is freed with the traceback
    except OSError as e:
        raise DiskReadError("read", path, e) from e
    finally:
        os.close(fd)
    return min(total, size)


def _read_into(fd, buffer, chunk, length):
    total = 0
    with memoryview(buffer)[:chunk] as view:
        while total < length:
            wanted = min(chunk, length - total)
            got = os.preadv(fd, [view[:wanted]], total)
            total += got
            if got < wanted:
                break  # end of the file or device (and O_DIRECT needs aligned offsets)
    return total


def _check_parameters(loader, m):
    """O_DIRECT reads whole sectors: the size must be a multiple of 512 with method odirect."""
    for values, paths in all_parameters(m):
        if "size" in values:
            method = values.get("method", m.params.get("method"))
            if method == "odirect" and values["size"] % 512:
                loader.error(paths["size"], f"size {values['size']} must be a multiple of 512 "
                                            "with method odirect")


SCHEMA = MonitorSchema(params=(
    Param("object", "abspath", required=True),
    Param("size", "int", (1, 99_999_999)),
    Param("method", "choice", METHODS),
), check_parameters=_check_parameters)


@MONITOR_TYPES.register("diskw", schema=SCHEMA)
@implementer(IMonitor)
class DiskMonitor:
    type = "diskw"

    def __init__(self, reactor, config, params, env, run_in_thread=None):
        self.name = config.name
        self._path = params["object"]
        self._size = int(params.get("size", 512))
        self._method = params.get("method", "read")
        if self._method not in METHODS:
            raise ValueError(f"diskw {config.name}: method must be one of {', '.join(METHODS)}, not {self._method!r}")
        runner = run_in_thread if run_in_thread is not None else thread_runner(reactor)
        self._read = SingleFlight(reactor, runner, read_object, self._path, self._size, self._method)
        self._last_error = None

    def start(self):
        return None

    def stop(self):
        return None

    def describe(self):
        return {
            "object": self._path,
            "size": self._size,
            "method": self._method,
            "reading": self._read.busy,
            "last_error": self._last_error,
        }

    def check(self):
        return self._read.run().addCallbacks(self._read_done, self._read_failed)

    def _read_done(self, count):
        self._last_error = None
        return CheckResult.normal()

    def _read_failed(self, failure):
        failure.trap(DiskReadError)
        self._last_error = str(failure.value)
        return CheckResult.error(self._last_error)
