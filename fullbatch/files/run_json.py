"""The one reader of a run's JSON files: summaries, checkpoint markers and tracker state.

They lie in folders that other people and killed processes write to, so a file is read only if it is a small
regular file (a pipe would block, a link to /dev/zero would never end), and every way it can be damaged is one
`DamagedRunFile` whose message names the file and says what is wrong with it."""
import json

from fullbatch.files.atomic import UnsafeFile, read_regular

RUN_FILE_LIMIT = 64 << 20  # far above any summary; a marker is read with 64 KiB


class DamagedRunFile(ValueError):
    """A run file that cannot be used; `reason` is the message without the file's name."""

    def __init__(self, path, reason):
        super().__init__(f"{path} {reason}")
        self.path, self.reason = path, reason


def read_json_object(path, limit=RUN_FILE_LIMIT):
    """The JSON object (a dict) in the file at `path`; raises DamagedRunFile for anything else, a missing file
    included (callers for whom a missing file is normal check for it first)."""
    try:
        content = json.loads(read_regular(path, limit))
    except UnsafeFile as error:
        raise DamagedRunFile(path, error.reason) from None
    except UnicodeDecodeError:
        raise DamagedRunFile(path, "is not text (a binary file?)") from None
    except OSError as error:
        raise DamagedRunFile(path, f"cannot be read ({error.strerror or error})") from None
    except (ValueError, RecursionError) as error:  # RecursionError: brackets nested thousands deep
        raise DamagedRunFile(path, f"is not valid JSON ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise DamagedRunFile(path, f"holds a JSON {type(content).__name__}, not an object")
    return content
