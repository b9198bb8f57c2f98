# Copyright: ocloudview-atp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""direct_argv rewrites the commands Ansible sends into cheaper argvs: this checks the
rewrites and, by running both here, that each one behaves exactly as the original
`/bin/sh -c` command (output, status, stdin). Run by tests/ansible (`cargo test`)."""

import importlib.util
import os
import shutil
import subprocess
import tempfile

import pytest

HERE = os.path.dirname(__file__)
SPEC = importlib.util.spec_from_file_location(
    "atp_grpc", os.path.join(HERE, "../../plugins/plugin_utils/atp_grpc.py")
)
atp_grpc = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(atp_grpc)  # standalone: grpc is not needed for direct_argv

SH = ["/bin/sh", "-c"]
REWRITES = [
    # A module run: the interpreter itself, no shell, no sleep.
    ("/bin/sh -c '/usr/bin/python3 && sleep 0'", ["/usr/bin/python3"]),
    ("/bin/sh -c '/bin/cat && sleep 0'", ["/bin/cat"]),
    ("/bin/sh -c '/bin/false && sleep 0'", ["/bin/false"]),
    ("/bin/sh -c '/bin/echo a,b=c x/y:z && sleep 0'", ["/bin/echo", "a,b=c", "x/y:z"]),
    # Ansible's chmod after a put: a program no shell has built in, found in the PATH.
    ("/bin/sh -c 'chmod u+rwx /t/a/ /t/a/b && sleep 0'", ["chmod", "u+rwx", "/t/a/", "/t/a/b"]),
    ("/bin/sh -c 'mkdir /t/a/c && sleep 0'", ["mkdir", "/t/a/c"]),
    ("/bin/sh -c 'rm -f /t/a/missing && sleep 0'", ["rm", "-f", "/t/a/missing"]),
    # Shell features stay with the shell; only the sleep goes. So do builtins and names
    # not known to be plain programs.
    ("/bin/sh -c 'echo ~ && sleep 0'", SH + ["echo ~"]),
    ("/bin/sh -c 'echo a && sleep 0'", SH + ["echo a"]),
    ("/bin/sh -c 'umask 77 && sleep 0'", SH + ["umask 77"]),
    ("/bin/sh -c 'python3 -V && sleep 0'", SH + ["python3 -V"]),
    ("/bin/sh -c 'chmod u+rwx ~/a && sleep 0'", SH + ["chmod u+rwx ~/a"]),
    ("/bin/sh -c 'chmod=1 && sleep 0'", SH + ["chmod=1"]),
    ("/bin/sh -c 'rm -f -r /t/a/ > /dev/null 2>&1 && sleep 0'", SH + ["rm -f -r /t/a/ > /dev/null 2>&1"]),
    ("/bin/sh -c '( umask 77 && mkdir -p /t/x ) && sleep 0'", SH + ["( umask 77 && mkdir -p /t/x )"]),
    ("/bin/sh -c 'false || echo no && sleep 0'", SH + ["false || echo no"]),
    ("/bin/sh -c 'echo a # b && sleep 0'", SH + ["echo a # b"]),
    ("/bin/sh -c '/bin/echo \"$HOME\" && sleep 0'", SH + ['/bin/echo "$HOME"']),
    ("/bin/sh -c 'X=1 /bin/sh && sleep 0'", SH + ["X=1 /bin/sh"]),
    ("/bin/sh -c '/bin/echo  a && sleep 0'", SH + ["/bin/echo  a"]),
    # Kept whole: the tail ends an escaped blank, an operator, or is all there is.
    ("/bin/sh -c 'echo a\\  && sleep 0'", SH + ["echo a\\  && sleep 0"]),
    ("/bin/sh -c 'echo a | && sleep 0'", SH + ["echo a | && sleep 0"]),
    ("/bin/sh -c ' && sleep 0'", SH + [" && sleep 0"]),
    ("/bin/sh -c 'echo a && sleep 0 && sleep 0x'", SH + ["echo a && sleep 0 && sleep 0x"]),
    ("/bin/sh -c 'echo a && sleep 1'", SH + ["echo a && sleep 1"]),
    # Not Ansible's exact wrapping: run as given.
    ("/bin/sh -c echo a", None),
    ("echo a && sleep 0", None),
    ("/bin/sh -c 'a' 'b'", None),
]


@pytest.mark.parametrize("cmd,want", REWRITES)
def test_rewrites(cmd, want):
    assert atp_grpc.direct_argv(cmd) == want


def run(argv, stdin):
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent-home"}
    p = subprocess.run(argv, check=False, input=stdin, capture_output=True, env=env, cwd="/")
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("cmd", [c for c, want in REWRITES if want is not None])
def test_rewrite_behaves_as_the_shell_would(cmd):
    with tempfile.TemporaryDirectory() as t:
        cmd = cmd.replace("/t/", f"{t}/")
        results = []
        for argv in (["/bin/sh", "-c", cmd], atp_grpc.direct_argv(cmd)):
            shutil.rmtree(t)
            os.makedirs(f"{t}/a")  # the same tree for both: they may make /t/x or remove /t/a
            results.append((run(argv, b"in\n"), sorted(os.listdir(t))))
        assert results[0] == results[1], (cmd, results)
