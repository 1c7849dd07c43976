"""Issue 27, hostile inputs around live conversion and named files: a followed recording renamed over,
truncated, rewritten or deleted; a FIFO where a file was expected; signals at start-up and in the stream
check; closed stdin; a NUL in an argument. Each is a refusal in one sentence, or correct behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import RECORDED, ROOT, dvqa, wait_for_handler, wait_until_read

RECORDING = RECORDED / "vp8_opus.webm"  # a browser recording in 7 clusters
FIRST_CLUSTERS = 77166  # where its 4th cluster starts: the first three are a clean, shorter recording
OTHER = RECORDED / "h264_opus.webm"  # another recording, to put in its place


def _follow(growing: Path, out: Path, log: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dvqa", "convert", "--follow", str(growing), "-o", str(out),
                             "--audit", str(log), "--format", "json", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _started(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path, Path, Path]:
    """dvqa following a recording whose first three clusters have arrived, waiting for more."""
    growing, out, log = tmp_path / "upload.webm", tmp_path / "out" / "live.dcm", tmp_path / "audit.jsonl"
    out.parent.mkdir()
    growing.write_bytes(RECORDING.read_bytes()[:FIRST_CLUSTERS])
    process = _follow(growing, out, log, *extra)
    wait_until_read(process, growing, FIRST_CLUSTERS)
    return process, growing, out, log


def _refused(process: subprocess.Popen, out: Path, log: Path, words: str) -> None:
    stdout, stderr = _finish(process, 240)
    assert process.returncode == 3, stderr
    assert words in stderr and "nothing was written" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and stdout == ""
    assert list(out.parent.iterdir()) == []  # nothing at the output, no temporary folder
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["outcome"] == "failure" and words in entry["message"]


def _partial(process: subprocess.Popen, out: Path, log: Path, words: str) -> None:
    stdout, stderr = _finish(process, 240)
    assert process.returncode == 0, stderr
    record = json.loads(stdout)
    assert words in record["partial"] and f"{FIRST_CLUSTERS} bytes read before" in record["partial"]
    assert [f["code"] for f in record["findings"]] == ["convert.partial-stream"]
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["partial"] == record["partial"] and entry["input"]["size"] == FIRST_CLUSTERS
    assert dvqa("validate", str(out)).returncode == 0


@pytest.mark.requirement("DVQA-CONV-008")
@pytest.mark.parametrize("keep_partial", [False, True], ids=["refused", "keep-partial"])
def test_a_followed_file_renamed_over_is_not_archived_as_the_recording(tmp_path: Path, keep_partial: bool) -> None:
    process, growing, out, log = _started(tmp_path, *(["--keep-partial"] if keep_partial else []))
    other = tmp_path / "upload.webm.new"
    other.write_bytes(OTHER.read_bytes())
    os.replace(other, growing)  # another recording now at the name, complete with its marker
    growing.with_name(growing.name + ".done").write_text("")
    if keep_partial:
        _partial(process, out, log, "replaced by another file")
    else:
        _refused(process, out, log, "replaced by another file")


@pytest.mark.requirement("DVQA-CONV-008")
@pytest.mark.parametrize("keep_partial", [False, True], ids=["refused", "keep-partial"])
def test_a_followed_file_deleted_ends_the_conversion_at_once(tmp_path: Path, keep_partial: bool) -> None:
    process, growing, out, log = _started(tmp_path, "--idle", "30", *(["--keep-partial"] if keep_partial else []))
    growing.unlink()  # an upload cancelled: no marker will come, and --idle would wait 30 s
    if keep_partial:
        _partial(process, out, log, "deleted or renamed away")
    else:
        _refused(process, out, log, "deleted or renamed away")


@pytest.mark.requirement("DVQA-CONV-008")
@pytest.mark.parametrize("keep_partial", [False, True], ids=["refused", "keep-partial"])
def test_a_followed_file_truncated_is_not_archived_as_complete(tmp_path: Path, keep_partial: bool) -> None:
    process, growing, out, log = _started(tmp_path, "--idle", "30", *(["--keep-partial"] if keep_partial else []))
    os.truncate(growing, 1000)  # a recorder that restarted into the same file
    if keep_partial:
        _partial(process, out, log, "truncated to 1000 bytes")
    else:
        _refused(process, out, log, "truncated to 1000 bytes")


@pytest.mark.requirement("DVQA-CONV-008")
def test_bytes_rewritten_under_the_reader_are_refused_even_with_keep_partial(tmp_path: Path) -> None:
    """The size never shrinks and the inode stays: only the bytes already read show it (checked at the end)."""
    process, growing, out, log = _started(tmp_path, "--keep-partial")
    other = OTHER.read_bytes()
    with open(growing, "r+b") as rewrite:  # another recording written over this one, then its rest appended
        rewrite.write(other)
    growing.with_name(growing.name + ".done").write_text("")
    _refused(process, out, log, "rewritten while it was read")


def test_follow_on_a_fifo_says_what_it_is_and_how_to_read_it(tmp_path: Path) -> None:
    fifo = tmp_path / "upload.webm"
    os.mkfifo(fifo)
    proc = dvqa("convert", "--follow", str(fifo), "-o", str(tmp_path / "x.dcm"))
    assert proc.returncode == 2 and "is a FIFO (named pipe)" in proc.stderr and "dvqa convert - " in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.dcm").exists()


def test_closed_stdin_is_one_sentence(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvqa", "convert", "-", "-o", str(tmp_path / "x.dcm"), "--audit",
                           str(tmp_path / "audit.jsonl")], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          cwd=ROOT, timeout=120, preexec_fn=lambda: os.close(0))
    assert proc.returncode == 2 and "stdin is closed" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.dcm").exists()


@pytest.mark.requirement("DVQA-CONV-008", "DVQA-OUT-001")
def test_a_signal_in_the_first_moments_of_a_conversion_is_said_and_recorded(tmp_path: Path) -> None:
    """SIGTERM as soon as dvqa handles it - while it still imports FFmpeg and NumPy - used to end it silently
    with no audit record; it is held until the attempt starts, then ends it like any interruption."""
    growing, out, log = tmp_path / "upload.webm", tmp_path / "out" / "live.dcm", tmp_path / "audit.jsonl"
    out.parent.mkdir()
    growing.write_bytes(RECORDING.read_bytes()[:FIRST_CLUSTERS])  # no marker: still recording
    process = _follow(growing, out, log, "--idle", "30")
    wait_for_handler(process, 15)
    process.send_signal(15)
    _, stderr = _finish(process, 240)
    assert process.returncode == 143 and "interrupted (SIGTERM)" in stderr and "audit log records" in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert list(out.parent.iterdir()) == []
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["outcome"] == "failure" and "interrupted by SIGTERM" in entry["message"]


def _limited(*args: str) -> subprocess.CompletedProcess:
    """dvqa with its address space capped at 4 GiB: reading /dev/zero without end fails fast, not the machine."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    return subprocess.run([sys.executable, "-m", "dvqa", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, preexec_fn=cap)


