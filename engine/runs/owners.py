"""Which process owns an in-flight run or reply, and whether that process is gone.

An owner is written as `host|pid|boot|pidns|started`: the host name, the process id, the host's
boot id (/proc/sys/kernel/random/boot_id), the process's pid namespace and its start time in clock
ticks since boot (/proc/<pid>/stat). The host name and pid say who it is; the other three let a
process on the same host tell for sure that an owner is gone without waiting for its heartbeat:

- the same host with another boot id: the host rebooted since (the owner died with it);
- the same host, boot and pid namespace, and no process with that pid, a zombie, or a process with
  that pid that started at another time (the pid was reused): the owner is gone.

Anything else (another host, another container sharing the host name, a system without /proc) is
judged by its heartbeat alone. A wrong "gone" would finish a live reply, so every doubt says "alive".
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings

SEPARATOR = "|"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _process_start(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of a process, None when there is none."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    boot: str
    pidns: str
    started: str

    def token(self) -> str:
        return SEPARATOR.join(
            [self.host.replace(SEPARATOR, "_"), str(self.pid), self.boot, self.pidns, self.started]
        )[:200]

    @classmethod
    def parse(cls, token: str) -> Owner | None:
        parts = (token or "").split(SEPARATOR)
        if len(parts) != 5 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2], parts[3], parts[4])


def _this_process() -> Owner:
    pid = os.getpid()
    start = _process_start(pid)
    return Owner(
        host=socket.gethostname(),
        pid=pid,
        boot=_read("/proc/sys/kernel/random/boot_id"),
        pidns=_pid_namespace(),
        started=start[1] if start else "",
    )


_current: tuple[int, Owner] | None = None


def current() -> Owner:
    """This process (computed again after a fork: a Celery child is another owner)."""
    global _current
    if _current is None or _current[0] != os.getpid():
        _current = (os.getpid(), _this_process())
    return _current[1]


def owner_token() -> str:
    return current().token()


def owner_gone(token: str) -> bool:
    """Whether the owner is known to be gone without looking at its heartbeat (see the module
    docstring); False whenever this process cannot tell."""
    owner, me = Owner.parse(token), current()
    if owner is None or owner.host != me.host or not owner.boot or not me.boot:
        return False
    if owner.boot != me.boot:
        return True
    if owner == me:
        return False
    if not owner.pidns or owner.pidns != me.pidns or not owner.started:
        return False
    found = _process_start(owner.pid)
    return found is None or found[0] in ("Z", "X") or found[1] != owner.started


def orphan_after() -> timedelta:
    """How old a heartbeat may be before its owner counts as gone (CADENCE_ORPHAN_SECONDS)."""
    return timedelta(seconds=float(settings.CADENCE_ORPHAN_SECONDS))
