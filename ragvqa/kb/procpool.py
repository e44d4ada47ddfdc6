"""Process pools whose workers die with the process that made them.

A :class:`concurrent.futures.ProcessPoolExecutor` cleans up after a normal
exit or an exception, but not after its parent is killed (SIGKILL, the OOM
killer): its workers block forever on their task queue, and with the
``forkserver`` start method the fork server and the resource tracker stay
too. :func:`worker_pool` prevents that:

- workers are always direct children of the calling process (``fork`` while
  it runs a single thread, else ``spawn``; never ``forkserver``, whose
  server process could not be made to follow its parent);
- each worker's initializer starts a watcher thread that waits on a pidfd
  of the parent (Linux 5.3+; elsewhere it polls ``getppid()`` twice a
  second) and ends the worker with ``os._exit`` the moment the parent is
  gone, whichever thread of the parent started it;
- the resource tracker (``spawn``) then sees every end of its pipe closed,
  cleans up and exits by itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor

log = logging.getLogger(__name__)

#: Seconds between parent checks where pidfds are not available.
POLL_SECONDS = 0.5


def _exit_when_gone(parent: int) -> None:
    """Block until process ``parent`` has exited, then end this process at once."""
    import select

    fd = None
    try:
        fd = os.pidfd_open(parent)
    except (AttributeError, OSError):  # no pidfd_open (old kernel, not Linux): poll
        fd = None
    if fd is not None and os.getppid() == parent:
        select.select([fd], [], [])  # readable when the process exits
    else:
        stop = threading.Event()
        while os.getppid() == parent:  # reparented to init/a subreaper once the parent dies
            stop.wait(POLL_SECONDS)
    os._exit(1)  # no cleanup: the parent that would collect results is gone


def watch_parent(parent: int) -> None:
    """Pool initializer: exit when ``parent`` (the pool's owner) exits."""
    if os.getppid() != parent:  # it died before this worker got here
        os._exit(1)
    threading.Thread(target=_exit_when_gone, args=(parent,), name="ragvqa-parent-watch", daemon=True).start()


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` that die with this process (see the module docstring).

    ``fork`` starts fastest and needs no ``if __name__ == "__main__"`` guard
    in the caller's script, but is only safe while this process runs a
    single thread; with other threads running (a progress bar's monitor, a
    server) ``spawn`` is used, which needs the guard.
    """
    methods = multiprocessing.get_all_start_methods()
    method = "fork" if "fork" in methods and threading.active_count() == 1 else "spawn"
    context = multiprocessing.get_context(method)
    log.debug("process pool: %d %s workers", workers, method)
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=watch_parent, initargs=(os.getpid(),)
    )


__all__ = ["watch_parent", "worker_pool"]