# a DICOM metadata file is read only up to its Pixel Data, so its size is not capped (an earlier video of the
# study may be the source); DICOM JSON is read whole, so it is
@pytest.mark.parametrize("option, named", [("--metadata-json", "fifo"), ("--metadata-json", "/dev/zero"),
                                           ("--metadata-json", "oversized"), ("--metadata-from", "fifo"),
                                           ("--metadata-from", "/dev/zero")])
def test_metadata_files_are_regular_files_read_to_a_stated_limit(tmp_path: Path, option: str, named: str) -> None:
    if named == "fifo":
        path = tmp_path / "meta.json"
        os.mkfifo(path)  # nobody writes: a plain open() waits forever
        words = "is a FIFO (named pipe), not a regular file"
    elif named == "/dev/zero":
        path, words = Path("/dev/zero"), "is a character device, not a regular file"
    else:
        path = tmp_path / "meta.json"
        with open(path, "wb") as sparse:
            sparse.truncate(17 << 20)
        words = "over dvqa's limit of 16 MiB"
    log = tmp_path / "audit.jsonl"
    proc = _limited("convert", str(RECORDING), "-o", str(tmp_path / "x.dcm"), option, str(path), "--audit", str(log))
    assert proc.returncode == 3 and words in proc.stderr and str(path) in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.dcm").exists()
    assert json.loads(log.read_text().splitlines()[-1])["outcome"] == "failure"


