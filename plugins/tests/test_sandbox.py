"""The escape suite: tenant code in the Monty sandbox reaches nothing but its host functions."""

from __future__ import annotations

import asyncio
import os

import pytest

from plugins.sandbox import SandboxError, run_code

ESCAPES = {
    "read a file": "open('/etc/passwd').read()",
    "write a file": "open('/tmp/cadence-escape', 'w').write('x')",
    "list a directory": "import os\nos.listdir('/')",
    "environment": "import os\nos.environ['DATABASE_URL']",
    "getenv": "import os\nos.getenv('DATABASE_URL')",
    "subprocess": "import subprocess\nsubprocess.run(['id'])",
    "os.system": "import os\nos.system('id')",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', 5432))",
    "urllib": "import urllib.request\nurllib.request.urlopen('http://169.254.169.254/')",
    "import ctypes": "import ctypes",
    "dunder import": "__import__('os').system('id')",
    "builtins": "__builtins__.__dict__['open']",
    "subclasses": "().__class__.__base__.__subclasses__()",
    "frame globals": "def f():\n    return f.__globals__\nf()",
    "code object": "(lambda: 0).__code__",
    "eval": "eval(\"open('/etc/passwd').read()\")",
    "exec": "exec('import socket')",
    "compile": "compile('1', 'x', 'eval')",
    "sys modules": "import sys\nsys.modules",
    "pathlib": "from pathlib import Path\nPath('/etc/passwd').read_text()",
}
LIMITS = {
    "deep recursion": ("def f(n):\n    return f(n + 1)\nf(0)", "sandbox_recursion"),
    "endless loop": ("while True:\n    pass", "sandbox_timeout"),
    "huge allocation": ("x = [0] * (10 ** 9)", "sandbox_memory"),
    "doubling string": ("s = 'a'\nwhile True:\n    s = s + s", "sandbox_memory"),
    "sleep": ("import time\ntime.sleep(30)", None),
}


def run(source: str, **kwargs):
    return asyncio.run(run_code(source, inputs=kwargs.pop("inputs", {}), **kwargs))


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_no_escape(name):
    with pytest.raises(SandboxError):
        run(ESCAPES[name])
    assert not os.path.exists("/tmp/cadence-escape")


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_a_breached_cap_fails_the_call_not_the_worker(name):
    source, code = LIMITS[name]
    with pytest.raises(SandboxError) as caught:
        run(source)
    if code:
        assert caught.value.code == code, caught.value.message
    # The pool still serves the next call.
    assert run("1 + 1")["result"] == 2


def test_inputs_host_functions_and_output():
    calls = []

    async def call_tool(name, args):
        calls.append((name, args))
        return {"temp": 21}

    ran = run(
        "r = call_tool('forecast', {'city': args['city']})\nprint('asked')\n{'city': args['city'], 't': r['temp']}",
        inputs={"args": {"city": "Lyon"}},
        host_functions={"call_tool": call_tool},
    )
    assert ran == {"result": {"city": "Lyon", "t": 21}, "output": "asked\n"}
    assert calls == [("forecast", {"city": "Lyon"})]


def test_the_worker_holds_no_environment_and_no_database_socket(monkeypatch):
    from plugins import sandbox

    monkeypatch.setenv("CADENCE_CANARY", "do-not-leak")
    run("1")
    [pid] = sandbox.worker_pids()
    assert pid != os.getpid()
    environ = open(f"/proc/{pid}/environ", "rb").read()
    assert b"DATABASE_URL" not in environ and b"CADENCE_CANARY" not in environ
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        assert "5432" not in target and ".s.PGSQL" not in target


def test_a_result_that_is_not_json_is_refused():
    with pytest.raises(SandboxError) as caught:
        run("{1, 2}")
    assert caught.value.code == "sandbox_result"
