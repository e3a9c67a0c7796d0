"""A start-up error leaves the run folder as it found it.

Hydra creates the run folder, writes `.hydra/` and opens the job's log before the run's own checks can fail. The
entry script records what was there before Hydra started (which folders existed, the bytes of `.hydra/`'s files,
the length of each log); after a start-up error exactly what this process added is removed and what it overwrote
is put back, so pointing `hydra.run.dir` at an existing run by mistake costs that run nothing."""
import os
import shutil


class FolderSnapshot:
    def __init__(self, folder):
        self.folder = os.path.abspath(folder)
        self.created = []  # folders that do not exist yet, deepest first: this process may create them
        missing = self.folder
        while not os.path.exists(missing):
            self.created.append(missing)
            missing = os.path.dirname(missing)
        self.hydra_files = _file_contents(os.path.join(self.folder, ".hydra"))
        self.log_sizes = _log_sizes(self.folder)

    def restore(self, folder, job_log):
        """Undo what this process did to `folder` (the run folder Hydra used). A folder other than the recorded
        one is not touched: nothing is known about what it held before."""
        if not folder or os.path.abspath(folder) != self.folder or not os.path.isdir(self.folder):
            return
        hydra = os.path.join(self.folder, ".hydra")
        if self.hydra_files is None:
            shutil.rmtree(hydra, ignore_errors=True)
        elif os.path.isdir(hydra):
            _put_back(hydra, self.hydra_files)
        if job_log:
            _shorten_or_remove(os.path.join(self.folder, job_log), self.log_sizes.get(job_log))
        for created in self.created:  # only if empty: a concurrent job may have written into it meanwhile
            try:
                os.rmdir(created)
            except OSError:
                return


def _file_contents(folder):
    """{name: bytes} of the plain files in `folder`, or None if it does not exist."""
    if not os.path.isdir(folder):
        return None
    contents = {}
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and not os.path.islink(path):
            try:
                with open(path, "rb") as handle:
                    contents[name] = handle.read()
            except OSError:
                pass
    return contents


def _log_sizes(folder):
    if not os.path.isdir(folder):
        return {}
    return {name: os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)
            if name.endswith(".log") and os.path.isfile(os.path.join(folder, name))}


def _put_back(folder, contents):
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        try:
            if name not in contents:
                if os.path.isfile(path) or os.path.islink(path):
                    os.remove(path)
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
