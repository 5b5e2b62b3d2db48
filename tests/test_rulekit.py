"""histaug.rulekit.run_rule: the rule script's log, exit codes, and the fast exit that skips the interpreter's teardown."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import atexit, sys
    from types import SimpleNamespace
    from histaug.rulekit import run_rule
    from histaug.utils import PipelineError

    mode, log_path, out_path, marker = sys.argv[1:5]
    atexit.register(lambda: open(marker, "w").write("exit handler ran"))
    smk = SimpleNamespace(log=[log_path], rule="demo_rule", threads=1)

    def main(smk, log):
        print("to stdout", flush=False)
        log.info("working on %s", out_path)
        if mode == "bad-input":
            raise PipelineError("config key demo.x is wrong: set it to 3")
        if mode == "crash":
            raise RuntimeError("boom")
        with open(out_path, "w") as fh:
            fh.write("result")

    run_rule(smk, main)
    print("never reached")
    """
)


def _run(tmp_path, mode):
    script = tmp_path / "rule.py"
    script.write_text(SCRIPT)
    log, out, marker = tmp_path / "rule.log", tmp_path / "out.txt", tmp_path / "marker.txt"
    proc = subprocess.run([sys.executable, str(script), mode, str(log), str(out), str(marker)],
                          capture_output=True, text=True, timeout=120)
    return proc, log.read_text(), out, marker


def test_success_exits_zero_with_log_output_and_exit_handlers(tmp_path):
    proc, log, out, marker = _run(tmp_path, "ok")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == "result"
    assert "[demo_rule] INFO working on" in log and "done in" in log
    assert proc.stdout == "to stdout\n"  # flushed before the fast exit; nothing after run_rule runs
    assert marker.read_text() == "exit handler ran"


@pytest.mark.parametrize("mode, message", [("bad-input", "config key demo.x is wrong: set it to 3"),
                                           ("crash", "RuntimeError: boom")])
def test_failures_exit_one_with_the_reason_in_log_and_console(tmp_path, mode, message):
    proc, log, out, marker = _run(tmp_path, mode)
    assert proc.returncode == 1
    assert message in log and message in proc.stderr
    assert "done in" not in log and not out.exists()
    assert marker.read_text() == "exit handler ran"
