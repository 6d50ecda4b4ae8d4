"""What SQLite would silently drop from a store's write-ahead log.

The store runs in WAL mode: every commit is appended to
``cfosproxy.sqlite-wal`` (and fsynced) before it counts. When SQLite opens
the file again it reads the log from the start and stops at the first frame
whose checksum does not match, ignoring everything after it without a word,
and the next checkpoint makes that final. A crash in the middle of a commit
leaves such a torn frame at the end of the log: that commit was never
acknowledged, and losing it is right. But a frame damaged further back (a
failing disk, a bad block) makes SQLite drop every commit behind it too,
queued messages among them.

L{check_wal} reads the log as SQLite does (https://sqlite.org/fileformat.html,
"The Write-Ahead Log") before SQLite opens it, and tells the two apart:
committed transactions behind the damage are what would be lost.
"""

import os
import struct
from dataclasses import dataclass

_MAGIC_LITTLE = 0x377F0682
_MAGIC_BIG = 0x377F0683
_HEADER = 32
_FRAME_HEADER = 24


@dataclass(frozen=True)
class WalDamage:
    """A write-ahead log with committed transactions SQLite cannot read.

    @ivar frame: the number (from 1) of the first frame that fails its check.
    @ivar frames: the frames the file holds.
    @ivar lost_commits: commits of this log behind the damage.
    """

    frame: int
    frames: int
    lost_commits: int

    def describe(self):
        """One sentence for the log."""
        return (
            "frame {} of {} is damaged, and {} committed transaction(s) written "
            "after it cannot be read".format(self.frame, self.frames, self.lost_commits)
        )


def check_wal(path, page_size_hint=None):
    """Check the write-ahead log at C{path}.

    @param page_size_hint: the database's page size, for a log whose own
        header is damaged; None: read from the database file beside it.
    @return: a L{WalDamage} when commits after a damaged frame would be
        dropped; None for a log that is whole, missing, empty, or torn only
        in its last (unacknowledged) transaction.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    if len(data) < _HEADER:
        return None
    magic, version, page_size, _, salt1, salt2, sum1, sum2 = struct.unpack(
        ">8I", data[:_HEADER]
    )
    if magic not in (_MAGIC_LITTLE, _MAGIC_BIG) or not _valid_page_size(page_size):
        return _damaged_header(data, path, page_size_hint)
    big_endian = magic == _MAGIC_BIG
    if _checksum(data[:24], 0, 0, big_endian) != (sum1, sum2):
        return _damaged_header(data, path, page_size_hint)
    frame_size = _FRAME_HEADER + page_size
    frames = (len(data) - _HEADER) // frame_size
    s1, s2 = sum1, sum2
    for index in range(frames):
        offset = _HEADER + index * frame_size
        header = data[offset:offset + _FRAME_HEADER]
        _, _, f_salt1, f_salt2, f_sum1, f_sum2 = struct.unpack(">6I", header)
        if (f_salt1, f_salt2) != (salt1, salt2):
            # Frames of an earlier generation of the log (it is reused after
            # a checkpoint): the end of this one.
            return None
        s1, s2 = _checksum(header[:8], s1, s2, big_endian)
        s1, s2 = _checksum(data[offset + _FRAME_HEADER:offset + frame_size], s1, s2, big_endian)
        if (s1, s2) != (f_sum1, f_sum2):
            lost = _commits_after(data, index + 1, frames, frame_size, (salt1, salt2))
            # The last transaction may be torn by a crash before its commit
            # was acknowledged; anything beyond one commit had been.
            if lost > 1 or (lost == 1 and not _last_frame_commits(data, frames, frame_size)):
                return WalDamage(index + 1, frames, lost)
            return None
    return None


def _damaged_header(data, path, page_size_hint):
    """A log whose own header fails: SQLite ignores the whole file. That
    loses commits if frames with a commit mark follow."""
    page_size = page_size_hint or _database_page_size(path)
    if page_size is None:
        return None
    frame_size = _FRAME_HEADER + page_size
    frames = (len(data) - _HEADER) // frame_size
    if frames == 0:
        return None
    # Without the header's salts, count the commit marks of the frames that
    # share the first frame's salts: one generation of the log.
    salts = struct.unpack(">2I", data[_HEADER + 8:_HEADER + 16])
    lost = _commits_after(data, 0, frames, frame_size, salts)
    return WalDamage(0, frames, lost) if lost else None


def _commits_after(data, start, frames, frame_size, salts):
    commits = 0
    for index in range(start, frames):
        offset = _HEADER + index * frame_size
        _, db_size, salt1, salt2 = struct.unpack(">4I", data[offset:offset + 16])
        if (salt1, salt2) != salts:
            break
        if db_size:
            commits += 1
    return commits


def _last_frame_commits(data, frames, frame_size):
    offset = _HEADER + (frames - 1) * frame_size
    return struct.unpack(">I", data[offset + 4:offset + 8])[0] != 0


def _checksum(data, s1, s2, big_endian):
    """SQLite's WAL checksum over C{data} (a multiple of 8 bytes), going
    on from C{(s1, s2)}."""
    words = struct.unpack(("{}{}I").format(">" if big_endian else "<", len(data) // 4), data)
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & mask
        s2 = (s2 + words[i + 1] + s1) & mask
    return s1, s2


def _valid_page_size(size):
    return 512 <= size <= 65536 and size & (size - 1) == 0


def _database_page_size(wal_path):
    """The page size in the header of the database beside the log."""
    database = wal_path[: -len("-wal")] if wal_path.endswith("-wal") else None
    if database is None or not os.path.exists(database):
        return None
    with open(database, "rb") as f:
        header = f.read(100)
    if len(header) < 18 or not header.startswith(b"SQLite format 3\0"):
        return None
    (size,) = struct.unpack(">H", header[16:18])
    size = 65536 if size == 1 else size
    return size if _valid_page_size(size) else None
