"""A start-up error leaves the run folder as it found it.

Hydra creates the run folder, writes `.hydra/` and opens the job's log before the run's own checks can fail. The
entry script records what was there before Hydra started (which folders existed, the bytes of `.hydra/`'s files,
the length of each log); after a start-up error exactly what this process added is removed and what it overwrote
is put back, so pointing `hydra.run.dir` at an existing run by mistake costs that run nothing. When Hydra names another folder
than the check did (a `${now:...}` in the name, or Hydra's own command-line flags), that folder is cleaned only if
it holds nothing but Hydra's files, all written since this process started."""
import os
import shutil
import time

STARTED = time.time()  # this module is imported before Hydra writes anything
HYDRA_FILES = {"config.yaml", "hydra.yaml", "overrides.yaml"}


class FolderSnapshot:
    def __init__(self, folder):
        self.folder = os.path.abspath(folder)
        self.created = []  # folders that do not exist yet, deepest first: this process may create them
        missing = self.folder
        while not os.path.exists(missing):
            self.created.append(missing)
            missing = os.path.dirname(missing)
        self.hydra_existed = os.path.lexists(os.path.join(self.folder, ".hydra"))
        self.hydra_names = _names(os.path.join(self.folder, ".hydra"))  # None: cannot be listed
        self.hydra_files = _file_contents(os.path.join(self.folder, ".hydra"))
        self.log_sizes = _log_sizes(self.folder)

    def restore(self, folder, job_log):
        """Undo what this process did to `folder` (the run folder Hydra used)."""
        if not folder or os.path.abspath(folder) != self.folder:
            discard_fresh_folder(folder, job_log)
            return
        if not os.path.isdir(self.folder):
            return
        hydra = os.path.join(self.folder, ".hydra")
        if not self.hydra_existed:
            shutil.rmtree(hydra, ignore_errors=True)
        elif os.path.isdir(hydra) and self.hydra_names is not None:
            _put_back(hydra, self.hydra_names, self.hydra_files)
        if job_log:
            _shorten_or_remove(os.path.join(self.folder, job_log), self.log_sizes.get(job_log))
        for created in self.created:  # only if empty: a concurrent job may have written into it meanwhile
            try:
                os.rmdir(created)
            except OSError:
                return


def undo_start_up(before, folder, job_log):
    """After a start-up error: restore the recorded folder, or clean a fresh one (no record: Hydra's flags)."""
    if before is not None:
        before.restore(folder, job_log)
    else:
        discard_fresh_folder(folder, job_log)


def discard_fresh_folder(folder, job_log):
    """Remove Hydra's files from a run folder this process did not record, and the folder if that empties it:
    only if everything in it is Hydra's and was written since this process started."""
    if not folder or not os.path.isdir(folder) or os.path.samefile(folder, os.getcwd()):
        return
    hydra = os.path.join(folder, ".hydra")
    ours = [os.path.join(hydra, name) for name in _names(hydra) or []] + [os.path.join(folder, job_log or "")]
    expected = {".hydra", job_log} >= set(_names(folder) or []) and set(_names(hydra) or []) <= HYDRA_FILES
    try:
        fresh = all(os.path.getmtime(path) >= STARTED - 1 for path in ours if os.path.isfile(path))
    except OSError:
        return
    if not (expected and fresh):
        return
    for path in ours:
        if os.path.isfile(path):
            os.remove(path)
    for empty in (hydra, folder):
        try:
            os.rmdir(empty)
        except OSError:
            return


def _names(folder):
    """The names in `folder`, or None if it does not exist or cannot be listed."""
    try:
        return set(os.listdir(folder))
    except OSError:
        return None


def _file_contents(folder):
    """{name: bytes} of the readable plain files in `folder` ({} if there is none)."""
    contents = {}
    for name in _names(folder) or ():
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path):
            try:
                with open(path, "rb") as handle:
                    contents[name] = handle.read()
            except OSError:
                pass
    return contents


def _log_sizes(folder):
    sizes = {}
    for name in _names(folder) or ():
        if name.endswith(".log") and os.path.isfile(os.path.join(folder, name)):
            sizes[name] = os.path.getsize(os.path.join(folder, name))
    return sizes


def _put_back(folder, names, contents):
    """Remove the files added to `folder` since `names` were listed; give the readable ones their old bytes."""
    for name in _names(folder) or ():
        path = os.path.join(folder, name)
        try:
            if name not in names:
                if os.path.isfile(path) or os.path.islink(path):
                    os.remove(path)
                continue
            if name not in contents:  # a link, or a file this process could not read: left as it is
                continue
            with open(path, "rb") as handle:
                unchanged = handle.read() == contents[name]
            if not unchanged:
                with open(path, "wb") as handle:
                    handle.write(contents[name])
        except OSError:
            continue


def _shorten_or_remove(path, size):
    try:
        if size is None:
            os.remove(path)
        else:
            os.truncate(path, size)
    except OSError:
        pass
