"""The measured wall time of a scale, which may run in pieces (stopped and continued): every command that runs
rows appends one line (start, end, --jobs, launcher, outcome) to outputs/reproduce/<scale>/pieces.jsonl, and
the report states their sum."""
import json
import os
import time


def pieces_path(root, scale):
    return os.path.join(root, "outputs", "reproduce", scale.name, "pieces.jsonl")


def record(root, scale, started, jobs, launcher, outcome):
    path = pieces_path(root, scale)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    line = dict(started=started, ended=time.time(), jobs=jobs, launcher=launcher, outcome=outcome)
    with open(path, "a") as handle:
        handle.write(json.dumps(line) + "\n")


def read_pieces(root, scale):
    """The recorded pieces; a line cut short by a kill is skipped."""
    pieces = []
    try:
        with open(pieces_path(root, scale)) as handle:
            for line in handle:
                try:
                    piece = json.loads(line)
                except ValueError:
                    continue
                if isinstance(piece, dict) and all(isinstance(piece.get(k), (int, float)) for k in ("started", "ended")):
                    pieces.append(piece)
    except OSError:
        pass
    return pieces


def sentence(root, scale):
    """One line for the report: the total measured wall time, the pieces and the --jobs they ran with."""
    pieces = read_pieces(root, scale)
    if not pieces:
        return "Wall time: not recorded (the runs were made by another launcher or an earlier version)."
    seconds = sum(piece["ended"] - piece["started"] for piece in pieces)
    jobs = sorted({str(piece.get("jobs")) for piece in pieces})
    return (f"Wall time of the runs, as measured: {seconds / 3600:.2f} hours in {len(pieces)} piece(s) (commands "
            f"stopped and continued), with --jobs {', '.join(jobs)}; the report's landscapes are not included.")