@pytest.fixture(scope="module")
def video_dicom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dicom") / "video.dcm"
    assert dvqa("convert", str(RECORDING), "-o", str(path), "--no-quality").returncode == 0
    return path


def _finish(process: subprocess.Popen, timeout_s: float) -> tuple[str, str]:
    """communicate(), but a process still running after `timeout_s` is killed (a hang fails the test and
    leaves nothing behind)."""
    try:
        return process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"still running after {timeout_s} s: killed") from None


def _python(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)


SWAP = """
import os, sys
from pathlib import Path
from dvqa.dicom import dicomread
dcm, fifo, where = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
checked = getattr(dicomread, where)
def then_swap(path):
    found = checked(path)
    os.replace(fifo, dcm)  # the named file becomes a FIFO right after it was checked
    return found
setattr(dicomread, where, then_swap)
from dvqa.cli.main import main
main(["validate", "--format", "json", str(dcm)])
"""


@pytest.mark.parametrize("where", ["regular_file", "read_header"], ids=["after-the-name-check", "between-layers"])
def test_validate_does_not_hang_on_a_file_swapped_for_a_fifo(tmp_path: Path, video_dicom: Path, where: str) -> None:
    """The swap is made at the worst moment (after the check of the name; after the header layer read the
    file, before the stream layer opens it again): the descriptor opened is what is checked."""
    dcm, fifo = tmp_path / "video.dcm", tmp_path / "fifo"
    dcm.write_bytes(video_dicom.read_bytes())
    os.mkfifo(fifo)
    process = _python(SWAP, str(dcm), str(fifo), where)
    stdout, stderr = _finish(process, 120)  # the old code waited here for a writer, forever
    assert process.returncode == 1 and "Traceback" not in stderr, stderr
    messages = [f["message"] for r in json.loads(stdout)["files"] for f in r["findings"]]
    assert any("not a regular file" in m for m in messages), messages


SLOW_STREAM = """
import sys, time
from dvqa.dicom import dicomfile
real = dicomfile.read_chunks
def slow(path, size=dicomfile.COPY_CHUNK, start=None):
    print("reading the stream", file=sys.stderr, flush=True)
    for number, piece in real(path, size, start):
        for at in range(0, len(piece), 256):
            time.sleep(0.5)  # a stream on slow storage: minutes to read
            yield number, piece[at:at + 256]
dicomfile.read_chunks = slow
from dvqa.cli.main import main
main(["validate", sys.argv[1]])
"""


@pytest.mark.parametrize("signum", [2, 15], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_stream_check_ends_validate_at_once(video_dicom: Path, signum: int) -> None:
    process = _python(SLOW_STREAM, str(video_dicom))
    assert process.stderr is not None and process.stderr.readline() == "reading the stream\n"  # readiness
    process.send_signal(signum)
    stdout, stderr = _finish(process, 60)  # the old code held the signal to the end of the stream
    name = {2: "SIGINT", 15: "SIGTERM"}[signum]
    assert process.returncode == 128 + signum and stderr.strip() == f"dvqa: interrupted ({name}).", stderr


@pytest.mark.parametrize("args", [["convert", "rec\0ording.webm", "-o", "x.dcm"], ["validate", "a\0b.dcm"]],
                         ids=["convert", "validate"])
def test_a_nul_in_an_argument_is_one_sentence(args: list[str]) -> None:
    """Only a program can pass a NUL (a shell cannot): dvqa called from Python, as a service might."""
    script = f"from dvqa.cli.main import main; main({args!r})"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "holds a NUL character" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
