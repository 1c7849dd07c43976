"""The recorder page's own SHA-256 (dvqa/serve/static/record.html), run by Node against Python's hashlib.

The page hashes each chunk as it sends it, so Stop does not wait for the whole recording to be read and
hashed again; the server refuses an `end` whose digest is not the recording's, so a wrong digest would
lose the recording. The class is taken from the page itself, so this checks what browsers run."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from pathlib import Path

from helpers import tool

PAGE = Path(__file__).resolve().parent.parent / "dvqa" / "serve" / "static" / "record.html"


def test_the_pages_incremental_sha256_equals_hashlib_whatever_the_chunking(tmp_path: Path) -> None:
    node = tool("node")
    text = PAGE.read_text()
    code = text[text.index("const SHA256_K"):text.index("const state = {")]
    rng = random.Random(30)
    cases = []
    for size in (0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 4095, 100_003, 1_000_003):
        data = bytes(rng.getrandbits(8) for _ in range(size)) if size < 5000 else rng.randbytes(size)
        for piece in (1, 7, 64, 1000, 65_536):
            if size > 100_000 and piece < 1000:
                continue
            cases.append({"hex": data.hex(), "piece": piece, "want": hashlib.sha256(data).hexdigest()})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = code + """
const cases = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
const got = cases.map((c) => {
  const data = Uint8Array.from(Buffer.from(c.hex, "hex"));
  const h = new Sha256();
  for (let i = 0; i < data.length; i += c.piece) h.update(data.subarray(i, i + c.piece));
  return h.hex();
});
console.log(JSON.stringify(got));
"""
    (tmp_path / "check.js").write_text(script)
    done = subprocess.run([node, str(tmp_path / "check.js"), str(tmp_path / "cases.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert len(got) == len(cases) > 50
    assert got == [c["want"] for c in cases]
