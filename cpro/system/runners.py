"""Running blocking calls (netlink, psutil, disk reads) off the reactor thread.

Resources and monitors take an injectable ``runner(fn, *args, **kwargs)``
that returns a Deferred firing fn's result: L{thread_runner} in production
(the reactor's thread pool), L{run_inline} in unit tests (synchronous).
"""

from twisted.internet import defer, threads


def thread_runner(reactor):
    """A runner calling fn in the reactor's thread pool.

    The pool is looked up at call time, so an object built on a fake reactor
    with an injected runner never touches it.
    """

    def run_in_thread(fn, *args, **kwargs):
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args, **kwargs)

    return run_in_thread


def run_inline(fn, *args, **kwargs):
    """A runner for unit tests: call fn now, on the calling thread."""
    return defer.maybeDeferred(fn, *args, **kwargs)
