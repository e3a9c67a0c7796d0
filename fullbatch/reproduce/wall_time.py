"""The measured wall time of a scale, which may run in pieces (stopped and continued): every command that runs
rows appends a line to outputs/reproduce/<scale>/pieces.jsonl when it starts and another when it ends (start,
end, --jobs, launcher, outcome), and the report states their sum. While it runs it touches a heartbeat file
every HEARTBEAT seconds, so a piece killed without a signal (no end line) still counts, up to its last beat."""
import json
import logging
import math
import os
import threading
import time
import uuid
from contextlib import contextmanager

log = logging.getLogger("fullbatch")
HEARTBEAT = 30.0  # seconds between beats: the most a killed piece's time can be undercounted by


def pieces_path(root, scale):
    return os.path.join(root, "outputs", "reproduce", scale.name, "pieces.jsonl")


def heartbeat_path(root, scale, piece):
    return os.path.join(os.path.dirname(pieces_path(root, scale)), f"piece-{piece}.alive")


def _append(root, scale, line):
    """Append one line; a line cut short by an earlier kill is ended first, so it cannot swallow this one.
    False (with a warning) where the disk refuses: the wall time is then undercounted, the runs go on."""
    path = pieces_path(root, scale)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a+") as handle:
            handle.seek(0, os.SEEK_END)
            cut_short = handle.tell() > 0 and _last_character(handle) != "\n"
            handle.write(("\n" if cut_short else "") + json.dumps(line) + "\n")
        return True
    except OSError as error:
        log.warning(f"the wall time of this piece is not recorded in {path}: {error}")
        return False


def _last_character(handle):
    handle.seek(handle.tell() - 1)
    return handle.read(1)


def record(root, scale, started, jobs, launcher, outcome, piece=None):
    """The line of a piece that ended (normally or by a signal)."""
    line = {"started": started, "ended": time.time(), "jobs": jobs, "launcher": launcher, "outcome": outcome}
    return _append(root, scale, dict(line, piece=piece) if piece else line)


@contextmanager
def piece(root, scale, jobs, launcher):
    """Record one piece: its start line and heartbeat now, its end line on leaving with the `.outcome` set on the
    yielded object. An outcome of None (refused before anything ran) records nothing: a record this piece
    created is removed again, and an existing one gets a 'refused' line that the report skips."""
    path = pieces_path(root, scale)
    created = [folder for folder in _parents(os.path.dirname(path), root) if not os.path.isdir(folder)]
    state = _Piece(uuid.uuid4().hex[:12], time.time())
    start = {"piece": state.id, "started": state.started, "jobs": jobs, "launcher": launcher}
    existed = os.path.exists(path)
    _append(root, scale, start)
    beat = heartbeat_path(root, scale, state.id)
    stop = threading.Event()

    def beating():
        while True:
            try:
                with open(beat, "w") as handle:
                    handle.write(f"{time.time()}\n")
            except OSError:  # a full disk: the time is undercounted, the runs go on
                pass
            if stop.wait(HEARTBEAT):
                return

    thread = threading.Thread(target=beating, name="fullbatch-piece-heartbeat", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        with _signals_held_here():  # a second Ctrl-C or SIGTERM now would leave the piece looking killed
            stop.set()
            thread.join()
            if state.outcome is None and not existed and _only_line(path, start):
                _remove(beat)
                _remove(path)
                for folder in reversed(created):
                    try:
                        os.rmdir(folder)  # only if empty: a refused command leaves what it found
                    except OSError:
                        break
            elif record(root, scale, state.started, jobs, launcher, state.outcome or "refused", piece=state.id):
                _remove(beat)  # kept where the end line could not be written: the beat still counts the piece


def _signals_held_here():
    """signals_held in the main thread (the only one that can set handlers); elsewhere nothing to hold."""
    from contextlib import nullcontext

    from fullbatch.run.interruption import signals_held

    return signals_held() if threading.current_thread() is threading.main_thread() else nullcontext()


def _only_line(path, line):
    """Whether the record holds this one line and nothing else (another command may have started since)."""
    try:
        with open(path) as handle:
            return handle.read() == json.dumps(line) + "\n"
    except OSError:
        return False


def _parents(folder, root):
    """The folders from just below `root` down to `folder`, outermost first."""
    chain = []
    while os.path.abspath(folder) != os.path.abspath(root) and folder not in chain:
        chain.append(folder)
        folder = os.path.dirname(folder)
    return chain[::-1]


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


class _Piece:
    def __init__(self, piece_id, started):
        self.id, self.started, self.outcome = piece_id, started, None


def read_pieces(root, scale):
    """Every piece with a start and an end: the recorded end, or for a piece killed without a signal the time of
    its last heartbeat (outcome 'killed'). A line cut short by a kill, a piece refused before anything ran, and
    a start line with neither an end line nor a heartbeat are left out."""
    ended, started = [], {}
    try:
        with open(pieces_path(root, scale)) as handle:
            for line in handle:
                try:
                    piece = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(piece, dict) or not isinstance(piece.get("started"), (int, float)):
                    continue
                if isinstance(piece.get("ended"), (int, float)):
                    ended.append(piece)
                elif isinstance(piece.get("piece"), str):
                    started[piece["piece"]] = piece
    except OSError:
        pass
    closed = {piece.get("piece") for piece in ended}
    for piece_id, piece in started.items():
        beat = None if piece_id in closed else last_beat(heartbeat_path(root, scale, piece_id))
        if beat is not None:
            running = time.time() - beat < 2 * HEARTBEAT
            ended.append(dict(piece, ended=max(beat, piece["started"]), outcome="running" if running else "killed"))
    pieces = [piece for piece in ended if piece.get("outcome") != "refused"]
    return sorted(pieces, key=lambda piece: piece["started"])


def last_beat(path):
    """The time a heartbeat file says it was written, never later than its modification time (a copy that did
    not keep times cannot stretch a piece); its modification time where the text is damaged; None if absent."""
    try:
        written = os.path.getmtime(path)
        with open(path) as handle:
            said = float(handle.read(64))
    except OSError:
        return None
    except ValueError:
        return written
    return min(said, written) if math.isfinite(said) else written


def sentence(root, scale):
    """One line for the report: the total measured wall time, the pieces and the --jobs they ran with."""
    pieces = read_pieces(root, scale)
    if not pieces:
        return "Wall time: not recorded (the runs were made by another launcher or an earlier version)."
    seconds = sum(piece["ended"] - piece["started"] for piece in pieces)
    jobs = sorted({str(piece.get("jobs")) for piece in pieces})
    killed = sum(piece.get("outcome") == "killed" for piece in pieces)
    running = sum(piece.get("outcome") == "running" for piece in pieces)
    text = (f"Wall time of the runs, as measured: {seconds / 3600:.2f} hours in {len(pieces)} piece(s) (commands "
            f"stopped and continued), with --jobs {', '.join(jobs)}; the report's landscapes are not included.")
    if killed:
        text += (f" {killed} of the pieces {'was' if killed == 1 else 'were'} killed without a signal: counted up to "
                 f"{'its' if killed == 1 else 'their'} last heartbeat (written every {HEARTBEAT:.0f} s).")
    if running:
        text += f" {running} of the pieces {'is' if running == 1 else 'are'} still running: counted up to now."
    return text
