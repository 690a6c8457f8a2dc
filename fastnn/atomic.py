"""Writing a file atomically, and removing the temporary files of writers that died.

``write(path, fill)`` lets ``fill`` write a temporary file beside ``path``, fsyncs it,
renames it over ``path`` and fsyncs the folder, so a reader sees the old file or the
new one, never a part. The temporary file is ``.NAME.<random>-<pid>-<boot>@<host>.tmp``
(NAME the target's name; pid, boot and host the writer's: its process id, the first
8 hex digits of the kernel's boot id, its host name), and the writer holds an
exclusive ``flock`` on it from creation until after the rename. An error or an
interrupt removes it; a writer killed meanwhile (SIGKILL, a preempted job, power loss)
leaves it behind, and the next write to the same path removes it, under this rule:

- only a regular file whose name has that form for that path (or the form fastnn used
  before, ``.NAME.<12 hex digits>.tmp``) is a candidate; nothing else is touched;
- its lock must be free: a live writer holds it, and the kernel (or, on NFS, the
  server) releases the lock of a process that died;
- written on this host since its last boot: its writer's pid must also be gone (in
  case the file system's locks do nothing);
- written on another host or before a reboot of this one: the lock must be free
  (kept across hosts by NFS's lock manager);
- written on another host, or in the old form: it must also be unmodified for
  ``STALE_AFTER`` seconds, in case the file system's locks do not reach across hosts
  (NFS mounted with ``nolock``), as a live writer modifies its file as it goes.

Where locks are not supported (no ``fcntl``, or a file system that refuses them),
nothing is removed.
"""

import os
import re
import secrets
import socket
import stat
import time

try:
    import fcntl
except ImportError:  # Windows: no flock, so no cleanup either
    fcntl = None

STALE_AFTER = 3600.0  # seconds unmodified before another host's leftover may go


def write(path, fill):
    """Write ``path`` atomically: ``fill(file)`` writes the content to a binary file."""
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    remove_leftovers(folder, name)
    temp, fd = _create(folder, name)
    try:
        with os.fdopen(fd, "wb") as file:  # closing it releases the lock: after the rename
            fill(file)
            file.flush()
            os.fsync(file.fileno())
            os.replace(temp, path)
    except BaseException:
        if os.path.lexists(temp):
            os.unlink(temp)
        raise
    _fsync_folder(folder)


def remove_leftovers(folder, name):
    """Remove the temporary files of dead writes to ``folder/name`` (see the module
    docstring for the rule); returns their paths."""
    removed = []
    if fcntl is None:
        return removed
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        owner = _owner(entry.name, name)
        if owner is not None and _remove_if_dead(entry.path, *owner):
            removed.append(entry.path)
    return removed


def _create(folder, name):
    """A new temporary file for ``folder/name``, locked: (path, fd)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = os.path.join(folder, temporary_name(name))
        fd = os.open(temp, flags, 0o666)  # 0o666 less the umask, as for any new file
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # no locks here: then no cleaner removes it either
        if os.fstat(fd).st_nlink > 0:
            return temp, fd
        os.close(fd)  # a cleaner took it for a leftover before we locked it: another name


def temporary_name(name, pid=None, boot=None, host=None):
    """The name of a new temporary file for ``name``, written by this process unless
    ``pid``, ``boot`` and ``host`` say otherwise."""
    pid = os.getpid() if pid is None else pid
    return (f".{name}.{secrets.token_hex(6)}-{pid}-{boot or _boot()}@{host or _host()}"
            f".tmp")


def _owner(entry, name):
    """(pid, boot, host) of a temporary file's writer if ``entry`` is one of ours for
    ``name``; (None, None, None) for the old form; None if it is not one."""
    prefix = f".{name}."
    if not (entry.startswith(prefix) and entry.endswith(".tmp")):
        return None
    middle = entry[len(prefix):-len(".tmp")]
    if re.fullmatch(r"[0-9a-f]{12}", middle):
        return None, None, None
    found = re.fullmatch(r"[0-9a-f]{12}-([0-9]+)-([0-9a-f]{8})@([A-Za-z0-9._-]+)", middle)
    return None if found is None else (int(found[1]), found[2], found[3])


def _remove_if_dead(path, pid, boot, host):
    """Remove ``path`` if its writer is dead by the rule; True if removed."""
    if host == _host() and boot == _boot() and _alive(pid):
        return False  # not even opened: closing a file drops its process's NFS locks
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # gone, a link, not ours to write
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return False
        if host != _host() and time.time() - info.st_mtime < STALE_AFTER:
            return False  # another host's (or the old form's): it must be old, too
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError while a writer holds it
        if not os.path.samestat(info, os.stat(path, follow_symlinks=False)):
            return False  # renamed or replaced meanwhile
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _alive(pid):
    if pid == os.getpid():
        return True  # another thread's write
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def _host():
    """This host's name as it appears in temporary file names."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:32] or "unknown"


def _boot():
    """The first 8 hex digits of this boot's id (Linux), else 00000000."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            digits = file.read().replace("-", "").strip()[:8]
    except OSError:
        return "0" * 8
    return digits if re.fullmatch(r"[0-9a-f]{8}", digits) else "0" * 8


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX); not possible, nor needed, on Windows."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
