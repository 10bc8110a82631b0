#!/usr/bin/env python3
"""
Run the trial test suite and end with one summary line that CI can read:
``trial: N passed, N failed, N skipped``.

Usage: python scripts/run_tests.py [trial arguments...] (default: --jobs=2 tests)
"""

import re
import subprocess
import sys


def summarize(output: str) -> tuple:
    """
    Parse trial's closing lines into (passed, failed, skipped, ran).
    """
    ran = re.search(r"^Ran (\d+) tests? in", output, re.M)
    verdict = re.search(r"^(PASSED|FAILED) \(([^)]*)\)", output, re.M)
    if ran is None or verdict is None:
        return None
    counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", verdict.group(2)))
    failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get(
        "unexpectedSuccesses", 0)
    passed = counts.get("successes", 0) + counts.get("expectedFailures", 0)
    return passed, failed, counts.get("skips", 0), int(ran.group(1))


def main(argv: list) -> int:
    args = argv or ["--jobs=2", "tests"]
    command = [sys.executable, "-m", "twisted.trial", *args]
    print("running: " + " ".join(command), flush=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(line)
        lines.append(line)
    code = process.wait()
    summary = summarize("".join(lines[-50:]))
    if summary is None:
        print(f"trial: 0 passed, 1 failed (trial exited {code} without a summary)")
        return code or 1
    passed, failed, skipped, ran = summary
    if ran == 0:
        print("trial: 0 passed, 1 failed (no test ran)")
        return 1
    print(f"trial: {passed} passed, {failed} failed, {skipped} skipped")
    return code if code else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
