"""One writer per output: a lease object (`_mfr_lease.json`) under the output while a job writes to it.

Two jobs writing the same output at once (say with different `--batch-size`) would both find the same
inputs not done and both write their rows. The lease makes the second one stop at once with a clear
message instead. The holder renews it every `RENEW_S` seconds; a lease not renewed for `STALE_S`
(a job that was killed) is taken over, at once when it names a process of this machine that has
ended. The lease is written only over the lease (or the absence of one) that the job read, by the store's
compare-and-swap (`write_if`: S3's conditional writes, a folder lock on local disks): of two jobs
starting in the same instant, one writes it and the other stops. It is then read back, for stores
that ignore the condition.

A job that was only stopped (Ctrl-Z, a suspended VM) past `STALE_S` finds its lease taken over when it
comes back: it no longer renews it, and every shard writer checks the lease before it writes
(`check_lease`), so the job stops with LeaseLost instead of writing its rows beside the new holder's.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from maskgen.runtime import this_machine

LEASE_KEY = "_mfr_lease.json"
RENEW_S = 20.0
STALE_S = 120.0


class OutputBusy(RuntimeError):
    """Another job holds the output's lease."""


class LeaseLost(OutputBusy):
    """Another job took the output's lease over while this one was stopped."""


def _held(store) -> dict | None:
    return _held_tagged(store)[0]


def _held_tagged(store) -> tuple[dict | None, str | None]:
    """(the lease, the store's tag of the object holding it: `write_if` replaces only that object)."""
    try:
        data, tag = store.read_tagged(LEASE_KEY)
    except FileNotFoundError:
        return None, None
    try:
        return json.loads(data), tag
    except (ValueError, UnicodeDecodeError):
        return None, tag  # a torn or foreign file is no lease


def check_lease(store, token: str | None) -> None:
    """Raise LeaseLost when the output's lease holds another job's token (shard writers call it before
    writing). No lease at all is not a loss: its holder writes it again at its next renewal."""
    if token is None:
        return
    held = _held(store)
    if held and held.get("token") != token:
        raise LeaseLost(f"another job ({held.get('command')}, host {held.get('host')}, pid {held.get('pid')}) took "
                        f"over {store.uri} while this one was stopped for more than {STALE_S:.0f} s; this job stops "
                        "here so that the two do not both write rows (what it finished is kept)")


def _gone(held: dict) -> bool:
    """Whether the job holding `held` is known to be gone: its process, on this machine, has ended (a
    job killed outright), so its lease need not age for STALE_S first."""
    where, pid = held.get("machine"), held.get("pid")
    if not where or where != this_machine() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class Lease:
    def __init__(self, store, command: str):
        self.store, self.command = store, command
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> bytes:
        return json.dumps({"token": self.token, "command": self.command, "host": socket.gethostname(),
                           "pid": os.getpid(), "machine": this_machine(), "renewed": time.time()}).encode()

    def _write_over(self, tag: str | None) -> bool:
        """Write this job's lease over the object `tag` tagged (None: where there is none): False when
        another job wrote the lease since it was read. A write that took effect but whose answer was
        lost (and so was tried again) reads back as this job's."""
        return self.store.write_if(LEASE_KEY, self._record(), tag) or self._holds()

    def _holds(self) -> bool:
        """Whether the output's lease, read now, is this job's."""
        now = _held(self.store)
        return bool(now) and now.get("token") == self.token

    def acquire(self) -> "Lease":
        held, tag = _held_tagged(self.store)
        if held and held.get("token") != self.token and time.time() - float(held.get("renewed", 0)) < STALE_S \
                and not _gone(held):
            raise OutputBusy(
                f"another job is writing to {self.store.uri} ({held.get('command')}, host {held.get('host')}, "
                f"pid {held.get('pid')}, renewed {time.time() - float(held['renewed']):.0f} s ago): wait for it to "
                f"finish, or if it is gone, wait {STALE_S:.0f} s or delete {self.store.uri_of(LEASE_KEY)}")
        # written only over the lease just read: of two jobs that both read it (or none), one writes
        if not self._write_over(tag):
            raise OutputBusy(f"another job started writing to {self.store.uri} at the same moment: run one at a time")
        time.sleep(0.05)  # and read back, for a store that ignores the condition
        if not self._holds():
            raise OutputBusy(f"another job started writing to {self.store.uri} at the same moment: run one at a time")
        self._thread = threading.Thread(target=self._renew, daemon=True)
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                held, tag = _held_tagged(self.store)
                if held and held.get("token") != self.token:
                    return  # taken over while this job was stopped: never take it back (check_lease stops the job)
                self._write_over(tag)  # not over a lease written since it was read
            except Exception:  # a missed renewal only shortens the lease
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._holds():
            self.store.delete(LEASE_KEY)

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
