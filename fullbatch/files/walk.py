"""Folder walks that end: every real folder is entered once, so a symlink loop (`a -> .`) cannot make a walk
over run folders, checkpoints or tables go round for ever. Links to folders are still followed once (results
and checkpoints are often linked in from scratch space), and hidden folders (.hydra, .git, .locks) are listed but
not entered, as with glob's `**`."""
import fnmatch
import os


def walk(root):
    """(folder, names of its subfolders, names of its files) for `root` and every folder below it, in sorted order.
    Unreadable folders and dangling or looping links are passed over."""
    seen = set()
    for folder, subfolders, files in os.walk(os.path.expanduser(root), followlinks=True):
        try:
            status = os.stat(folder)
        except OSError:
            subfolders[:] = []
            continue
        if (status.st_dev, status.st_ino) in seen:
            subfolders[:] = []
            continue
        seen.add((status.st_dev, status.st_ino))
        listed = sorted(subfolders)
        subfolders[:] = [name for name in listed if not name.startswith(".")]
        yield folder, listed, sorted(files)


def find_files(root, pattern, parent=None):
    """Paths of the files below `root` whose name matches `pattern` (fnmatch), in folders named `parent` if given."""
    return [os.path.join(folder, name) for folder, _, files in walk(root)
            if parent is None or os.path.basename(folder) == parent
            for name in fnmatch.filter(files, pattern)]


def find_folders(root, name):
    """Paths of the folders called `name` below `root`, hidden ones (.hydra) included."""
    return [os.path.join(folder, name) for folder, subfolders, _ in walk(root) if name in subfolders]
