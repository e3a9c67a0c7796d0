"""Writing files so that a crash, a kill or a full disk never leaves a half-written one behind.

Every output of a run goes through `atomic_write`: the content goes to a temporary file named after the target
and this process, is flushed to disk, and replaces the target in one rename; on failure the temporary file is
removed and the old target, if any, is untouched. `locked_file` keeps concurrent processes (sweep jobs, ranks)
apart; `unwritable` finds an unusable output folder at start-up rather than after hours of training.
"""
import fcntl
import os
import stat
from contextlib import contextmanager


def temporary_name(path, tag=""):
    """Where `path` is written before its rename: named after the target, `tag` (a run's lineage) and this
    process, so that clean-up can tell its own leftovers from anyone else's."""
    return f"{path}.tmp-{tag}-{os.getpid()}" if tag else f"{path}.tmp-{os.getpid()}"


def atomic_write(path, write, mode="wb", tag="", before_rename=None):
    """Call `write(handle)` on the temporary file of `path`, fsync it and rename it to `path`. `before_rename`,
    if given, is called with the temporary file's name once it is complete on disk (a checkpoint's marker is
    written then, so the checkpoint never appears without one)."""
    temporary = temporary_name(path, tag)
    try:
        with open(temporary, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if before_rename is not None:
            before_rename(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.isfile(temporary):
            os.remove(temporary)
        raise


def atomic_save(obj, path):
    """torch.save, atomically."""
    import torch  # here, so that the start-up checks that use this module do not wait for PyTorch

    atomic_write(path, lambda handle: torch.save(obj, handle))


@contextmanager
def locked_file(path, mode="a", **open_args):
    """Open `path` and hold an exclusive lock on it while the block runs; yields the handle."""
    with open(path, mode, **open_args) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def unwritable(folder):
    """Why `folder` could not be created and written (probed in its nearest existing parent), or None."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    probe = os.path.join(existing, f".fullbatch-write-test-{os.getpid()}")
    try:
        with open(probe, "w") as handle:
            handle.write("ok")
    except OSError as error:
        return f"{existing} is not writable ({error.strerror})"
    finally:
        if os.path.exists(probe):
            os.remove(probe)
    return None


def unsafe_folder(folder):
    """Why `folder` must not be a run's folder or a checkpoint search folder, or None. A run prunes and cleans up
    below these folders, so they must be its own: not empty, not the working folder, the home folder, or a
    folder above either (such as /)."""
    if folder is None or not str(folder).strip():
        return "expected a folder of its own, not an empty path"
    path = os.path.realpath(os.path.expanduser(str(folder)))
    for place in (os.getcwd(), os.path.expanduser("~")):
        place = os.path.realpath(place)
        if place == path or place.startswith(path.rstrip(os.sep) + os.sep):
            return ("expected a folder of its own, not the working folder, the home folder or a folder above them "
                    "(a run cleans up below it)")
    return None


def overlong_part(folder):
    """Why `folder` cannot exist on common file systems (a part longer than 255 bytes), or None; creating it would
    fail inside Hydra, before the run's own checks."""
    for part in os.path.abspath(str(folder)).split(os.sep):
        if len(part.encode("utf-8", "surrogateescape")) > 255:
            return f"its part {part[:30]!r}... is longer than 255 bytes (a run name takes at most 200)"
    return None


class UnsafeFile(OSError):
    """A file that is not a small regular file; `reason` says which it is ("is not a regular file", ...)."""

    def __init__(self, path, reason):
        super().__init__(f"{path} {reason}")
        self.reason = reason


def read_regular(path, limit=64 << 20):
    """The text of the small regular file at `path`. A pipe, a device (a link to /dev/zero) or a file larger than
    `limit` raises OSError instead of blocking or reading without end: markers, summaries and run configs are
    read from folders other people can write to."""
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise UnsafeFile(path, "is not a regular file")
        content = os.read(handle, limit + 1)
        while len(content) <= limit and (chunk := os.read(handle, limit + 1 - len(content))):
            content += chunk
    finally:
        os.close(handle)
    if len(content) > limit:
        raise UnsafeFile(path, f"is larger than {limit >> 20} MiB" if limit >= 1 << 20 else
                         f"is larger than {limit} bytes")
    return content.decode()
