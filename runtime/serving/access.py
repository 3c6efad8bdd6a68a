"""Which frames a local caller may have the server read: only those it could read itself.

The server runs as its own user, often with more rights than its callers (root, or a
member of the archive's group). Each local connection's peer credentials (``SO_PEERCRED``
and ``SO_PEERGROUPS``, taken by the kernel when the caller connected) say who asks. For a
caller of another uid a frame is opened only when the permission bits along its whole
path let that caller read it, judged as the kernel judges them: search (x) on every
folder a name is looked up in, links followed one component at a time, read (r) on the
file; the owner's bits for its owner, the group's for a member of its group, the others'
for the rest. Each step is checked on the very object then used (``O_PATH`` descriptors,
no name looked up twice), so nothing swapped in meanwhile can be read. A frame the caller
may not read is answered exactly as one that does not exist.

root's connections and this user's own are opened as before. Read access that only a
POSIX ACL or a capability grants is not seen: such a frame is answered as missing.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
import struct
from dataclasses import dataclass
from typing import IO

from frameqc.runtime.data.reader import open_regular
from frameqc.runtime.errors import FrameError

#: Linux's SO_PEERGROUPS (4.13+), which Python's socket module does not name.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
_READ, _SEARCH = 4, 1
_MISSING = "no such file"  # open_regular's own words for a file that does not exist
_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


@dataclass(frozen=True)
class Peer:
    """Who is at the other end of a unix socket: uid and every group it belongs to."""

    uid: int
    groups: frozenset[int]

    @classmethod
    def of(cls, sock: socket.socket) -> Peer:
        _, uid, gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        return cls(uid, frozenset(_groups(sock, uid, gid)) | {gid})

    @property
    def trusted(self) -> bool:
        """root, or this process's own user: the kernel's own check is the caller's."""
        return self.uid in (0, os.geteuid())


def _groups(sock: socket.socket, uid: int, gid: int) -> list[int]:
    try:  # the caller's own supplementary groups, as they were when it connected
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)  # Python's most
        return list(struct.unpack(f"{len(raw) // 4}I", raw))
    except OSError:  # an older kernel, or over 256 groups: the group database
        try:
            return os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
        except KeyError:
            return []


def open_for(path: str, peer: Peer | None, within: tuple[str, ...] = ()) -> IO[bytes]:
    """``path`` opened for reading on behalf of ``peer`` (None: this process itself).

    Raises
    ------
    FrameError
        "no such file" when the peer may not read it (as when it does not exist); else
        what :func:`~frameqc.runtime.data.reader.open_regular` says.
    """
    if peer is None or peer.trusted:
        return open_regular(path, within)
    try:
        fd = _walk(path, peer)
    except OSError as exc:
        if exc.errno in _GONE:
            raise FrameError(_MISSING) from None
        raise FrameError(f"cannot read: {exc.strerror or exc}") from None
    except ValueError:
        return open_regular(path, within)  # a NUL byte: its own message
    try:
        return open_regular(f"/proc/self/fd/{fd}", within)  # the very file checked
    finally:
        os.close(fd)


def _walk(path: str, peer: Peer) -> int:
    """An ``O_PATH`` descriptor of what ``path`` names, checked for ``peer`` on the way."""
    flags = os.O_PATH | os.O_CLOEXEC
    fd = os.open("/", flags | os.O_DIRECTORY)
    todo = path.split("/")
    hops = 0
    try:
        while todo:
            name = todo.pop(0)
            if not name:
                continue
            if not _may(os.fstat(fd), peer, _SEARCH):
                raise FileNotFoundError(errno.ENOENT, _MISSING)
            found = os.open(name, flags | os.O_NOFOLLOW, dir_fd=fd)
            if stat.S_ISLNK(os.fstat(found).st_mode):
                target = os.readlink("", dir_fd=found)
                os.close(found)
                hops += 1
                if hops > 40:
                    raise OSError(errno.ELOOP, "too many links")
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", flags | os.O_DIRECTORY)
                todo[:0] = target.split("/")
                continue
            os.close(fd)
            fd = found
        if not _may(os.fstat(fd), peer, _READ):
            raise FileNotFoundError(errno.ENOENT, _MISSING)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _may(st: os.stat_result, peer: Peer, bit: int) -> bool:
    """The kernel's rule: the owner's bits for the owner, else the group's, else others'."""
    shift = 6 if st.st_uid == peer.uid else 3 if st.st_gid in peer.groups else 0
    return bool(st.st_mode >> shift & bit)
